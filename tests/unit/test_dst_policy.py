"""A DST policy per job, across the New York, London and Lord Howe changes: for a wall time the
clock jumps over, SHIFT (today's rule: 02:30 -> 03:30), NEXT_VALID (the first time after the
jump) or SKIP (not that day); for one it passes twice, FIRST, LAST or BOTH. The default stays
today's behaviour."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.jobs.job_models import JobCreate, JobUpdate
from scheduler.jobs.job_service import JobService
from scheduler.schedule.cron import DstPolicy, Gap, Repeat, upcoming
from unit.fakes import FakeClock, FakeJobStore, FakeScheduleStore, FakeScriptStore


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "schedule", "after", "gap", "expected"),
    [
        # New York 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC)
        ("America/New_York", "30 2 * * *", utc(2026, 3, 8), None, utc(2026, 3, 8, 7, 30)),
        ("America/New_York", "30 2 * * *", utc(2026, 3, 8), Gap.SHIFT, utc(2026, 3, 8, 7, 30)),
        ("America/New_York", "30 2 * * *", utc(2026, 3, 8), Gap.NEXT_VALID, utc(2026, 3, 8, 7)),
        ("America/New_York", "30 2 * * *", utc(2026, 3, 8), Gap.SKIP, utc(2026, 3, 9, 6, 30)),
        # London 2026-03-29: 01:00 GMT -> 02:00 BST (01:00 UTC)
        ("Europe/London", "15 1 * * *", utc(2026, 3, 29), Gap.NEXT_VALID, utc(2026, 3, 29, 1)),
        ("Europe/London", "15 1 * * *", utc(2026, 3, 29), Gap.SKIP, utc(2026, 3, 30, 0, 15)),
        # Lord Howe 2026-10-04: 02:00 -> 02:30 (a half-hour jump, 15:30 UTC the day before)
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            utc(2026, 10, 3, 12),
            Gap.NEXT_VALID,
            utc(2026, 10, 3, 15, 30),
        ),
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            utc(2026, 10, 3, 12),
            Gap.SHIFT,
            utc(2026, 10, 3, 15, 45),
        ),
    ],
)
def test_a_skipped_wall_time_follows_the_jobs_gap_policy(
    zone: str, schedule: str, after: datetime, gap: Gap | None, expected: datetime
) -> None:
    ((at, _),) = upcoming(schedule, zone, after, 1, DstPolicy(gap=gap))
    assert at == expected


@pytest.mark.parametrize(
    ("repeat", "expected"),
    [
        (None, [utc(2026, 11, 1, 5, 30)]),  # today's rule: the first pass
        (Repeat.FIRST, [utc(2026, 11, 1, 5, 30)]),
        (Repeat.LAST, [utc(2026, 11, 1, 6, 30)]),
        (Repeat.BOTH, [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)]),
    ],
)
def test_a_repeated_wall_time_follows_the_jobs_repeat_policy(
    repeat: Repeat | None, expected: list[datetime]
) -> None:
    # New York 2026-11-01: 01:00-02:00 is passed twice (EDT, then EST)
    found = upcoming(
        "30 1 * * *", "America/New_York", utc(2026, 11, 1), 3, DstPolicy(repeat=repeat)
    )
    on_the_day = [at for at, _ in found if at < utc(2026, 11, 2)]
    assert on_the_day == expected


def test_sub_hourly_schedules_keep_running_in_both_passes_unless_told_otherwise() -> None:
    after = utc(2026, 11, 1, 5, 40)  # 01:40 EDT, in the first pass
    default = [at for at, _ in upcoming("*/30 * * * *", "America/New_York", after, 3)]
    assert default == [utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7)]
    first = upcoming("*/30 * * * *", "America/New_York", after, 2, DstPolicy(repeat=Repeat.FIRST))
    assert [at for at, _ in first] == [utc(2026, 11, 1, 7), utc(2026, 11, 1, 7, 30)]


def test_a_job_keeps_its_policy_and_an_update_reschedules_by_it() -> None:
    clock = FakeClock(utc(2026, 3, 7, 12))
    jobs = FakeJobStore(FakeScheduleStore())
    service = JobService(jobs, FakeScriptStore(), clock=clock)
    job = service.create(
        "alice",
        JobCreate(
            name="nightly",
            schedule="30 2 8 3 *",
            timezone="America/New_York",
            script="1",
            dst=DstPolicy(gap=Gap.SKIP),
        ),
    )
    assert job.next_run_at == utc(2027, 3, 8, 7, 30)  # 2026's 02:30 does not exist: skipped
    moved = service.update("alice", job.job_id, JobUpdate(dst=DstPolicy(gap=Gap.NEXT_VALID)))
    assert moved.next_run_at == utc(2026, 3, 8, 7)
    stored = jobs.get(job.job_id)
    assert stored is not None
    assert stored.dst == DstPolicy(gap=Gap.NEXT_VALID)
