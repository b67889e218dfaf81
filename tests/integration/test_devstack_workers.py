"""The local stack's worker pools (`devstack.workers`): a worker started for an invocation on a
short-lived thread (an SQS poller's batch, an API request) keeps serving after that thread has
ended. Each worker asks to be killed when its starter ends (so that a `kill -9` of the stack
leaves none behind), and Linux sends that signal when the starting *thread* ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.template import local_stack
from devstack.workers import FunctionWorkers
from integration.conftest import load_event


@pytest.fixture
def pool() -> Iterator[FunctionWorkers]:
    stack = local_stack("workers", {})
    workers = FunctionWorkers("test", stack, ["ApiDocsFunction"], size=1, warm=0)
    yield workers
    workers.stop()


def test_a_worker_started_on_a_short_lived_thread_outlives_it(pool: FunctionWorkers) -> None:
    event = load_event("api_docs")
    answers: list[Any] = []

    # Given the pool's only worker, started by an invocation on a thread that then ends
    first = threading.Thread(target=lambda: answers.append(pool.invoke("ApiDocsFunction", event)))
    first.start()
    first.join(timeout=120)
    assert [answer["statusCode"] for answer in answers] == [200]

    # When the next invocation comes, on another thread, after a moment
    threading.Event().wait(1.0)
    second = pool.invoke("ApiDocsFunction", event)

    # Then that same worker serves it (a dead one would fail the invocation: WorkerCrashed)
    assert second["statusCode"] == 200
