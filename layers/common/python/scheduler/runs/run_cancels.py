"""Cancelling a run: by its owner (POST .../cancel), or by a REPLACE job's next run.

The runner has no credentials, so the cancel reaches it through S3 objects it can see
(RunObjects.request_cancel): the attempt's cancel object, which the runner polls while the
script runs (then SIGTERM, SIGKILL after its grace), and, for a run an executor claimed, the mark
of its pack claim, which the runner reads at the second before the run's own object (a runner
that has not started the script yet finds both, and never starts it). Both are written before
the run is marked CANCELLED, in the pack claim the run was read in, so a crash in between leaves
a signal the runner obeys; a run ended CANCELLED is never retried.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from scheduler import metric_names as names
from scheduler import metrics
from scheduler.errors import JobBusy
from scheduler.runs.ports import RunObjects, RunStore
from scheduler.runs.run_log import run_changed
from scheduler.runs.run_models import Run, RunStatus
from scheduler.times import Clock

logger = Logger(child=True)

# A run that moves on between our read and our write (a retry, a start) is read again: it can
# only move forward, so a few rounds settle it.
ROUNDS = 4


class RunCancels:
    def __init__(self, runs: RunStore, objects: RunObjects, clock: Clock) -> None:
        self._runs = runs
        self._objects = objects
        self._clock = clock

    def cancel(self, run: Run, reason: str) -> Run:
        """End the run CANCELLED; returns it as it now is (as it ended, had it ended already)."""
        for _ in range(ROUNDS):
            if run.status.terminal:
                return run
            self._objects.request_cancel(run, reason)
            now = self._clock()
            if self._runs.cancel(run, reason, now):
                metrics.count(names.RUNS_CANCELLED)
                run_changed("run cancelled", run, was=run.status.value, reason=reason)
                return run.model_copy(
                    update={
                        "status": RunStatus.CANCELLED,
                        "finished_at": now,
                        "updated_at": now,
                        "error": reason,
                    }
                )
            current = self._runs.get(run.job_id, run.key)
            if current is None:
                return run
            run = current
        raise JobBusy(f"run {run.key} kept changing while it was being cancelled; retry")

    def cancel_by_key(self, job_id: str, key: str, reason: str) -> None:
        run = self._runs.get(job_id, key)
        if run is not None:
            self.cancel(run, reason)
