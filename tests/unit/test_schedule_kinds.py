"""One-time `at()` and fixed-rate `rate()` schedules beside cron, with a clock we control: a
one-time job runs once at its wall time in its zone (after the jump if daylight saving skips
it) and then has no next run; a rate runs every N minutes, hours or days aligned to the epoch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from scheduler.errors import InvalidInput
from scheduler.jobs.job_models import JobCreate
from scheduler.jobs.job_service import JobService
from scheduler.schedule.cron import next_occurrence, upcoming
from unit.fakes import (
    FakeClock,
    FakeJobStore,
    FakeRunStore,
    FakeScheduleStore,
    FakeScriptStore,
    watcher_over,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_one_time_schedule_fires_once_at_its_wall_time_in_its_zone() -> None:
    at = "at(2026-12-24T18:00)"
    assert next_occurrence(at, "Europe/Paris", utc(2026, 12, 1)) == utc(2026, 12, 24, 17)
    assert upcoming(at, "Europe/Paris", utc(2026, 12, 1), 3) == [(utc(2026, 12, 24, 17), None)]
    assert upcoming(at, "Europe/Paris", utc(2026, 12, 25), 3) == []
    # A wall time that a jump skips runs after it, marked
    assert upcoming("at(2026-03-08T02:30)", "America/New_York", utc(2026, 3, 1), 1) == [
        (utc(2026, 3, 8, 7, 30), "shifted")
    ]


def test_a_rate_runs_every_period_aligned_to_the_epoch() -> None:
    after = utc(2026, 12, 1, 10, 7, 30)
    assert [at for at, _ in upcoming("rate(15 minutes)", "Asia/Kolkata", after, 3)] == [
        utc(2026, 12, 1, 10, 15),
        utc(2026, 12, 1, 10, 30),
        utc(2026, 12, 1, 10, 45),
    ]
    assert next_occurrence("rate(2 hours)", "UTC", after) == utc(2026, 12, 1, 12)
    assert next_occurrence("rate(1 day)", "UTC", after) == utc(2026, 12, 2)


@pytest.mark.parametrize(
    "schedule",
    ["at(2026-13-01T00:00)", "at(tomorrow)", "rate(0 minutes)", "rate(5 weeks)", "rate(5)"],
)
def test_malformed_one_time_and_rate_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(ValidationError, match="at\\(YYYY-MM-DDTHH:MM"):
        JobCreate(name="x", schedule=schedule, script="1")


def test_a_one_time_job_runs_once_then_has_no_next_run() -> None:
    clock = FakeClock(utc(2026, 12, 24, 16, 50))
    schedule = FakeScheduleStore()
    jobs, runs = FakeJobStore(schedule), FakeRunStore(schedule)
    service = JobService(jobs, FakeScriptStore(), clock=clock)
    job = service.create(
        "alice",
        JobCreate(
            name="once", schedule="at(2026-12-24T18:00)", timezone="Europe/Paris", script="1"
        ),
    )
    assert job.next_run_at == utc(2026, 12, 24, 17)
    watcher = watcher_over(jobs, schedule, runs, clock)
    for _ in range(20):
        watcher.tick()
        clock.advance(60)
    assert [run.scheduled_at for run in runs.all()] == [utc(2026, 12, 24, 17)]
    stored = jobs.get(job.job_id)
    assert stored is not None
    assert stored.next_run_at is None
    assert jobs.upcoming() == []

    # And one in the past is refused
    with pytest.raises(InvalidInput, match="never fires"):
        service.create("alice", JobCreate(name="late", schedule="at(2026-12-01T00:00)", script="1"))
