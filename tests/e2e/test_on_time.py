"""On time at the production pace, over real HTTP: the local stack's watcher ticks once a minute
at a random second (as the EventBridge rule does), and we measure each script's start against
its second. An every-minute job, and jobs created, updated and resumed 10-50 s before their
occurrence, all start within 2 s (the local backend starts tasks at once; under Fargate-like
starts, see `make bench`, bench/on_time.py)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from e2e.api_client import (
    FAR_FUTURE,
    HTTP_TIMEOUT,
    MAX_START_LAG_MS,
    create_job,
    get_run,
    list_runs,
    wait_for,
)
from e2e.conftest import LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

PRODUCTION_PACE = ("--watcher-interval", "60", "--watcher-second", "random")
QUICK = "print('on time')\n"


@pytest.fixture(scope="module")
def paced_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("paced"), PRODUCTION_PACE)
    yield stack
    stop_stack(stack)


def daily_at(second: int) -> str:
    at = datetime.fromtimestamp(second, UTC)
    return f"{at.minute} {at.hour} * * *"


def post(stack: LocalStack, path: str, body: Any = None, method: str = "POST") -> Any:
    response = requests.request(
        method,
        f"{stack.url}{path}",
        json=body,
        headers=stack.headers("alice"),
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()


def ended_run(stack: LocalStack, job_id: str, second: int, timeout: float) -> dict[str, Any]:
    """The run of `job_id` due at `second`, once it has ended."""
    key = f"{second:010d}-{job_id}"

    def probe() -> dict[str, Any] | None:
        keys = {run["key"] for run in list_runs(stack, job_id).json()["items"]}
        if key not in keys:
            return None
        run = get_run(stack, job_id, key)
        return run if run["status"] in {"SUCCEEDED", "FAILED", "TIMED_OUT"} else None

    return wait_for(f"the run at {second} of {job_id}", probe, timeout, stack)


def test_runs_start_within_two_seconds_at_the_production_pace(paced_stack: LocalStack) -> None:
    stack = paced_stack
    rng = random.Random()
    # Given an every-minute job, a job to move and a job paused, all created now
    every_minute = create_job(stack, schedule="* * * * *", script=QUICK)
    to_move = create_job(stack, schedule=FAR_FUTURE, script=QUICK)
    to_resume = create_job(stack, schedule=FAR_FUTURE, script=QUICK)
    post(stack, f"/jobs/{to_resume['job_id']}/pause")

    # When, 10-50 s before the next minute but one, a job is created for it, the second is moved
    # to it and the third resumed on it
    target = int(time.time()) // 60 * 60 + 120
    time.sleep(max(0.0, target - rng.uniform(10, 50) - time.time()))
    created = create_job(stack, schedule=daily_at(target), script=QUICK)
    post(stack, f"/jobs/{to_move['job_id']}", {"schedule": daily_at(target)}, method="PATCH")
    post(stack, f"/jobs/{to_resume['job_id']}", {"schedule": daily_at(target)}, method="PATCH")
    post(stack, f"/jobs/{to_resume['job_id']}/resume")

    # Then each of their runs at that minute starts within 2 s of it, and so do the
    # every-minute job's runs of that minute and the next
    runs = {
        "created": ended_run(stack, created["job_id"], target, 60),
        "updated": ended_run(stack, to_move["job_id"], target, 60),
        "resumed": ended_run(stack, to_resume["job_id"], target, 60),
        "every minute": ended_run(stack, every_minute["job_id"], target, 60),
        "every minute, next": ended_run(stack, every_minute["job_id"], target + 60, 120),
    }
    lags = {case: run["start_lag_ms"] for case, run in runs.items()}
    assert all(run["status"] == "SUCCEEDED" for run in runs.values()), runs
    assert all(0 <= lag <= MAX_START_LAG_MS for lag in lags.values()), lags
