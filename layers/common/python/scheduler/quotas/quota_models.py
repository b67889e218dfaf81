"""Per-owner quotas (docs/architecture.md, "Quotas"): the limits a deployment sets, and the
per-minute counters that enforce the rate quotas. Every counter is changed by one conditional
write in DynamoDB (alone, or in the transaction of what it counts), never read and then written,
so concurrent requests cannot race past a limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from scheduler import keys
from scheduler.errors import QuotaExceeded
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import epoch

MINUTE = 60
# A minute's counter is kept a while after its minute (DynamoDB's TTL deletes it later still).
COUNTER_TTL_SECONDS = 3600

JOBS_PER_OWNER = "jobs_per_owner"
RUNS_PER_MINUTE = "runs_per_minute"
RUN_NOW_PER_MINUTE = "run_now_per_minute"
CONCURRENT_RUNS = "concurrent_runs"


@dataclass(frozen=True, kw_only=True)
class Quotas:
    """One owner's limits (template parameters, the functions' settings)."""

    jobs_per_owner: int = 1000
    runs_per_minute: int = 600
    run_now_per_minute: int = 30
    concurrent_runs: int = 100


def minute_of(second: int) -> int:
    """The first second of the minute holding `second`."""
    return second - second % MINUTE


@dataclass(frozen=True)
class MinuteCounter:
    """An owner's count of one rate quota in one minute: at most `limit`."""

    user_id: str
    quota: str
    minute: int  # epoch seconds of the minute's first second
    limit: int

    @property
    def pk(self) -> str:
        return keys.quota_window_pk(self.user_id, self.quota, self.minute)

    @property
    def expires_at(self) -> int:
        return self.minute + COUNTER_TTL_SECONDS

    def next(self) -> MinuteCounter:
        return MinuteCounter(self.user_id, self.quota, self.minute + MINUTE, self.limit)

    def exceeded(self, now: datetime, what: str) -> QuotaExceeded:
        """The error of a request refused by this counter, retried when its minute is over."""
        retry_after = max(1, self.minute + MINUTE - epoch(now))
        return QuotaExceeded(
            f"quota {self.quota} exceeded: at most {self.limit} {what} per minute per owner; "
            f"retry in {retry_after} s",
            quota=self.quota,
            limit=self.limit,
            retry_after_seconds=retry_after,
        )


def counter_at(user_id: str, quota: str, second: int, limit: int) -> MinuteCounter:
    return MinuteCounter(user_id, quota, minute_of(second), limit)


def jobs_exceeded(limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"quota {JOBS_PER_OWNER} exceeded: at most {limit} jobs per owner; delete one first",
        quota=JOBS_PER_OWNER,
        limit=limit,
    )


class QuotaCounters(Protocol):
    def take(self, counter: MinuteCounter, amount: int = 1) -> bool:
        """Count `amount` more in the counter if that keeps it within its limit (atomically);
        False, and nothing counted, if it would not."""

    def take_up_to(self, counter: MinuteCounter, amount: int) -> int:
        """Count as many of `amount` as the counter has room for (all of them, or what is left
        of its limit, or none); how many were counted."""

    def uncount(self, counter: MinuteCounter, amount: int) -> None:
        """Take back `amount` counted for what was not created after all (a second taker)."""


class Places(Protocol):
    """An owner's concurrent_runs places, taken and given back per pack: a pack's place item
    (a ScheduleItem with `place` set) and the owner's count change together."""

    def take(self, place: ScheduleItem, limit: int) -> bool:
        """Write the place item and count its places, if that keeps the owner within `limit`;
        False, and nothing written, if it would not."""

    def give_back(self, place: ScheduleItem) -> bool:
        """Delete the place item and uncount its places, once: False if it was gone."""

    def move(self, place: ScheduleItem, due_at: int) -> ScheduleItem | None:
        """The place item, due later (its runs are still under way); None if it was gone."""
