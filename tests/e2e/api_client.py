"""Talking to the local stack's API as a client would: create jobs, run them, wait for runs.
Shared by the e2e test modules."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import requests

from e2e.conftest import LocalStack

HTTP_TIMEOUT = 30
SCHEDULED_WAIT = 90.0  # the next minute boundary (<= 60 s) plus slack
RUN_WAIT = 15.0
FAR_FUTURE = "0 0 1 1 *"  # once a year: only "run now" runs these jobs
MAX_START_LAG_MS = 2000
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED", "CANCELLED"}

ENV_SCRIPT = """\
import json, os
print(json.dumps({
    "parameters": json.loads(os.environ["JOB_PARAMETERS"]),
    "job_id": os.environ["JOB_ID"],
    "run_key": os.environ["RUN_KEY"],
    "scheduled_at": os.environ["SCHEDULED_AT"],
    "attempt": os.environ["ATTEMPT"],
}))
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_job(stack: LocalStack, user: str = "alice", **fields: Any) -> dict[str, Any]:
    body = {"name": unique("pipeline"), "schedule": FAR_FUTURE, "script": ENV_SCRIPT} | fields
    response = requests.post(
        f"{stack.url}/jobs", json=body, headers=stack.headers(user), timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def run_now(stack: LocalStack, job_id: str, user: str = "alice") -> requests.Response:
    return requests.post(
        f"{stack.url}/jobs/{job_id}/run", headers=stack.headers(user), timeout=HTTP_TIMEOUT
    )


def start_run(stack: LocalStack, job_id: str) -> str:
    """POST /jobs/{id}/run; the new run's key."""
    response = run_now(stack, job_id)
    assert response.status_code == 202, response.text
    key: str = response.json()["key"]
    return key


def list_runs(stack: LocalStack, job_id: str, user: str = "alice") -> requests.Response:
    return requests.get(
        f"{stack.url}/jobs/{job_id}/runs", headers=stack.headers(user), timeout=HTTP_TIMEOUT
    )


def get_run(stack: LocalStack, job_id: str, key: str) -> dict[str, Any]:
    response = requests.get(
        f"{stack.url}/jobs/{job_id}/runs/{key}",
        headers=stack.headers("alice"),
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


def wait_for(
    what: str, probe: Callable[[], dict[str, Any] | None], timeout: float, stack: LocalStack
) -> dict[str, Any]:
    """Poll `probe` every 0.25 s until it returns something; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.25)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s:\n{stack.log()[-4000:]}")


def wait_for_end(
    stack: LocalStack, job_id: str, key: str, timeout: float = RUN_WAIT
) -> dict[str, Any]:
    """The run once it is in a terminal status."""

    def probe() -> dict[str, Any] | None:
        run = get_run(stack, job_id, key)
        return run if run["status"] in TERMINAL else None

    return wait_for(f"run {key} of job {job_id} ending", probe, timeout, stack)


def output_json(run: dict[str, Any]) -> dict[str, Any]:
    """The JSON object the script printed as its last output line."""
    lines = [line for line in (run["output_tail"] or "").splitlines() if line.strip()]
    assert lines, f"no output: {run}"
    printed: dict[str, Any] = json.loads(lines[-1])
    return printed


def epoch(moment: str) -> int:
    return int(datetime.fromisoformat(moment).timestamp())
