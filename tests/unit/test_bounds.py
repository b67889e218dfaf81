"""Start and end bounds of a job, on in-memory stores with a clock we control: no run before
start_at, none after end_at, after which the job has no next run (completed); bounds that leave
no occurrence are refused; an update can move or clear them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from scheduler.errors import InvalidInput
from scheduler.jobs.job_models import JobCreate, JobUpdate
from scheduler.jobs.job_service import JobService
from scheduler.pipeline.watcher import Watcher
from scheduler.schedule.cron import next_within
from unit.fakes import (
    FakeClock,
    FakeJobStore,
    FakeRunStore,
    FakeScheduleStore,
    FakeScriptStore,
    watcher_over,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_next_run_respects_both_bounds() -> None:
    hourly = "0 * * * *"
    assert next_within(hourly, "UTC", NOW, start_at=utc(2026, 12, 2, 15)) == utc(2026, 12, 2, 15)
    assert next_within(hourly, "UTC", NOW, start_at=utc(2026, 12, 2, 15, 1)) == utc(2026, 12, 2, 16)
    assert next_within(hourly, "UTC", NOW, end_at=utc(2026, 12, 1, 10)) == utc(2026, 12, 1, 10)
    assert next_within(hourly, "UTC", NOW, end_at=utc(2026, 12, 1, 9, 59)) is None


def setup() -> tuple[FakeClock, FakeJobStore, FakeRunStore, JobService, Watcher]:
    clock = FakeClock(NOW)
    schedule = FakeScheduleStore()
    jobs, runs = FakeJobStore(schedule), FakeRunStore(schedule)
    watcher = watcher_over(jobs, schedule, runs, clock)
    return clock, jobs, runs, JobService(jobs, FakeScriptStore(), clock=clock), watcher


def test_a_bounded_job_runs_only_inside_its_bounds_then_completes() -> None:
    # Given a job every 10 minutes from 09:30 to 10:00
    clock, jobs, runs, service, watcher = setup()
    body = JobCreate(
        name="bounded",
        schedule="*/10 * * * *",
        script="1",
        start_at=utc(2026, 12, 1, 9, 30),
        end_at=utc(2026, 12, 1, 10, 0),
    )
    job = service.create("alice", body)
    assert job.next_run_at == utc(2026, 12, 1, 9, 30)

    # When the watcher ticks every minute until 10:30
    while clock() < utc(2026, 12, 1, 10, 30):
        watcher.tick()
        clock.advance(60)

    # Then it ran at 09:30, 09:40, 09:50 and 10:00 only, and has no next run
    times = sorted(run.scheduled_at for run in runs.all())
    assert times == [utc(2026, 12, 1, 9, minute) for minute in (30, 40, 50)] + [
        utc(2026, 12, 1, 10)
    ]
    stored = jobs.get(job.job_id)
    assert stored is not None
    assert stored.next_run_at is None


def test_bounds_that_leave_no_run_or_are_out_of_order_are_refused() -> None:
    _, _, _, service, _ = setup()
    with pytest.raises(InvalidInput, match="no occurrence"):
        service.create(
            "alice",
            JobCreate(
                name="never", schedule="0 3 * * *", script="1", end_at=NOW + timedelta(hours=1)
            ),
        )
    with pytest.raises(ValidationError, match="end_at must be after start_at"):
        JobCreate(name="x", schedule="0 3 * * *", script="1", start_at=NOW, end_at=NOW)


def test_an_update_moves_or_clears_the_bounds() -> None:
    _, _, _, service, _ = setup()
    job = service.create(
        "alice",
        JobCreate(name="later", schedule="0 * * * *", script="1", start_at=utc(2026, 12, 5)),
    )
    assert job.next_run_at == utc(2026, 12, 5)
    moved = service.update("alice", job.job_id, JobUpdate(start_at=utc(2026, 12, 3)))
    assert moved.next_run_at == utc(2026, 12, 3)
    cleared = service.update("alice", job.job_id, JobUpdate.model_validate({"start_at": None}))
    assert (cleared.start_at, cleared.next_run_at) == (None, utc(2026, 12, 1, 10))
    with pytest.raises(InvalidInput, match="end_at must be after start_at"):
        service.update(
            "alice", job.job_id, JobUpdate(start_at=utc(2026, 12, 9), end_at=utc(2026, 12, 8))
        )
