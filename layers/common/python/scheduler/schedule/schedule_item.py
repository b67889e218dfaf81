"""One upcoming run in the schedule table: the next occurrence of an active job, a pending retry,
or a manual run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from scheduler.runs.run_models import RunTrigger


class ScheduleItem(BaseModel):
    job_id: str
    user_id: str
    scheduled_at: int  # epoch seconds of the run's scheduled second
    due_at: int  # epoch seconds at which the watcher should enqueue it (retries: their backoff)
    trigger: RunTrigger = RunTrigger.SCHEDULE
    run_key: str | None = None  # set for retries and manual runs: the run already exists
    # A "dead man's switch": at due_at, tell the owner if run_key has not succeeded by then.
    check: bool = False

    def identity(self) -> str:
        """What tells items due in the same second apart (the sort key's suffix): a job has one
        next occurrence, but a retry, a manual run or a check can share its second."""
        if self.check:
            return f"{self.job_id}#{self.run_key}#check"
        if self.trigger is RunTrigger.SCHEDULE:
            return self.job_id
        return f"{self.job_id}#{self.run_key}"

    @classmethod
    def occurrence(cls, job_id: str, user_id: str, instant: datetime) -> ScheduleItem:
        """A job's scheduled occurrence at `instant`."""
        second = int(instant.timestamp())
        return cls(job_id=job_id, user_id=user_id, scheduled_at=second, due_at=second)


def hour_starts(start: datetime, end: datetime) -> Iterator[datetime]:
    """Every UTC hour that [start, end] touches."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour <= end:
        yield hour
        hour += timedelta(hours=1)
