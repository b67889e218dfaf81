"""One run, end to end: fetch the script, wait for ``not_before``, claim the attempt (with its
pack mates of the same second: claims.py), take the job's lock if its overlap policy says so,
check for a cancel at the second, run the script (watching for a cancel), and deliver its report
(always try to: even a bug of ours is reported FAILED)."""

from __future__ import annotations

import contextlib
import os
import threading
import time

from jobrunner import overlap, reporting
from jobrunner.cancel import CancelWatch, cancelled_before_start
from jobrunner.config import CLAIM_AHEAD_SECONDS
from jobrunner.log import log
from jobrunner.manifest import RunSpec
from jobrunner.outcome import CANCELLED, FAILED, SKIPPED, Outcome
from jobrunner.sandbox import RunDirs
from jobrunner.supervision import Runtime, run_script
from jobrunner.transfer import TransferError


def wait_until(instant: float, stop: threading.Event) -> None:
    """Sleep in small steps until the wall clock reaches ``instant`` (or a stop is requested)."""
    while not stop.is_set():
        remaining = instant - time.time()
        if remaining <= 0:
            return
        stop.wait(min(remaining, 0.25))


def execute(spec: RunSpec, rt: Runtime, index: int = 0) -> bool:
    """Everything for one run (the ``index``-th of its pack, which picks its uid). True when its
    finished report was delivered (or it had none to deliver: another task holds its claim, or
    it was cancelled before it started)."""
    dirs: RunDirs | None = None
    user = rt.sandbox.user_for(index)

    def deliver(outcome: Outcome, output_path: str | None) -> bool:
        return reporting.deliver(spec, outcome, output_path, rt.batches)

    try:
        if rt.sandbox.error is not None:
            return deliver(Outcome(status=FAILED, error=rt.sandbox.error), None)
        try:
            source = rt.scripts.fetch(spec.script_url)
        except TransferError as exc:
            log("script_fetch_failed", "error", **spec.ids, error=str(exc))
            outcome = Outcome(status=FAILED, error=f"script download failed: {exc}")
            return deliver(outcome, None)
        dirs = RunDirs.create(user)
        dirs.write_script(source, user)
        log("run_ready", **spec.ids, script_bytes=len(source), not_before=spec.not_before)
        # Claim (and take the job's lock) just before the second, not at the task's start (a
        # task that never gets there leaves its runs to another task); the cancel object is
        # read at the second itself.
        wait_until(spec.not_before - CLAIM_AHEAD_SECONDS, rt.stop)
        claims = rt.claims
        if not rt.stop.is_set() and claims is not None and not claims.take(spec):
            # Another task already started this attempt (the executor dispatched it twice,
            # e.g. it died after RunTask).
            log("run_claimed_elsewhere", "warning", **spec.ids)
            return True
        with CancelWatch(spec, rt.config.cancel_poll) as cancel:
            decision = overlap.acquire(spec, cancel.requested, rt.stop)
            if decision.skip is None:
                wait_until(spec.not_before, rt.stop)
            if rt.stop.is_set():
                if decision.skip is None:
                    overlap.release(spec)
                outcome = Outcome(status=FAILED, error="runner stopped before the script started")
                return deliver(outcome, None)
            if (
                decision.skip is None
                and (reason := cancelled_before_start(spec, rt.cancel_marks)) is not None
            ):
                # Cancelled before its second: never started, reports nothing (the run is
                # CANCELLED already; if that record was not written, the sweep finds the
                # cancel object at the run's deadline: this runner still exits 0).
                overlap.release(spec)
                log("run_cancelled_before_start", "warning", **spec.ids, reason=reason)
                return True
            if decision.skip is not None:
                status = CANCELLED if decision.cancelled else SKIPPED
                error = cancel.reason if cancel.requested.is_set() else decision.skip
                return deliver(Outcome(status=status, error=error), None)
            try:
                outcome = run_script(spec, dirs, rt, cancel, user)
            finally:
                overlap.release(spec)
        return deliver(outcome, dirs.output if os.path.exists(dirs.output) else None)
    except Exception as exc:  # a bug of ours: still try to tell the scheduler
        log("run_crashed", "error", **spec.ids, error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            return deliver(Outcome(status=FAILED, error=f"runner error: {exc}"), None)
        return False
    finally:
        if dirs is not None:
            dirs.remove()
