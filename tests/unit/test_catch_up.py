"""Catch-up after an outage, on in-memory stores with a clock we control: a 3-hour watcher
outage over every-minute jobs ends with every missed occurrence either run or recorded SKIPPED
with why (per the job's policy), none lost, none twice, and each tick's work bounded by the
watcher's max window (30 minutes of occurrences per job, however long the outage)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from scheduler import keys
from scheduler.jobs.job_models import CatchUp, CatchUpPolicy, Job
from scheduler.pipeline.due_runs import MISSED_AFTER_SECONDS
from scheduler.runs.run_models import RunStatus
from scheduler.times import epoch
from unit.fakes import (
    FakeClock,
    FakeJobStore,
    FakeRunStore,
    FakeScheduleStore,
    make_job,
    watcher_over,
)

DOWN = datetime(2026, 11, 27, 9, 0, 30, tzinfo=UTC)  # the last tick before the outage
BACK = DOWN + timedelta(hours=3)
MAX_WINDOW = 1800
JOBS = 5


def outage(catch_up: CatchUp) -> tuple[list[Job], FakeRunStore, list[int]]:
    """Every-minute jobs, the watcher down for 3 hours, then ticking each minute until it has
    caught up; returns the jobs, the runs and each tick's item count."""
    clock = FakeClock(DOWN)
    schedule = FakeScheduleStore()
    jobs, runs = FakeJobStore(schedule), FakeRunStore(schedule)
    created = []
    for i in range(JOBS):
        job = make_job(now=DOWN, name=f"minutely-{i}", schedule="* * * * *")
        job = job.model_copy(update={"catch_up": catch_up})
        jobs.create(job, keys.script_key(job.script_sha256))
        created.append(job)
    watcher = watcher_over(jobs, schedule, runs, clock, max_window_seconds=MAX_WINDOW)
    schedule.advance_cursor(epoch(DOWN))
    clock.set(BACK)
    items = []
    for _ in range(60):  # until a tick covers up to its own time: caught up
        tick_at = clock()
        items.append(watcher.tick().items)
        if schedule.cursor() == epoch(tick_at):
            break
        clock.advance(60)
    return created, runs, items


def minutes_missed() -> list[int]:
    first = epoch(DOWN) // 60 * 60 + 60
    return list(range(first, epoch(BACK) - MISSED_AFTER_SECONDS, 60))


@pytest.mark.parametrize("policy", list(CatchUpPolicy))
def test_every_missed_occurrence_is_run_or_skipped_with_why_and_none_twice(
    policy: CatchUpPolicy,
) -> None:
    jobs, runs, items = outage(CatchUp(policy=policy, window_seconds=3600))
    missed = minutes_missed()
    for job in jobs:
        mine = [r for r in runs.all() if r.job_id == job.job_id]
        seconds = Counter(r.execution_time for r in mine)
        # None lost, none twice: one run record per missed minute (and the later ones)
        assert set(missed) <= set(seconds), job.name
        assert max(seconds.values()) == 1
        skipped = [r for r in mine if r.status is RunStatus.SKIPPED]
        assert all(r.error and r.error.startswith("skipped: ") for r in skipped)
        assert {r.status for r in mine} <= {RunStatus.QUEUED, RunStatus.SKIPPED}
        # Runs queued over a minute after their second: the catch-up's runs
        late = [
            r
            for r in mine
            if r.status is RunStatus.QUEUED
            and r.queued_at is not None
            and epoch(r.queued_at) - r.execution_time > MISSED_AFTER_SECONDS
        ]
        if policy is CatchUpPolicy.NONE:
            assert late == []
        elif policy is CatchUpPolicy.LATEST:
            assert len(late) == 1  # one run for everything missed
        else:  # ALL, within the window: an hour's worth, each at most an hour late
            assert len(late) >= 55
            assert all(epoch(r.queued_at) - r.execution_time <= 3600 for r in late if r.queued_at)
    # Bounded work: no tick took more than 30 minutes of occurrences (+ its look-ahead) a job
    assert max(items) <= JOBS * (MAX_WINDOW + 90) // 60 + JOBS
    assert len(items) >= (3 * 3600) // MAX_WINDOW
