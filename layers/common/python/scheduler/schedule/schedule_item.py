"""One upcoming run in the schedule table: the next occurrence of an active job, a pending retry,
or a manual run."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from scheduler.runs.run_models import RunTrigger


def jitter_offset(job_id: str, second: int, jitter_seconds: int) -> int:
    """Seconds after its scheduled second that an occurrence starts: spread over
    [0, jitter_seconds], the same for the same job and occurrence every time it is computed (a
    retry, a catch-up, two takers agree), different across jobs that say `0 * * * *`."""
    if jitter_seconds <= 0:
        return 0
    return zlib.crc32(f"{job_id}/{second}".encode()) % (jitter_seconds + 1)


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
    def occurrence(
        cls, job_id: str, user_id: str, instant: datetime, jitter_seconds: int = 0
    ) -> ScheduleItem:
        """A job's scheduled occurrence at `instant`, due (and started) its jitter later."""
        second = int(instant.timestamp())
        due = second + jitter_offset(job_id, second, jitter_seconds)
        return cls(job_id=job_id, user_id=user_id, scheduled_at=second, due_at=due)


def hour_starts(start: datetime, end: datetime) -> Iterator[datetime]:
    """Every UTC hour that [start, end] touches."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour <= end:
        yield hour
        hour += timedelta(hours=1)
