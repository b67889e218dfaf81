"""One upcoming run in the schedule table: the next occurrence of an active job, a pending retry,
or a manual run."""

from __future__ import annotations

import json
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
    # A pack's concurrent_runs places (docs/architecture.md, "Quotas"): `place` is its id (the
    # claim it was dispatched under), `count` the places it holds, `runs` its runs
    # (keys.format_run_refs). Given back when its task stops; due when its runs' deadlines
    # have passed, for the watcher to give back if that stop was never seen.
    place: str | None = None
    count: int | None = None
    runs: str | None = None

    def identity(self) -> str:
        """What tells items due in the same second apart (the sort key's suffix): a job has one
        next occurrence, but a retry, a manual run, a check or a pack's places can share its
        second."""
        if self.place is not None:
            return f"{self.job_id}#place#{self.place}"
        if self.check:
            return f"{self.job_id}#{self.run_key}#check"
        if self.trigger is RunTrigger.SCHEDULE:
            return self.job_id
        return f"{self.job_id}#{self.run_key}"

    def is_occurrence(self) -> bool:
        """A job's scheduled occurrence (not a retry, manual run, check or pack place)."""
        return self.trigger is RunTrigger.SCHEDULE and not self.check and self.place is None

    def place_ref(self) -> str:
        """What a task carries to find its pack's place item when it stops (task_events)."""
        return self.model_dump_json(include={"job_id", "user_id", "due_at", "place", "count"})

    @classmethod
    def from_place_ref(cls, text: str) -> ScheduleItem | None:
        try:
            fields = json.loads(text)
            item = cls.model_validate(fields | {"scheduled_at": fields["due_at"]})
        except (ValueError, KeyError, TypeError):
            return None
        return item if item.place is not None and item.count is not None else None

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
