"""Scheduling semantics end to end, over real HTTP on the shared local stack: a one-time job
runs once at its second and then has no next run; a backfill runs a past range's occurrences
as BACKFILL runs (a dry run first) and leaves alone what already ran."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from e2e.api_client import (
    HTTP_TIMEOUT,
    MAX_START_LAG_MS,
    TERMINAL,
    create_job,
    list_runs,
    wait_for,
)
from e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e


def get_job(stack: LocalStack, job_id: str) -> dict[str, Any]:
    response = requests.get(
        f"{stack.url}/jobs/{job_id}", headers=stack.headers("alice"), timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def ended_runs(stack: LocalStack, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = list_runs(stack, job_id).json()["items"]
    return [run for run in items if run["status"] in TERMINAL]


def test_a_one_time_job_runs_once_on_time_then_has_no_next_run(local_stack: LocalStack) -> None:
    # Given a job for one time, 20 s from now
    at = (datetime.now(UTC) + timedelta(seconds=20)).replace(microsecond=0)
    job = create_job(local_stack, schedule=f"at({at:%Y-%m-%dT%H:%M:%S})", script="print('once')")
    assert datetime.fromisoformat(job["next_run_at"]) == at

    # When its second passes, Then it ran once, on time, and the job has no next run
    run = wait_for(
        "the one-time run",
        lambda: done[0] if (done := ended_runs(local_stack, job["job_id"])) else None,
        60,
        local_stack,
    )
    assert (run["status"], run["trigger"]) == ("SUCCEEDED", "SCHEDULE")
    assert run["execution_time"] == int(at.timestamp())
    assert 0 <= run["start_lag_ms"] <= MAX_START_LAG_MS, run
    time.sleep(3)  # a tick or two more: nothing else is scheduled
    assert len(list_runs(local_stack, job["job_id"]).json()["items"]) == 1
    assert get_job(local_stack, job["job_id"])["next_run_at"] is None


def test_a_backfill_runs_a_past_ranges_occurrences_once(local_stack: LocalStack) -> None:
    job = create_job(local_stack, schedule="*/20 * * * *", script="print('filled')")
    end = datetime.now(UTC) - timedelta(minutes=1)
    window = {"from": (end - timedelta(hours=1)).isoformat(), "to": end.isoformat()}

    def backfill(body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            f"{local_stack.url}/jobs/{job['job_id']}/backfill",
            json=body,
            headers=local_stack.headers("alice"),
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    # A dry run lists the hour's three occurrences; the backfill runs them
    assert [o["result"] for o in backfill(window | {"dry_run": True})["occurrences"]] == [
        "would_create"
    ] * 3
    created = backfill(window | {"reason": "e2e"})["occurrences"]
    assert [o["result"] for o in created] == ["created"] * 3
    runs = wait_for(
        "three backfilled runs ending",
        lambda: done if len(done := ended_runs(local_stack, job["job_id"])) == 3 else None,
        60,
        local_stack,
    )
    assert {(r["trigger"], r["status"], r["reason"]) for r in runs} == {
        ("BACKFILL", "SUCCEEDED", "e2e")
    }
    assert {r["key"] for r in runs} == {o["run_key"] for o in created}

    # And doing it again changes nothing
    assert {o["result"] for o in backfill(window)["occurrences"]} == {"exists"}
    assert get_job(local_stack, job["job_id"])["schedule"] == "*/20 * * * *"
