"""Per-owner quotas on in-memory stores that keep the repositories' conditional writes: each
quota refuses at its limit with QuotaExceeded (429 + Retry-After in the API), and a per-minute
quota has room again in the next minute (a clock we move)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.api.error_responses import answer_for, headers_for
from scheduler.errors import QuotaExceeded
from scheduler.jobs.job_models import BackfillRequest, JobCreate, RunNowRequest
from scheduler.jobs.job_service import JobService
from scheduler.quotas.quota_models import Quotas
from scheduler.runs.run_service import RunService
from unit.fakes import (
    FakeClock,
    FakeJobStore,
    FakeQuotaCounters,
    FakeRunQueue,
    FakeRunStore,
    FakeScheduleStore,
    FakeScriptStore,
    add_job,
)

START = datetime(2026, 11, 27, 11, 30, 10, tzinfo=UTC)  # 50 s before the minute ends


def job_body(name: str, **fields: Any) -> JobCreate:
    return JobCreate.model_validate(
        {"name": name, "schedule": "0 3 * * *", "script": "print(1)\n"} | fields
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def schedule() -> FakeScheduleStore:
    return FakeScheduleStore()


# -- jobs per owner -----------------------------------------------------------------------------


def test_jobs_per_owner_refuses_at_its_limit_and_a_delete_frees_a_place(
    schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    jobs = FakeJobStore(schedule, jobs_per_owner=2)
    service = JobService(jobs, FakeScriptStore(), clock=clock)
    first = service.create("alice", job_body("a"))
    service.create("alice", job_body("b"))

    # A third is refused, naming the quota and its limit, with nothing written
    with pytest.raises(QuotaExceeded) as refused:
        service.create("alice", job_body("c"))
    assert refused.value.quota == "jobs_per_owner"
    assert refused.value.limit == 2
    assert "jobs_per_owner" in refused.value.message
    assert "2" in refused.value.message
    assert refused.value.retry_after_seconds is None  # only a delete frees one
    assert len(jobs.all()) == 2
    # Another owner has a quota of its own
    service.create("bob", job_body("c"))

    # A delete frees a place
    service.delete("alice", first.job_id)
    service.create("alice", job_body("c"))


def test_the_429_answer_and_its_retry_after() -> None:
    timed = QuotaExceeded("x", quota="run_now_per_minute", limit=3, retry_after_seconds=17)
    answer = answer_for(timed)
    assert answer is not None
    assert answer.status == 429
    assert headers_for(timed) == {"Retry-After": "17"}
    assert headers_for(QuotaExceeded("x", quota="jobs_per_owner", limit=3)) == {}


# -- run now ------------------------------------------------------------------------------------


def run_service(
    schedule: FakeScheduleStore, jobs: FakeJobStore, clock: FakeClock, quotas: Quotas
) -> tuple[RunService, FakeQuotaCounters]:
    counters = FakeQuotaCounters()
    service = RunService(
        jobs,
        FakeRunStore(schedule),
        clock=clock,
        schedule=schedule,
        queue=FakeRunQueue(),
        quotas=quotas,
        counters=counters,
    )
    return service, counters


def test_run_now_per_minute_refuses_at_its_limit_and_resets_in_the_next_minute(
    schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    jobs = FakeJobStore(schedule)
    job = add_job(jobs, now=START, name="hourly")
    service, _ = run_service(schedule, jobs, clock, Quotas(run_now_per_minute=3))
    for _ in range(3):
        service.run_now("alice", job.job_id, RunNowRequest())

    with pytest.raises(QuotaExceeded) as refused:
        service.run_now("alice", job.job_id, RunNowRequest())
    assert refused.value.quota == "run_now_per_minute"
    assert refused.value.limit == 3
    # The minute ends 50 s after 11:30:10 (the request's second is 11:30:10)
    assert refused.value.retry_after_seconds == 50
    assert "run_now_per_minute" in refused.value.message

    # Still refused at the minute's last second; room again at the next minute's first
    clock.set(datetime(2026, 11, 27, 11, 30, 59, tzinfo=UTC))
    with pytest.raises(QuotaExceeded):
        service.run_now("alice", job.job_id, RunNowRequest())
    clock.set(datetime(2026, 11, 27, 11, 31, 0, tzinfo=UTC))
    service.run_now("alice", job.job_id, RunNowRequest())


def test_runs_per_minute_counts_run_now_and_backfill_runs(
    schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    jobs = FakeJobStore(schedule)
    job = add_job(jobs, now=START, name="hourly", schedule="0 * * * *")
    service, _ = run_service(schedule, jobs, clock, Quotas(runs_per_minute=4))
    service.run_now("alice", job.job_id, RunNowRequest())

    # A backfill of 3 hourly occurrences fits (1 + 3 = 4) ...
    span = {"from": "2026-11-27T08:00:00Z", "to": "2026-11-27T10:00:00Z"}
    result = service.backfill("alice", job.job_id, BackfillRequest.model_validate(span))
    assert [o.result for o in result.occurrences] == ["created"] * 3
    # ... and then the minute is full, for run now as for backfill
    with pytest.raises(QuotaExceeded) as refused:
        service.run_now("alice", job.job_id, RunNowRequest())
    assert refused.value.quota == "runs_per_minute"
    one = {"from": "2026-11-27T07:00:00Z", "to": "2026-11-27T07:30:00Z"}
    with pytest.raises(QuotaExceeded):
        service.backfill("alice", job.job_id, BackfillRequest.model_validate(one))
    # A dry run starts nothing and is not counted
    dry = BackfillRequest.model_validate(one | {"dry_run": True})
    assert service.backfill("alice", job.job_id, dry).occurrences

    clock.advance(60)
    service.backfill("alice", job.job_id, BackfillRequest.model_validate(one))
