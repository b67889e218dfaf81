"""Nothing accepted is lost (issue 13): a local stack whose jobs have run is killed with
`kill -9`, every process at once, moto included, and started again on the same state
directory. Every job, run record and output is there, and the next occurrences run on time.

A stack of its own (it is killed); about two minutes: it waits for a minute boundary before the
kill and for the next one after the restart.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from e2e.api_client import (
    FAR_FUTURE,
    HTTP_TIMEOUT,
    MAX_START_LAG_MS,
    SCHEDULED_WAIT,
    TERMINAL,
    create_job,
    epoch,
    list_runs,
    start_run,
    unique,
    wait_for,
    wait_for_end,
)
from e2e.conftest import PIPELINE_PACE, LocalStack, process_running, start_stack, stop_stack

pytestmark = pytest.mark.e2e

# Over the 4 KiB the runner keeps in the run record: the output also goes to S3 as an object.
BIG_OUTPUT_SCRIPT = (
    "import json, os\n"
    "print('x' * 6000)\n"
    "print(json.dumps(json.loads(os.environ['JOB_PARAMETERS'])))\n"
)


@pytest.fixture
def stacks() -> Iterator[list[LocalStack]]:
    """The stacks the test started (the last one is stopped at the end)."""
    started: list[LocalStack] = []
    yield started
    if started and started[-1].process.poll() is None:
        stop_stack(started[-1])


def _runs(stack: LocalStack, job_id: str) -> dict[str, dict[str, Any]]:
    response = list_runs(stack, job_id)
    assert response.status_code == 200, response.text
    return {run["key"]: run for run in response.json()["items"]}


def _output(stack: LocalStack, job_id: str, key: str) -> bytes:
    """The run's whole output, through the API's redirect to S3 (or its body)."""
    answer = requests.get(
        f"{stack.url}/jobs/{job_id}/runs/{key}/output",
        headers=stack.headers("alice"),
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    if answer.status_code == 307:
        fetched = requests.get(answer.headers["Location"], timeout=HTTP_TIMEOUT)
        assert fetched.status_code == 200, fetched.text
        return fetched.content
    assert answer.status_code == 200, answer.text
    return answer.content


def _jobs(stack: LocalStack) -> dict[str, dict[str, Any]]:
    response = requests.get(
        f"{stack.url}/jobs", headers=stack.headers("alice"), timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 200, response.text
    return {job["job_id"]: job for job in response.json()["items"]}


def _lasting(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in ("next_run_at", "updated_at")}


def _kill_everything(stack: LocalStack) -> None:
    """kill -9 of the stack's process and moto's at the same moment: no process gets to save or
    flush anything."""
    state = stack.state()
    pids = [state["moto_pid"], state["pid"]]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    stack.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(process_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(process_running(pid) for pid in pids)


def test_kill_9_of_the_whole_stack_loses_nothing_and_the_schedule_goes_on(
    tmp_path_factory: pytest.TempPathFactory, stacks: list[LocalStack]
) -> None:
    state_dir = tmp_path_factory.mktemp("durable")
    stack = start_stack(state_dir)
    stacks.append(stack)
    moto_port = stack.state()["aws_endpoint"].rsplit(":", 1)[1]

    # Given jobs that have run: one every minute, one run now with its parameters (its output
    # is big enough to be an S3 object), and a paused one
    minutely = create_job(stack, name=unique("minutely"), schedule="* * * * *")
    manual = create_job(
        stack, name=unique("manual"), schedule=FAR_FUTURE, script=BIG_OUTPUT_SCRIPT,
        parameters={"who": "before the crash"},
    )  # fmt: skip
    paused = create_job(stack, name=unique("paused"), schedule="*/5 * * * *")
    answer = requests.post(
        f"{stack.url}/jobs/{paused['job_id']}/pause",
        headers=stack.headers("alice"),
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    manual_key = start_run(stack, manual["job_id"])
    assert wait_for_end(stack, manual["job_id"], manual_key)["status"] == "SUCCEEDED"

    def a_scheduled_run_ended() -> dict[str, Any] | None:
        ended = [r for r in _runs(stack, minutely["job_id"]).values() if r["status"] in TERMINAL]
        return ended[0] if ended else None

    first = wait_for("a scheduled run ending", a_scheduled_run_ended, SCHEDULED_WAIT, stack)
    assert first["status"] == "SUCCEEDED", first
    jobs_before = _jobs(stack)
    runs_before = {job_id: _runs(stack, job_id) for job_id in jobs_before}
    output_before = _output(stack, manual["job_id"], manual_key)
    assert b"before the crash" in output_before
    assert len(output_before) > 6000

    # When every process of the stack, moto included, is killed at once, and the stack is
    # started again on the same state directory (on the same AWS port, as `make run` would)
    _kill_everything(stack)
    killed_at = time.time()
    stack = start_stack(state_dir, PIPELINE_PACE, "--moto-port", moto_port)
    stacks.append(stack)

    # Then every job is there as it was (but for its next run, which may have moved on)
    assert {i: _lasting(job) for i, job in _jobs(stack).items()} == {
        i: _lasting(job) for i, job in jobs_before.items()
    }
    assert jobs_before[paused["job_id"]]["status"] == "PAUSED"
    # every run record is there, each at least as far as it had got (a run in flight at the
    # kill may have moved on since)
    for job_id, runs in runs_before.items():
        after = _runs(stack, job_id)
        for key, run in runs.items():
            assert key in after, f"run {key} of {job_id} lost"
            if run["status"] in TERMINAL:
                assert after[key] == run
    # and the output, in the run record and in S3
    assert _output(stack, manual["job_id"], manual_key) == output_before

    # And the next occurrence after the restart runs on time
    next_minute = (int(killed_at) // 60 + 1) * 60

    def the_next_occurrence_ended() -> dict[str, Any] | None:
        for run in _runs(stack, minutely["job_id"]).values():
            if epoch(run["scheduled_at"]) >= next_minute and run["status"] in TERMINAL:
                return run
        return None

    run = wait_for("the next occurrence", the_next_occurrence_ended, SCHEDULED_WAIT, stack)
    assert run["status"] == "SUCCEEDED", run
    assert run["attempt"] == 1, run
    assert run["start_lag_ms"] is not None
    assert run["start_lag_ms"] < MAX_START_LAG_MS, run

    # and "run now" works on the restored job and state
    key = start_run(stack, manual["job_id"])
    assert wait_for_end(stack, manual["job_id"], key)["status"] == "SUCCEEDED"
