"""Overlap policies and cancel, end to end on the shared local stack over real HTTP: the runner
applies the overlap policy at each run's second through the job's lock in S3 (moto), and stops a
cancelled script through its cancel object, at the production poll interval (10 s) and kill
grace (5 s)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from e2e.api_client import (
    HTTP_TIMEOUT,
    create_job,
    get_run,
    start_run,
    wait_for,
    wait_for_end,
)
from e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e

# The runner's production cancel poll and kill grace: a cancelled script gets SIGTERM within
# 10 s, SIGKILL 5 s later; plus slack for the report's trip back.
CANCEL_BOUND = 10 + 5 + 5


def slow(seconds: int) -> str:
    return (
        "import time\n"
        "print('started', flush=True)\n"
        f"time.sleep({seconds})\n"
        "print('done', flush=True)\n"
    )


def wait_for_status(
    stack: LocalStack, job_id: str, key: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run = get_run(stack, job_id, key)
        return run if run["status"] == status else None

    return wait_for(f"run {key} {status}", probe, timeout, stack)


def cancel(stack: LocalStack, job_id: str, key: str, reason: str | None = None) -> Any:
    return requests.post(
        f"{stack.url}/jobs/{job_id}/runs/{key}/cancel",
        json={"reason": reason} if reason else None,
        headers=stack.headers("alice"),
        timeout=HTTP_TIMEOUT,
    )


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def test_cancel_stops_a_running_script_and_its_pack_mates_keep_running(
    local_stack: LocalStack,
) -> None:
    # Given three runs of one job started together in one task (a backfill packs them)
    job = create_job(local_stack, schedule="*/20 * * * *", script=slow(20))
    end = datetime.now(UTC) - timedelta(minutes=1)
    body = {"from": (end - timedelta(hours=1)).isoformat(), "to": end.isoformat()}
    response = requests.post(
        f"{local_stack.url}/jobs/{job['job_id']}/backfill",
        json=body,
        headers=local_stack.headers("alice"),
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    keys = [o["run_key"] for o in response.json()["occurrences"]]
    assert len(keys) == 3
    running = [wait_for_status(local_stack, job["job_id"], key, "RUNNING") for key in keys]
    assert len({run["task_id"] for run in running}) == 1

    # When its owner cancels the middle one
    asked = time.time()
    answer = cancel(local_stack, job["job_id"], keys[1], "wrong input")

    # Then it is CANCELLED at once, and its script is stopped within the bound
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "CANCELLED"

    def stopped() -> dict[str, Any] | None:
        run = get_run(local_stack, job["job_id"], keys[1])
        return run if run.get("duration_ms") is not None else None

    cancelled = wait_for("the cancelled script's report", stopped, CANCEL_BOUND, local_stack)
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["error"] == "cancelled by its owner: wrong input"
    assert cancelled["exit_code"] == -15  # SIGTERM
    assert "started" in cancelled["output_tail"]
    assert "done" not in cancelled["output_tail"]
    ran_for = cancelled["duration_ms"] / 1000
    assert at(cancelled["started_at"]).timestamp() + ran_for <= asked + 15 + 1

    # And the other two runs of the same task ran to their end
    for key in (keys[0], keys[2]):
        mate = wait_for_end(local_stack, job["job_id"], key, timeout=40)
        assert mate["status"] == "SUCCEEDED", mate
        assert "done" in mate["output_tail"]

    # And a second cancel answers the run again; an ended run cannot be cancelled
    assert cancel(local_stack, job["job_id"], keys[1]).json()["status"] == "CANCELLED"
    assert cancel(local_stack, job["job_id"], keys[0]).status_code == 409


def test_allow_runs_a_run_beside_the_previous_one(local_stack: LocalStack) -> None:
    # Given an ALLOW job (the default) whose run is running
    job = create_job(local_stack, script=slow(6))
    assert job["concurrency_policy"] == "ALLOW"
    first = start_run(local_stack, job["job_id"])
    wait_for_status(local_stack, job["job_id"], first, "RUNNING")

    # When another run of it comes to its second, then both run, side by side
    second = start_run(local_stack, job["job_id"])
    one = wait_for_end(local_stack, job["job_id"], first, timeout=30)
    two = wait_for_end(local_stack, job["job_id"], second, timeout=30)
    assert (one["status"], two["status"]) == ("SUCCEEDED", "SUCCEEDED")
    assert at(two["started_at"]) < at(one["finished_at"])


def test_forbid_skips_a_run_while_the_previous_one_runs(local_stack: LocalStack) -> None:
    # Given a FORBID job whose run is running
    job = create_job(local_stack, concurrency_policy="FORBID", script=slow(8))
    first = start_run(local_stack, job["job_id"])
    wait_for_status(local_stack, job["job_id"], first, "RUNNING")

    # When another run of it comes to its second
    second = start_run(local_stack, job["job_id"])

    # Then that one is SKIPPED, naming the running one, and the first runs to its end
    skipped = wait_for_end(local_stack, job["job_id"], second, timeout=30)
    assert skipped["status"] == "SKIPPED"
    assert first in skipped["error"]
    assert skipped["started_at"] is None
    assert wait_for_end(local_stack, job["job_id"], first, timeout=30)["status"] == "SUCCEEDED"

    # And with the first ended, a next run runs
    third = start_run(local_stack, job["job_id"])
    assert wait_for_end(local_stack, job["job_id"], third, timeout=30)["status"] == "SUCCEEDED"


def test_buffer_one_starts_the_next_run_when_the_previous_ends_and_skips_a_third(
    local_stack: LocalStack,
) -> None:
    # Given a BUFFER_ONE job whose run is running
    job = create_job(local_stack, concurrency_policy="BUFFER_ONE", script=slow(8))
    first = start_run(local_stack, job["job_id"])
    wait_for_status(local_stack, job["job_id"], first, "RUNNING")

    # When two more runs come to their seconds meanwhile
    second = start_run(local_stack, job["job_id"])
    wait_for_status(local_stack, job["job_id"], second, "WAITING")
    third = start_run(local_stack, job["job_id"])

    # Then the third is SKIPPED (one already waits), and the second starts once the first ended
    skipped = wait_for_end(local_stack, job["job_id"], third, timeout=30)
    assert skipped["status"] == "SKIPPED"
    assert "BUFFER_ONE" in skipped["error"]
    ended = wait_for_end(local_stack, job["job_id"], first, timeout=30)
    waited = wait_for_end(local_stack, job["job_id"], second, timeout=40)
    assert (ended["status"], waited["status"]) == ("SUCCEEDED", "SUCCEEDED")
    assert at(waited["started_at"]) >= at(ended["finished_at"])
    assert at(waited["started_at"]) - at(ended["finished_at"]) < timedelta(seconds=5)


def test_replace_cancels_the_running_run_and_starts_the_new_one(local_stack: LocalStack) -> None:
    # Given a REPLACE job whose run is running a long script
    job = create_job(local_stack, concurrency_policy="REPLACE", script=slow(120))
    first = start_run(local_stack, job["job_id"])
    wait_for_status(local_stack, job["job_id"], first, "RUNNING")

    # When its next run comes to its second
    second = start_run(local_stack, job["job_id"])

    # Then the running one is cancelled, naming its replacement, and the new one then runs
    replaced = wait_for_status(local_stack, job["job_id"], first, "CANCELLED")
    assert second in replaced["error"]
    started = wait_for_status(local_stack, job["job_id"], second, "RUNNING", timeout=CANCEL_BOUND)

    def stopped() -> dict[str, Any] | None:
        run = get_run(local_stack, job["job_id"], first)
        return run if run.get("duration_ms") is not None else None

    old = wait_for("the replaced script's report", stopped, CANCEL_BOUND, local_stack)
    assert "done" not in old["output_tail"]
    old_end = at(old["started_at"]) + timedelta(milliseconds=old["duration_ms"])
    assert at(started["started_at"]) >= old_end - timedelta(seconds=1)
    cancel(local_stack, job["job_id"], second)  # do not leave a 2-minute script behind
