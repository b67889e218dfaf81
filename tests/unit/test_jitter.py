"""Jitter, on in-memory stores with a clock we control: jobs that all say `0 * * * *` with a
jitter start spread over it, each occurrence at the same offset every time it is computed, and
the run keeps its scheduled second as its key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler import keys
from scheduler.jobs.job_models import JobCreate, JobUpdate
from scheduler.jobs.job_service import JobService
from scheduler.schedule.schedule_item import jitter_offset
from scheduler.times import epoch
from unit.fakes import (
    FakeClock,
    FakeJobStore,
    FakeRunStore,
    FakeScheduleStore,
    FakeScriptStore,
    watcher_over,
)

NOW = datetime(2026, 12, 1, 9, 50, tzinfo=UTC)
TEN = datetime(2026, 12, 1, 10, tzinfo=UTC)


def test_an_offset_is_the_same_every_time_and_within_the_jitter() -> None:
    offsets = {jitter_offset(f"job-{i}", epoch(TEN), 600) for i in range(200)}
    assert offsets <= set(range(601))
    assert len(offsets) > 100  # spread, not bunched
    assert jitter_offset("job-1", epoch(TEN), 600) == jitter_offset("job-1", epoch(TEN), 600)
    assert jitter_offset("job-1", epoch(TEN), 0) == 0


def test_hourly_jobs_with_jitter_start_spread_over_it_keyed_by_their_second() -> None:
    # Given fifty hourly jobs with ten minutes of jitter
    clock = FakeClock(NOW)
    schedule = FakeScheduleStore()
    jobs, runs = FakeJobStore(schedule), FakeRunStore(schedule)
    service = JobService(jobs, FakeScriptStore(), clock=clock)
    created = [
        service.create(
            "alice",
            JobCreate(name=f"hourly-{i}", schedule="0 * * * *", script="1", jitter_seconds=600),
        )
        for i in range(50)
    ]
    watcher = watcher_over(jobs, schedule, runs, clock)

    # When the watcher ticks every minute through 10:00-10:15
    while clock() < TEN + timedelta(minutes=15):
        watcher.tick()
        clock.advance(60)

    # Then each job's 10:00 run starts at 10:00 plus its own offset, keyed by 10:00
    starts = []
    for job in created:
        run = runs.get(job.job_id, keys.run_key(TEN, job.job_id))
        assert run is not None, job.name
        assert run.not_before == epoch(TEN) + jitter_offset(job.job_id, epoch(TEN), 600)
        starts.append(run.not_before - epoch(TEN))
    assert max(starts) - min(starts) > 300

    # And a change of jitter moves the upcoming item with it
    job = created[0]
    service.update("alice", job.job_id, JobUpdate(jitter_seconds=0))
    (item,) = jobs.upcoming(job.job_id)
    assert item.due_at == item.scheduled_at == epoch(TEN + timedelta(hours=1))
