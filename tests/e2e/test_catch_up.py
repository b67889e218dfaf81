"""Catch-up after a watcher outage, end to end: a local stack of its own (its watcher is paused,
as when EventBridge stops invoking it, and resumed), three every-minute jobs, one per catch-up
policy. Minutes by nature (two occurrences must be missed by over a minute beyond what the
watcher had taken ahead): `make e2e` runs it in a second pytest beside the shared-stack tests,
where it mostly waits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from e2e.api_client import HTTP_TIMEOUT, create_job, list_runs, wait_for
from e2e.conftest import LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def drill_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("drill"))
    yield stack
    stop_stack(stack)


def test_catch_up_after_a_watcher_outage_runs_or_skips_every_missed_occurrence(
    drill_stack: LocalStack,
) -> None:
    local_stack = drill_stack
    # Given three every-minute jobs, one per catch-up policy
    policies = {
        "ALL": {"policy": "ALL"},
        "LATEST": {"policy": "LATEST"},
        "NONE": {"policy": "NONE"},
    }
    jobs = {
        name: create_job(local_stack, schedule="* * * * *", script="print('ran')", catch_up=up)
        for name, up in policies.items()
    }

    # When the watcher is down (EventBridge stops invoking it) until at least two of their
    # occurrences have been missed by over a minute beyond what it had already taken
    paused = local_stack.state_dir / "watcher.paused"
    paused.touch()
    began = time.time()
    lead = 80  # what the watcher (and create) take ahead: tick + delay + dispatch
    first_missed = (int(began + lead) // 60 + 1) * 60
    resume_at = first_missed + 60 + 61
    try:
        time.sleep(resume_at - time.time())
    finally:
        paused.unlink()

    # Then, once the watcher ticks again, every occurrence since before the outage has a run:
    # run (late) or SKIPPED with why, none twice, none missing
    last = first_missed + 60

    def settled(job_id: str) -> dict[str, Any] | None:
        runs = list_runs(local_stack, job_id).json()["items"]
        runs = [r for r in runs if r["execution_time"] <= last]
        done = all(r["status"] in ("SUCCEEDED", "SKIPPED") for r in runs)
        return {"runs": runs} if done and max(r["execution_time"] for r in runs) == last else None

    found = {
        name: wait_for(f"{name} caught up", lambda j=job: settled(j["job_id"]), 60, local_stack)[
            "runs"
        ]
        for name, job in jobs.items()
    }
    for name, runs in found.items():
        seconds = sorted(r["execution_time"] for r in runs)
        assert len(seconds) == len(set(seconds)), name  # none twice
        assert seconds == list(range(seconds[0], seconds[-1] + 1, 60)), name  # none missing
        missed = {r["execution_time"]: r for r in runs if first_missed <= r["execution_time"]}
        statuses = [missed[s]["status"] for s in sorted(missed)]
        if name == "ALL":
            assert statuses == ["SUCCEEDED", "SUCCEEDED"], runs
        elif name == "LATEST":
            assert statuses == ["SKIPPED", "SUCCEEDED"], runs
            assert "LATEST" in missed[first_missed]["error"]
        else:
            assert statuses == ["SKIPPED", "SKIPPED"], runs
            assert all("NONE" in r["error"] for r in missed.values())
    for job in jobs.values():  # every minute, for the rest of the session: stop them
        requests.post(
            f"{local_stack.url}/jobs/{job['job_id']}/pause",
            headers=local_stack.headers("alice"),
            timeout=HTTP_TIMEOUT,
        )
