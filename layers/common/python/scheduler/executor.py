"""The executor: claim each run of a dispatch message, then start one task for those it won."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from aws_lambda_powertools import Logger

from scheduler.dispatch import DispatchBackend, RunSpec
from scheduler.run_repository import RunRepository
from scheduler.runs import DispatchMessage, Run, RunStatus

logger = Logger(child=True)


class RunBusy(Exception):
    """Another executor holds a live claim on a run: let SQS redeliver the message later."""


class Executor:
    def __init__(
        self,
        runs: RunRepository,
        backend: DispatchBackend,
        *,
        claim_seconds: int,
        dispatch_grace_seconds: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._runs = runs
        self._backend = backend
        self._claim_seconds = claim_seconds
        self._grace = dispatch_grace_seconds
        self._clock = clock

    def handle(self, message: DispatchMessage) -> list[str]:
        """Dispatch the message's runs that nobody dispatched yet; returns their keys."""
        now = self._clock()
        claim_id = uuid.uuid4().hex
        claimed: list[Run] = []
        for due in message.runs:
            run = self._runs.get(due.job_id, due.key)
            if run is None or run.attempt != due.attempt or run.status not in _CLAIMABLE:
                continue  # done, or already dispatched for this attempt: a duplicate message
            if self._runs.claim(run, claim_id, now, self._claim_seconds):
                claimed.append(run)
                continue
            current = self._runs.get(due.job_id, due.key)
            if current is not None and current.status is RunStatus.DISPATCHING:
                raise RunBusy(f"run {due.key} is being dispatched by another executor")
        if not claimed:
            return []
        specs = [self._spec(run) for run in claimed]
        try:
            task_id = self._backend.dispatch(message.pack_id, specs)
        except Exception:
            for run in claimed:
                self._runs.release(run, claim_id, now)
            raise
        for run in claimed:
            start = max(run.not_before, int(now.timestamp()))
            deadline = start + run.timeout_seconds + self._grace
            self._runs.mark_dispatched(run, claim_id, task_id, self._clock(), deadline)
        logger.info("dispatched", task_id=task_id, runs=[r.key for r in claimed])
        return [run.key for run in claimed]

    def _spec(self, run: Run) -> RunSpec:
        script_key, parameters = self._runs.script_of(run.job_id, run.key)
        return RunSpec(
            job_id=run.job_id,
            run_key=run.key,
            attempt=run.attempt,
            scheduled_at=run.execution_time,
            not_before=run.not_before,
            timeout_seconds=run.timeout_seconds,
            parameters=parameters,
            script_key=script_key,
        )


# DISPATCHING: an abandoned claim (the executor died before dispatch) may be taken again.
_CLAIMABLE = frozenset({RunStatus.PENDING, RunStatus.QUEUED, RunStatus.DISPATCHING})
