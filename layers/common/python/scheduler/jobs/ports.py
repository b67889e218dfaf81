"""What the job service needs from storage: the DynamoDB repository and the S3 script store in
production, in-memory fakes in unit tests."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from scheduler.jobs.job_models import Job, JobFilters, ListPage
from scheduler.runs.run_models import Run
from scheduler.schedule.schedule_item import ScheduleItem


class JobReader(Protocol):
    def get(self, job_id: str) -> Job | None: ...


class JobStore(JobReader, Protocol):
    """Every change is conditional on the job being as it was read (False: read it again)."""

    def create(self, job: Job, script_key: str) -> None:
        """The job, its name guard and its first schedule item, all or none; JobNameConflict."""

    def get_many(self, job_ids: set[str], *, consistent: bool = False) -> dict[str, Job]: ...

    def update(self, updated: Job, previous: Job, script_key: str) -> bool: ...

    def pause(self, job: Job, now: datetime) -> bool: ...

    def resume(self, job: Job, following: datetime | None, now: datetime) -> bool: ...

    def delete(self, job: Job) -> bool: ...

    def advance(
        self, job: Job, current: ScheduleItem, following: datetime | None
    ) -> ScheduleItem | None:
        """Replace the taken schedule item by the next occurrence (returned), atomically."""

    def list_for_owner(
        self, user_id: str, filters: JobFilters, limit: int, start: dict[str, str] | None
    ) -> ListPage: ...


class RunHistory(Protocol):
    def last_run(self, job_id: str, now: datetime) -> Run | None:
        """The job's latest run whose second has come."""


class ScriptStore(Protocol):
    def put(self, source: str) -> tuple[str, str]:
        """Store `source`; return its (sha256, key)."""


class EarlyDispatch(Protocol):
    """Takes a job's next occurrence at once (pipeline.due_runs.DueRuns): when the next watcher
    tick could see it too late (best effort, the schedule item stays for the tick), or before a
    change would move the job past an occurrence no tick has taken (must succeed)."""

    def take_if_soon(self, job: Job, now: datetime) -> object: ...

    def take_soon(self, job: Job, now: datetime) -> object:
        """As take_if_soon, but a failure raises (None: nothing to take)."""


class JobHealth(Protocol):
    """A job's run of consecutive failures, for `pause_after_failures` (run outcomes)."""

    def count_failure(self, job_id: str) -> int | None:
        """One more failure in a row; the count, or None if the job is gone."""

    def reset_failures(self, job_id: str) -> None: ...

    def pause_for_failures(self, job_id: str, reason: str, now: datetime) -> bool:
        """Pause the job (if active) saying why; False if it was not active."""
