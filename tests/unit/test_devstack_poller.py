"""The local stack's SQS poller runs batches concurrently, as Lambda's event source mapping
scales out, but never more at once than its concurrency allows."""

from __future__ import annotations

import threading
import time
from typing import Any

from devstack.pipeline import Poller


def test_a_poller_runs_up_to_its_concurrency_of_batches_at_once() -> None:
    # Given a queue with six batches and a function that holds each batch until released
    batches = [[{"MessageId": str(i)}] for i in range(6)]
    lock = threading.Lock()
    running: list[int] = []
    most = 0
    release = threading.Event()

    def receive() -> list[dict[str, Any]]:
        with lock:
            return batches.pop() if batches else []

    def handle(messages: list[dict[str, Any]]) -> None:
        nonlocal most
        with lock:
            running.append(1)
            most = max(most, len(running))
        release.wait(5)
        with lock:
            running.pop()

    poller = Poller("test-poller", receive, handle, concurrency=2)

    # When it polls for a while with every batch held
    poller.start()
    time.sleep(0.5)
    held_at_once = most
    left_in_queue = len(batches)
    release.set()
    deadline = time.monotonic() + 5
    while (batches or running) and time.monotonic() < deadline:
        time.sleep(0.05)
    poller.stop()

    # Then two batches ran at once and the others stayed in the queue until a slot freed
    assert held_at_once == 2
    assert left_in_queue == 4
    assert batches == []
    assert running == []
