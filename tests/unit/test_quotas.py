"""Per-owner quotas on in-memory stores that keep the repositories' conditional writes: each
quota refuses at its limit with QuotaExceeded (429 + Retry-After in the API), and a per-minute
quota has room again in the next minute (a clock we move)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler import keys
from scheduler.api.error_responses import answer_for, headers_for
from scheduler.errors import QuotaExceeded
from scheduler.jobs.job_models import BackfillRequest, JobCreate, RunNowRequest
from scheduler.jobs.job_service import JobService
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun
from scheduler.pipeline.due_runs import DispatchPolicy, DueRuns
from scheduler.pipeline.executor import Executor
from scheduler.pipeline.ports import DispatchFailed
from scheduler.quotas.quota_models import Quotas
from scheduler.runs.run_models import Run, RunReport, RunStatus, RunTrigger, new_run
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.runs.run_service import RunService
from scheduler.times import epoch, from_epoch
from unit.fakes import (
    FakeClock,
    FakeDispatchBackend,
    FakeJobStore,
    FakePlaces,
    FakeQuotaCounters,
    FakeRunObjects,
    FakeRunQueue,
    FakeRunStore,
    FakeScheduleStore,
    FakeScriptStore,
    add_job,
    watcher_over,
)

START = datetime(2026, 11, 27, 11, 30, 10, tzinfo=UTC)  # 50 s before the minute ends


def job_body(name: str, **fields: Any) -> JobCreate:
    return JobCreate.model_validate(
        {"name": name, "schedule": "0 3 * * *", "script": "print(1)\n"} | fields
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


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


# -- scheduled runs: deferred, never dropped ----------------------------------------------------

TICK = datetime(2026, 11, 27, 11, 59, tzinfo=UTC)  # window [11:54:00, 12:00:30]
NOON = datetime(2026, 11, 27, 12, tzinfo=UTC)


def test_scheduled_runs_past_runs_per_minute_are_deferred_to_the_next_minute_not_dropped(
    schedule: FakeScheduleStore,
) -> None:
    clock = FakeClock(TICK)
    counters = FakeQuotaCounters()
    jobs = FakeJobStore(schedule)
    runs = FakeRunStore(schedule, counters=counters)
    queue = FakeRunQueue()
    created = datetime(2026, 11, 27, 11, 30, tzinfo=UTC)
    alice = [add_job(jobs, now=created, name=f"a{i}") for i in range(5)]  # all at 12:00
    bob = add_job(jobs, now=created, user_id="bob", name="b")
    watcher = watcher_over(
        jobs, schedule, runs, clock, queue=queue, lookahead_seconds=90, runs_per_minute=3
    )

    # The 11:59 tick: 3 of alice's runs start at 12:00, 2 are deferred to 12:01; bob's own
    # quota is untouched by alice's
    report = watcher.tick()
    assert report.deferred == 2
    mine = [r for r in runs.all() if r.user_id == "alice"]
    assert len(mine) == 5  # every occurrence has its run
    on_time = [r for r in mine if r.not_before == epoch(NOON)]
    deferred = [r for r in mine if r.not_before == epoch(NOON) + 60]
    assert len(on_time) == 3
    assert len(deferred) == 2
    assert all(r.status is RunStatus.QUEUED and r.deferred is None for r in on_time)
    for run in deferred:
        assert run.status is RunStatus.PENDING  # not sent: its start is past this window
        assert run.deferred is not None
        assert "runs_per_minute" in run.deferred
        assert "(3)" in run.deferred
    sent = {key for key, _ in queue.accepted_runs()}
    assert {r.key for r in on_time} <= sent
    assert not {r.key for r in deferred} & sent
    bobs = [r for r in runs.all() if r.user_id == "bob"]
    assert [(r.status, r.not_before) for r in bobs] == [(RunStatus.QUEUED, epoch(NOON))]
    # Each job's schedule moved on to 13:00 meanwhile
    stored = [jobs.get(job.job_id) for job in [*alice, bob]]
    assert {job.next_run_at for job in stored if job is not None} == {NOON.replace(hour=13)}

    # A second tick over the same window counts nothing twice and defers nothing more
    assert watcher.tick().deferred == 0
    assert sorted(counters.counts.values()) == [1, 2, 3]  # bob 12:00, alice 12:01, alice 12:00

    # The next minute has room: the 12:00 tick sends the deferred runs, to start at 12:01
    clock.set(NOON)
    watcher.tick()
    sent = {key for key, _ in queue.accepted_runs()}
    assert {r.key for r in deferred} <= sent
    now_stored = [runs.get(r.job_id, r.key) for r in deferred]
    assert [r.status if r else None for r in now_stored] == [RunStatus.QUEUED] * 2


def test_a_ticks_runs_of_one_owner_and_minute_are_counted_in_one_write(
    schedule: FakeScheduleStore,
) -> None:
    clock = FakeClock(TICK)
    counters = FakeQuotaCounters()
    jobs = FakeJobStore(schedule)
    runs = FakeRunStore(schedule, counters=counters)
    created = datetime(2026, 11, 27, 11, 30, tzinfo=UTC)
    for i in range(5):
        add_job(jobs, now=created, name=f"a{i}")
    for i in range(2):
        add_job(jobs, now=created, user_id="bob", name=f"b{i}")
    watcher = watcher_over(jobs, schedule, runs, clock, runs_per_minute=10)

    watcher.tick()

    # One conditional ADD per owner and minute, not one per run
    assert len(runs.all()) == 7
    assert sorted(counters.writes) == sorted(
        [
            (keys.quota_window_pk("alice", "runs_per_minute", epoch(NOON)), 5),
            (keys.quota_window_pk("bob", "runs_per_minute", epoch(NOON)), 2),
        ]
    )
    assert all(r.status is RunStatus.QUEUED and r.deferred is None for r in runs.all())


def test_a_second_taker_of_an_occurrence_takes_its_count_back(
    schedule: FakeScheduleStore,
) -> None:
    # Given an occurrence taken by a tick, and a second taker that read the same item before
    # the tick moved it on (an overlapping tick, or an API call's early take)
    clock = FakeClock(TICK)
    counters = FakeQuotaCounters()
    jobs = FakeJobStore(schedule)
    runs = FakeRunStore(schedule, counters=counters)
    job = add_job(jobs, now=datetime(2026, 11, 27, 11, 30, tzinfo=UTC), name="a")
    (item,) = schedule.items(job.job_id)
    watcher_over(jobs, schedule, runs, clock, runs_per_minute=10).tick()
    pk = keys.quota_window_pk("alice", "runs_per_minute", epoch(NOON))
    assert counters.counts == {pk: 1}

    # When the second taker takes it too
    queue = FakeRunQueue()
    policy = DispatchPolicy(
        lookahead_seconds=90,
        pack_window_seconds=5,
        max_runs_per_task=10,
        dispatch_grace_seconds=300,
        runs_per_minute=10,
    )
    due = DueRuns(jobs, schedule, runs, queue, policy, counters)
    due.take([item], {job.job_id: job}, clock(), clock() + timedelta(seconds=90))

    # Then its run is not created twice, and the count it took for it is taken back
    assert len(runs.all()) == 1
    assert counters.counts == {pk: 1}
    assert counters.writes[-2:] == [(pk, 1), (pk, -1)]


class DiesCreatingRuns(FakeRunStore):
    """A runs table whose next `create` raises: the watcher died between counting and creating."""

    dies = True

    def create(self, *args: Any, **kwargs: Any) -> bool:
        if self.dies:
            self.dies = False
            raise TimeoutError("killed between the count and the run's put")
        return super().create(*args, **kwargs)


def test_a_taker_that_dies_after_counting_over_counts_which_defers_a_run_but_drops_none(
    schedule: FakeScheduleStore,
) -> None:
    # Given two of alice's jobs due at 12:00 under a quota of 3, and a tick that dies after
    # counting them, before creating them
    clock = FakeClock(TICK)
    counters = FakeQuotaCounters()
    jobs = FakeJobStore(schedule)
    runs = DiesCreatingRuns(schedule, counters=counters)
    created = datetime(2026, 11, 27, 11, 30, tzinfo=UTC)
    first = add_job(jobs, now=created, name="a", job_id="a")
    second = add_job(jobs, now=created, name="b", job_id="b")
    watcher = watcher_over(jobs, schedule, runs, clock, runs_per_minute=3, workers=1)
    with pytest.raises(TimeoutError):
        watcher.tick()
    pk = keys.quota_window_pk("alice", "runs_per_minute", epoch(NOON))
    assert counters.counts == {pk: 2}

    # When the next tick takes the same items again
    clock.advance(20)
    watcher.tick()

    # Then both runs exist, counted again: the minute has room for one more only, so one of
    # them starts a minute late (recorded, and sent then) instead of on time; neither is lost
    by_job = {r.job_id: r for r in runs.all()}
    assert set(by_job) == {first.job_id, second.job_id}
    assert sorted(r.not_before for r in by_job.values()) == [epoch(NOON), epoch(NOON) + 60]
    late = next(r for r in by_job.values() if r.not_before > epoch(NOON))
    assert late.deferred is not None
    assert late.status is RunStatus.PENDING
    assert counters.counts[pk] == 3  # 2 of the dead tick, 1 of this one: over-counted
    clock.set(NOON)
    watcher.tick()
    sent = runs.get(late.job_id, late.key)
    assert sent is not None
    assert sent.status is RunStatus.QUEUED


# -- the OpenAPI document -----------------------------------------------------------------------


def test_openapi_documents_the_quota_429_and_its_retry_after() -> None:
    from scheduler.api.docs import openapi_document  # builds every router

    paths = json.loads(openapi_document())["paths"]
    for path, method in (
        ("/jobs", "post"),
        ("/jobs/{job_id}/run", "post"),
        ("/jobs/{job_id}/backfill", "post"),
    ):
        answer = paths[path][method]["responses"]["429"]
        assert "quota" in answer["description"], path
        assert "Retry-After" in answer["headers"], path
        refs = json.dumps(answer["content"]["application/json"]["schema"])
        assert "ErrorResponse" in refs, path
        assert "GatewayMessage" in refs, path
    # Every route can meet the stage's throttling
    for path, item in paths.items():
        for method, operation in item.items():
            assert "429" in operation["responses"], (path, method)


# -- concurrent runs per owner: the executor -----------------------------------------------------


def queued(runs: FakeRunStore, job_id: str, clock: FakeClock) -> Run:
    run = new_run(
        job_id=job_id,
        user_id="alice",
        scheduled_second=epoch(NOON),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=3,
        timeout_seconds=120,
        now=clock(),
    )
    assert runs.create(run, keys.script_key("ab" * 32), {})
    assert runs.mark_queued(run, clock(), epoch(NOON) + 600)
    stored = runs.get(run.job_id, run.key)
    assert stored is not None
    return stored


def message(*runs: Run) -> DispatchMessage:
    return DispatchMessage(
        pack_id=f"{runs[0].key}-{runs[0].attempt}",
        user_id="alice",
        runs=[DueRun(job_id=r.job_id, key=r.key, attempt=r.attempt) for r in runs],
    )


def place_executor(
    runs: FakeRunStore,
    backend: FakeDispatchBackend,
    places: FakePlaces,
    clock: FakeClock,
    limit: int,
    *names: str,
) -> Executor:
    jobs = FakeJobStore(FakeScheduleStore())
    for name in names:
        add_job(jobs, now=clock(), name=name, job_id=name)
    return Executor(
        runs,
        backend,
        jobs,
        claim_seconds=60,
        dispatch_grace_seconds=300,
        clock=clock,
        concurrent_runs=limit,
        places=places,
    )


def stopped(backend: FakeDispatchBackend, task: int) -> dict[str, Any]:
    """The task-stopped event of the `task`-th task the backend started (1-based)."""
    from devstack.local_backend import task_stopped_event
    from scheduler.pipeline.ecs_backend import run_refs

    _, specs = backend.dispatched[task - 1]
    place = backend.places[task - 1]
    return task_stopped_event(f"task-{task}", run_refs(specs), 0, "done", place)["detail"]


def outcomes_over(runs: FakeRunStore, places: FakePlaces, clock: FakeClock) -> RunOutcomes:
    return RunOutcomes(
        runs,
        FakeRunObjects(),
        retry_base_seconds=30,
        running_grace_seconds=60,
        clock=clock,
        places=places,
    )


def test_a_run_deferred_for_a_place_keeps_the_pack_claim_of_its_first_claim(
    schedule: FakeScheduleStore,
) -> None:
    # Given a pack of two claimed 20 s late with one place: b waits, 30 s later. Its first
    # claim may already have put it in a task (a RunTask whose answer was lost)
    clock = FakeClock(NOON + timedelta(seconds=20))
    counters = FakeQuotaCounters()
    runs = FakeRunStore(schedule, counters=counters)
    places = FakePlaces(schedule, counters)
    backend = FakeDispatchBackend()
    executor = place_executor(runs, backend, places, clock, 1, "a", "b")
    a, b = (queued(runs, name, clock) for name in ("a", "b"))
    first = message(a, b)
    assert executor.handle(first) == [a.key]
    waiting = runs.get(b.job_id, b.key)
    assert waiting is not None
    assert waiting.not_before == epoch(NOON) + 50

    # When a place is free and it goes out in a pack of its own
    outcomes_over(runs, places, clock).on_task_stopped(stopped(backend, 1))
    assert executor.handle(message(waiting)) == [b.key]

    # Then its task claims it under its first pack and second, as a task of the first pack
    # would: one of the two starts it, not both
    _, (spec,) = backend.dispatched[-1]
    assert (spec.claim_pack, spec.claim_second) == (first.pack_id, epoch(NOON))
    assert spec.not_before == epoch(NOON) + 50


def test_concurrent_runs_are_taken_per_pack_and_given_back_when_its_task_stops(
    schedule: FakeScheduleStore,
) -> None:
    clock = FakeClock(datetime(2026, 11, 27, 11, 59, 10, tzinfo=UTC))
    counters = FakeQuotaCounters()
    runs = FakeRunStore(schedule, counters=counters)
    places = FakePlaces(schedule, counters)
    backend = FakeDispatchBackend()
    executor = place_executor(runs, backend, places, clock, 2, "a", "b", "c")
    a, b, c = (queued(runs, name, clock) for name in ("a", "b", "c"))

    # A pack of three with room for two: two start under one place item, the third waits,
    # recorded, not dropped
    assert sorted(executor.handle(message(a, b, c))) == sorted([a.key, b.key])
    assert counters.running == {"alice": 2}
    (place,) = [i for i in schedule.items() if i.place is not None]
    assert (place.count, place.due_at) == (2, epoch(NOON) + 120 + 300)
    assert backend.places == [place.place_ref()]
    waiting = runs.get(c.job_id, c.key)
    assert waiting is not None
    assert waiting.status is RunStatus.PENDING
    assert waiting.deferred is not None
    assert "concurrent_runs quota (2)" in waiting.deferred
    assert waiting.not_before == epoch(NOON)  # it was queued ahead: it still aims at its second
    items = schedule.items(c.job_id)
    assert [(i.trigger, i.due_at) for i in items] == [(RunTrigger.RETRY, epoch(NOON))]

    # Its message again (the watcher sends it when its item falls due): still no place
    assert executor.handle(message(waiting)) == []
    assert counters.running == {"alice": 2}

    # A run that ends does not give its place back: its task still holds it
    started = runs.get(a.job_id, a.key)
    assert started is not None
    assert runs.cancel(started, "stop", clock())
    assert counters.running == {"alice": 2}

    # The task's stop gives the pack's places back, once however often the event comes
    outcomes = outcomes_over(runs, places, clock)
    outcomes.on_task_stopped(stopped(backend, 1))
    outcomes.on_task_stopped(stopped(backend, 1))
    assert counters.running == {"alice": 0}
    assert [i for i in schedule.items() if i.place is not None] == []
    pending = runs.get(c.job_id, c.key)
    assert pending is not None
    assert executor.handle(message(pending)) == [c.key]
    assert counters.running == {"alice": 1}


def test_a_failed_dispatch_gives_its_place_back_and_the_redelivery_takes_one(
    schedule: FakeScheduleStore,
) -> None:
    clock = FakeClock(datetime(2026, 11, 27, 11, 59, 10, tzinfo=UTC))
    counters = FakeQuotaCounters()
    runs = FakeRunStore(schedule, counters=counters)
    places = FakePlaces(schedule, counters)
    backend = FakeDispatchBackend()
    executor = place_executor(runs, backend, places, clock, 1, "a")
    run = queued(runs, "a", clock)
    backend.fail_with(DispatchFailed("no capacity"))
    with pytest.raises(DispatchFailed):
        executor.handle(message(run))
    assert counters.running == {"alice": 0}
    assert [i for i in schedule.items() if i.place is not None] == []

    backend.fail_with(None)
    assert executor.handle(message(run)) == [run.key]
    assert counters.running == {"alice": 1}


def test_a_place_whose_task_stop_is_never_seen_is_given_back_by_the_watcher(
    schedule: FakeScheduleStore,
) -> None:
    # Given a pack of two dispatched under one place item, whose task's stop event is lost
    clock = FakeClock(datetime(2026, 11, 27, 11, 59, 10, tzinfo=UTC))
    counters = FakeQuotaCounters()
    runs = FakeRunStore(schedule, counters=counters)
    places = FakePlaces(schedule, counters)
    backend = FakeDispatchBackend()
    jobs = FakeJobStore(schedule)
    executor = place_executor(runs, backend, places, clock, 5, "a", "b")
    a, b = (queued(runs, name, clock) for name in ("a", "b"))
    assert len(executor.handle(message(a, b))) == 2
    (place,) = [i for i in schedule.items() if i.place is not None]
    watcher = watcher_over(jobs, schedule, runs, clock, places=places)

    # When its due time comes with one run ended and the other still under way (its started
    # report moved its deadline later)
    ended = runs.get(a.job_id, a.key)
    assert ended is not None
    assert runs.cancel(ended, "stop", clock())
    running = runs.get(b.job_id, b.key)
    assert running is not None
    later = place.due_at + 600
    assert runs.mark_running(
        running, RunReport(job_id="b", run_key=b.key, attempt=1), clock(), later
    )
    clock.set(from_epoch(place.due_at + 1))
    watcher.tick()

    # Then the places are kept, the item due again at that run's deadline
    assert counters.running == {"alice": 2}
    (moved,) = [i for i in schedule.items() if i.place is not None]
    assert moved.due_at == later

    # And once that run has ended too, the watcher gives them back, once
    still = runs.get(b.job_id, b.key)
    assert still is not None
    assert runs.cancel(still, "stop", clock())
    clock.set(from_epoch(later + 1))
    watcher.tick()
    watcher.tick()
    assert counters.running == {"alice": 0}
    assert [i for i in schedule.items() if i.place is not None] == []
