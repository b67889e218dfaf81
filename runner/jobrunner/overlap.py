"""A job's overlap policy, decided at the run's second by the one process that is there then:
the runner. (The scheduler takes runs minutes ahead, so it cannot know whether the previous
run will still be running.)

One lock object per job, ``locks/<job_id>.json``, names the run whose script is running and
until when (its timeout plus a margin: after that the lock is stale, whoever finds it removes
it, so a task that died holding it blocks nobody for long). A run takes it with a conditional
PUT just before its script starts, and deletes it when the script has ended. Finding it taken:

- FORBID: the run is SKIPPED.
- BUFFER_ONE: the run takes the job's waiting slot (a second conditional PUT: at most one run
  waits) and waits for the lock; a run that finds the slot taken too is SKIPPED.
- REPLACE: the run takes the waiting slot whatever is in it, and reports that it waits, naming
  the lock's holder (and a run it displaced from the slot): the scheduler cancels them through
  their cancel objects, and this run starts as soon as the lock is free.

A waiting run reports it (``waiting.json``) so that the scheduler extends its deadline. ALLOW
jobs never touch any of this: it costs them nothing.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass

from jobrunner.config import LOCK_MARGIN_SECONDS, LOCK_POLL_SECONDS
from jobrunner.log import log
from jobrunner.manifest import OverlapUrls, RunSpec
from jobrunner.transfer import (
    TransferError,
    http_delete,
    http_get_if_present,
    http_put,
    http_put_if_absent,
)

MAX_LOCK_BYTES = 4096


@dataclass(frozen=True)
class Holder:
    run_key: str
    attempt: int
    until: float  # epoch seconds

    @property
    def stale(self) -> bool:
        return self.until < time.time()


@dataclass(frozen=True)
class Decision:
    """Start the script (``skip`` None), or not, and why."""

    skip: str | None = None
    cancelled: bool = False  # the run was cancelled (or replaced) while it waited


def _body(spec: RunSpec, until: float) -> bytes:
    return json.dumps({"run_key": spec.run_key, "attempt": spec.attempt, "until": until}).encode()


def _read(url: str) -> Holder | None:
    raw = http_get_if_present(url, MAX_LOCK_BYTES)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Holder(str(data["run_key"]), int(data["attempt"]), float(data["until"]))
    except (ValueError, KeyError, TypeError):
        return Holder("unknown", 0, 0.0)  # unreadable: treat as stale


def _take(spec: RunSpec, urls: OverlapUrls) -> Holder | None:
    """Take the lock: None when taken, else its live holder (a stale one is removed first)."""
    until = time.time() + spec.timeout_seconds + LOCK_MARGIN_SECONDS
    for _ in range(3):
        if http_put_if_absent(urls.take, _body(spec, until)):
            return None
        holder = _read(urls.read)
        if holder is None:
            continue  # released meanwhile: try again
        if holder.run_key == spec.run_key and holder.attempt == spec.attempt:
            return None  # ours already (a PUT retried after S3 wrote it)
        if not holder.stale:
            return holder
        log("lock_stale_removed", "warning", **spec.ids, holder=holder.run_key)
        http_delete(urls.release)
    return _read(urls.read) or Holder("unknown", 0, time.time() + LOCK_POLL_SECONDS)


def acquire(spec: RunSpec, cancel: threading.Event, stop: threading.Event) -> Decision:
    """Take the job's lock per the run's overlap policy; waits when the policy says so."""
    urls = spec.lock
    if spec.overlap == "ALLOW" or urls is None:
        return Decision()
    try:
        holder = _take(spec, urls)
        if holder is None:
            return Decision()
        if spec.overlap == "FORBID":
            return Decision(skip=f"skipped: run {holder.run_key} was still running (FORBID)")
        displaced: list[str] = []
        until = holder.until + spec.timeout_seconds + LOCK_MARGIN_SECONDS
        if spec.overlap == "BUFFER_ONE":
            if not http_put_if_absent(urls.wait, _body(spec, until)):
                waiting = _read(urls.read_wait)
                if waiting is None or not waiting.stale:
                    name = waiting.run_key if waiting else "another run"
                    return Decision(
                        skip=f"skipped: run {holder.run_key} was still running and {name} "
                        "was already waiting for it (BUFFER_ONE)"
                    )
                http_put(urls.wait, _body(spec, until), "application/json")
        else:  # REPLACE: the newest run waits, and the runs before it are cancelled
            waiting = _read(urls.read_wait)
            if waiting is not None and waiting.run_key != spec.run_key and not waiting.stale:
                displaced.append(waiting.run_key)
            http_put(urls.wait, _body(spec, until), "application/json")
        _report_waiting(spec, urls, holder, displaced)
        return _wait(spec, urls, cancel, stop)
    except TransferError as exc:
        # At least once matters more than at most once: an S3 we cannot reach does not stop a
        # run (as for the claim).
        log("lock_unavailable", "warning", **spec.ids, error=str(exc))
        return Decision()


def _report_waiting(spec: RunSpec, urls: OverlapUrls, holder: Holder, displaced: list[str]) -> None:
    replaces = [holder.run_key, *displaced] if spec.overlap == "REPLACE" else []
    report = {
        **spec.ids,
        "waiting_for": holder.run_key,
        "wait_until": int(holder.until),
        "replaces": replaces,
    }
    log("run_waiting", **spec.ids, waiting_for=holder.run_key, replaces=replaces)
    with contextlib.suppress(TransferError):
        http_put(urls.waiting_report, json.dumps(report).encode(), "application/json")


def _wait(
    spec: RunSpec, urls: OverlapUrls, cancel: threading.Event, stop: threading.Event
) -> Decision:
    """Until the lock is ours, the run is cancelled, or a later run displaced it (REPLACE)."""
    while True:
        if cancel.is_set() or stop.is_set():
            _leave_slot(spec, urls)
            return Decision(skip="cancelled while waiting", cancelled=cancel.is_set())
        if spec.overlap == "REPLACE":
            waiting = _read(urls.read_wait)
            if waiting is not None and waiting.run_key != spec.run_key:
                return Decision(
                    skip=f"cancelled: replaced by run {waiting.run_key} (REPLACE)", cancelled=True
                )
        holder = _read(urls.read)  # a GET a poll; the conditional PUT only once it is free
        if holder is None or holder.stale:
            holder = _take(spec, urls)
        if holder is None:
            _leave_slot(spec, urls)
            return Decision()
        cancel.wait(LOCK_POLL_SECONDS)


def _leave_slot(spec: RunSpec, urls: OverlapUrls) -> None:
    """Free the waiting slot if it still names this run."""
    with contextlib.suppress(TransferError):
        waiting = _read(urls.read_wait)
        if waiting is not None and waiting.run_key == spec.run_key:
            http_delete(urls.release_wait)


def release(spec: RunSpec) -> None:
    """The script has ended: free the job's lock for the next run. (Unconditional: the lock is
    this run's, for it ends before its lock's `until`.)"""
    if spec.overlap == "ALLOW" or spec.lock is None:
        return
    try:
        http_delete(spec.lock.release)
    except TransferError as exc:
        log("lock_release_failed", "warning", **spec.ids, error=str(exc))
