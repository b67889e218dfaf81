"""What the run services need from storage: the DynamoDB repository and the S3 run objects in
production, in-memory fakes in unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from scheduler.runs.run_models import AttemptRecord, Run, RunNotification, RunReport
from scheduler.schedule.schedule_item import ScheduleItem


class RunStore(Protocol):
    """Every write is conditional on the run's attempt and status (False: it had moved on), so a
    redelivered message, an overlapping tick or a late report never moves a run backwards."""

    def get(self, job_id: str, key: str) -> Run | None: ...

    def get_stored(self, job_id: str, key: str) -> Run | None:
        """The run without its pack's dispatch record (DISPATCHING, no task, once dispatched)."""

    def get_with_script(self, job_id: str, key: str) -> tuple[Run, str, dict[str, Any]] | None:
        """The run as `get` reads it, with the script key and parameters snapshotted into it
        when it was created, in the same read."""

    def list_for_job(
        self, job_id: str, limit: int, start: dict[str, str] | None
    ) -> tuple[list[Run], dict[str, str] | None]: ...

    def last_run(self, job_id: str, now: datetime) -> Run | None:
        """The job's latest run whose second has come (read eventually consistent)."""

    def overdue(self, now: datetime, since: int | None = None) -> list[tuple[str, str]]: ...

    def create(
        self,
        run: Run,
        script_key: str,
        parameters: dict[str, Any],
        *,
        items: Sequence[ScheduleItem] = (),
        deadline: int | None = None,
    ) -> bool:
        """The run (QUEUED in the in-flight index when given its `deadline`) and `items`, all or
        none; False if the run exists."""

    def create_with_schedule_item(
        self, run: Run, script_key: str, parameters: dict[str, Any], item: ScheduleItem
    ) -> bool: ...

    def defer(self, run: Run, claim_id: str, not_before: int, reason: str, now: datetime) -> bool:
        """A claimed run with no place: PENDING at `not_before`, with a schedule item then."""

    def mark_queued(self, run: Run, now: datetime, deadline: int) -> bool:
        """Sent: PENDING -> QUEUED, or a QUEUED run sent again, with the deadline of this send."""

    def claim(
        self, run: Run, claim_id: str, now: datetime, claim_seconds: int, pack_id: str = ""
    ) -> bool: ...

    def release(self, run: Run, claim_id: str, now: datetime) -> None: ...

    def mark_dispatched(
        self, run: Run, claim_id: str, task_id: str, now: datetime, deadline: int | None
    ) -> bool: ...

    def record_dispatch(self, claim_id: str, task_id: str, now: datetime) -> None:
        """The runs still claimed with `claim_id` are dispatched in `task_id` (one write)."""

    def mark_waiting(self, run: Run, now: datetime, deadline: int) -> bool: ...

    def mark_running(self, run: Run, report: RunReport, now: datetime, deadline: int) -> bool: ...

    def finish(
        self, run: Run, report: RunReport, output_key: str | None, now: datetime
    ) -> bool: ...

    def cancel(self, run: Run, reason: str, now: datetime) -> bool:
        """End the run as CANCELLED, whatever attempt it is at, if it has not ended."""

    def record_cancelled(
        self, run: Run, report: RunReport, output_key: str | None, now: datetime
    ) -> bool:
        """What the cancelled attempt's runner reported (exit code, output): the status stays."""

    def retry(self, run: Run, failed: AttemptRecord, not_before: int, now: datetime) -> bool: ...

    def note_once(self, run: Run, note: str) -> bool:
        """Record that `note` was done for the run; False if it had been already."""

    def skip(self, run: Run, reason: str, now: datetime) -> bool:
        """End a run that has not started as SKIPPED, if it is still at run's attempt and
        status."""
        ...


class RunObjects(Protocol):
    """The S3 objects a run's attempts leave: the runner's reports and the captured output."""

    def report(self, key: str) -> RunReport | None:
        """The report at `key`; None if it is missing or malformed."""

    def batch_reports(self, key: str) -> list[RunReport]:
        """The finished reports in the batch at `key` (empty if it is missing; malformed
        entries left out)."""

    def finished_report(self, run: Run) -> RunReport | None:
        """The finished report of the run's current attempt, wherever its runner put it: its
        own object, or a batch of the runs of its pack claim. None if there is none yet."""

    def link(self, key: str, seconds: int) -> str:
        """A presigned GET of `key`, valid for `seconds`."""

    def request_cancel(self, run: Run, reason: str) -> None:
        """Tell the runner to stop the run's current attempt: the cancel object it polls for,
        then, for a run an executor claimed, its pack claim's cancel mark (which the runner
        reads at the second before the run's own object)."""

    def cancel_requested(self, job_id: str, run_key: str, attempt: int) -> bool:
        """Was the attempt's cancel object written?"""

    def attempt_claimed(self, run: Run) -> bool:
        """Did a runner claim the run's current attempt (its own claim, or its pack's claim
        naming it)? A runner claims a run just before starting its script: False means the
        script never started. True when it cannot tell (no pack recorded for the attempt)."""

    def release_lock(self, job_id: str, run_key: str, attempt: int) -> None:
        """Free the job's lock (overlap policies) if this attempt holds it: its task died."""


class RunNotifier(Protocol):
    """Tells a job's owner about a run (the deployment's SNS topic). Never raises: a
    notification that cannot be sent is logged, and the pipeline goes on."""

    def notify(self, notification: RunNotification) -> None: ...
