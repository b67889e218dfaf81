"""How an attempt ends: success is final; a failure is retried with backoff while attempts last."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aws_lambda_powertools import Logger

from scheduler.backoff import retry_delay
from scheduler.run_repository import RunRepository, epoch
from scheduler.runs import AttemptRecord, Run, RunReport, RunStatus

logger = Logger(child=True)


class RunOutcomes:
    def __init__(
        self, runs: RunRepository, *, retry_base_seconds: int, clock: Callable[[], datetime]
    ) -> None:
        self._runs = runs
        self._retry_base = retry_base_seconds
        self._clock = clock

    def conclude(self, run: Run, report: RunReport, output_key: str | None = None) -> RunStatus:
        """Record the end of the run's current attempt; returns the run's new status."""
        now = self._clock()
        status = report.status or RunStatus.FAILED
        if status is not RunStatus.SUCCEEDED and run.attempt < run.max_attempts:
            not_before = epoch(now) + retry_delay(run.attempt, self._retry_base)
            failed = AttemptRecord(
                attempt=run.attempt,
                status=status,
                exit_code=report.exit_code,
                finished_at=report.finished_at or now,
                error=report.error,
            )
            if self._runs.retry(run, failed, not_before, now):
                logger.info("retry scheduled", run_key=run.key, attempt=run.attempt + 1)
                return RunStatus.PENDING
            return run.status
        final = report.model_copy(update={"status": status})
        self._runs.finish(run, final, output_key, now)
        return status
