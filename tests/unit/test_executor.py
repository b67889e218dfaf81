"""The executor on in-memory stores: each run of a dispatch message is claimed, then one task
starts those it won; duplicates, live claims elsewhere and failed dispatches leave the runs
ready for the message's redelivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler import keys
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun, RunSpec
from scheduler.pipeline.executor import Executor, PackNotDue, RunBusy
from scheduler.pipeline.ports import DispatchFailed
from scheduler.runs.run_models import AttemptRecord, Run, RunReport, RunStatus, RunTrigger, new_run
from scheduler.times import epoch
from unit.fakes import (
    FakeClock,
    FakeDispatchBackend,
    FakeJobStore,
    FakeRunStore,
    FakeScheduleStore,
    add_job,
)

NOON = datetime(2026, 11, 27, 12, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 11, 59, 10, tzinfo=UTC)  # queued by the 11:59 tick
CLAIM_SECONDS = 60
GRACE = 300
SCRIPT_KEY = keys.script_key("ab" * 32)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def backend() -> FakeDispatchBackend:
    return FakeDispatchBackend()


@pytest.fixture
def jobs() -> FakeJobStore:
    """alice's active jobs job-a and job-b."""
    store = FakeJobStore(FakeScheduleStore())
    for job_id in ("job-a", "job-b"):
        add_job(store, now=NOW, name=job_id, job_id=job_id)
    return store


def make_executor(
    runs: FakeRunStore,
    backend: FakeDispatchBackend,
    jobs: FakeJobStore,
    clock: FakeClock,
    **options: Any,
) -> Executor:
    return Executor(
        runs,
        backend,
        jobs,
        claim_seconds=CLAIM_SECONDS,
        dispatch_grace_seconds=GRACE,
        clock=clock,
        **options,
    )


@pytest.fixture
def executor(
    runs: FakeRunStore, backend: FakeDispatchBackend, jobs: FakeJobStore, clock: FakeClock
) -> Executor:
    return make_executor(runs, backend, jobs, clock)


def queued_run(runs: FakeRunStore, job_id: str, at: datetime = NOON, grace: int = GRACE) -> Run:
    """A scheduled run of alice's job `job_id` at `at`, QUEUED as the watcher leaves it."""
    run = new_run(
        job_id=job_id,
        user_id="alice",
        scheduled_second=epoch(at),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=3,
        timeout_seconds=120,
        now=NOW,
    )
    assert runs.create(run, SCRIPT_KEY, {"job": job_id})
    assert runs.mark_queued(run, NOW, epoch(at) + 120 + grace)
    found = runs.get(run.job_id, run.key)
    assert found is not None
    return found


def message_for(*runs: Run) -> DispatchMessage:
    return DispatchMessage(
        pack_id=f"{runs[0].key}-{runs[0].attempt}",
        user_id="alice",
        runs=[DueRun(job_id=r.job_id, key=r.key, attempt=r.attempt) for r in runs],
    )


def status_of(runs: FakeRunStore, run: Run) -> RunStatus:
    found = runs.get(run.job_id, run.key)
    assert found is not None
    return found.status


def test_a_messages_runs_are_claimed_and_started_in_one_task(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend
) -> None:
    # Given two queued runs of alice's
    first, second = queued_run(runs, "job-a"), queued_run(runs, "job-b")
    message = message_for(first, second)

    # When the executor handles their message
    started = executor.handle(message)

    # Then one task starts both, with what the runner needs to run each
    assert sorted(started) == sorted([first.key, second.key])
    assert len(backend.dispatched) == 1
    pack_id, specs = backend.dispatched[0]
    assert pack_id == message.pack_id
    assert sorted(specs, key=lambda s: s.run_key) == sorted(
        [
            RunSpec(
                job_id=run.job_id,
                run_key=run.key,
                attempt=1,
                scheduled_at=epoch(NOON),
                not_before=epoch(NOON),
                timeout_seconds=120,
                parameters={"job": run.job_id},
                script_key=SCRIPT_KEY,
                claim_pack=message.pack_id,  # the pack its attempt was first claimed in
                claim_second=epoch(NOON),  # and the second it was due then
            )
            for run in (first, second)
        ],
        key=lambda s: s.run_key,
    )
    # And both are DISPATCHED to that task, with a deadline from their start second
    for run in (first, second):
        stored = runs.stored(run.job_id, run.key)
        assert stored is not None
        assert (stored.run.status, stored.run.task_id, stored.run.dispatched_at) == (
            RunStatus.DISPATCHED,
            "task-1",
            NOW,
        )
        assert stored.deadline == epoch(NOON) + 120 + GRACE


@pytest.mark.parametrize(
    ("grace", "late", "moved"), [(300, 30, False), (300, 61, True), (30, 6, False), (30, 20, True)]
)
def test_a_run_dispatched_late_keeps_its_queued_deadline_within_a_fifth_of_the_grace(
    runs: FakeRunStore,
    backend: FakeDispatchBackend,
    jobs: FakeJobStore,
    grace: int,
    late: int,
    moved: bool,
) -> None:
    # Given a run queued for 12:00 (its deadline from that second), dispatched `late` s after
    run = queued_run(runs, "job-a", grace=grace)
    clock = FakeClock(NOON + timedelta(seconds=late))
    executor = Executor(
        runs, backend, jobs, claim_seconds=60, dispatch_grace_seconds=grace, clock=clock
    )

    assert executor.handle(message_for(run)) == [run.key]

    # Then its deadline moves with the dispatch only past a fifth of the grace late (an index
    # rewrite): a minute of the default 300 s, 6 s of a 30 s grace, which a 20 s late start
    # would otherwise have eaten, the sweep failing the run while it still ran
    stored = runs.get(run.job_id, run.key)
    assert stored is not None
    assert stored.status is RunStatus.DISPATCHED
    queued_deadline = epoch(NOON) + 120 + grace
    assert stored.deadline == (queued_deadline + late if moved else queued_deadline)


def test_a_duplicate_message_does_nothing(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend
) -> None:
    # Given a message already handled
    run = queued_run(runs, "job-a")
    message = message_for(run)
    executor.handle(message)

    # When it is delivered again
    started = executor.handle(message)

    # Then no second task starts and the run is unchanged
    assert started == []
    assert len(backend.dispatched) == 1
    assert status_of(runs, run) is RunStatus.DISPATCHED


def test_a_message_for_an_old_attempt_or_a_finished_run_does_nothing(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend
) -> None:
    # Given a run retried to attempt 2, and a finished run
    retried, finished = queued_run(runs, "job-a"), queued_run(runs, "job-b")
    failed = AttemptRecord(attempt=1, status=RunStatus.FAILED)
    assert runs.retry(retried, failed, epoch(NOW) + 30, NOW)
    done = RunReport(job_id="job-b", run_key=finished.key, attempt=1, status=RunStatus.SUCCEEDED)
    assert runs.finish(finished, done, None, NOW)

    # When a late message for their first attempts arrives, Then nothing starts
    assert executor.handle(message_for(retried, finished)) == []
    assert backend.dispatched == []
    assert status_of(runs, retried) is RunStatus.PENDING
    assert status_of(runs, finished) is RunStatus.SUCCEEDED


def test_a_pending_run_can_be_claimed(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend
) -> None:
    # Given a run sent before it was marked QUEUED (run now, or a tick, in between)
    run = new_run(
        job_id="job-a",
        user_id="alice",
        scheduled_second=epoch(NOON),
        trigger=RunTrigger.MANUAL,
        max_attempts=1,
        timeout_seconds=60,
        now=NOW,
    )
    assert runs.create(run, SCRIPT_KEY, {})

    # When its message arrives, Then it is dispatched
    assert executor.handle(message_for(run)) == [run.key]
    assert status_of(runs, run) is RunStatus.DISPATCHED


def test_a_live_claim_elsewhere_is_busy_and_releases_what_was_claimed(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend
) -> None:
    # Given two queued runs, the second claimed a moment ago by another executor
    free, taken = queued_run(runs, "job-a"), queued_run(runs, "job-b")
    assert runs.claim(taken, "other-executor", NOW, CLAIM_SECONDS)

    # When this executor handles their message, Then it backs off for a redelivery
    with pytest.raises(RunBusy):
        executor.handle(message_for(free, taken))

    # And starts nothing, giving back its claim on the first run; the other claim stays
    assert backend.dispatched == []
    released = runs.stored(free.job_id, free.key)
    assert released is not None
    assert (released.run.status, released.claim_id) == (RunStatus.QUEUED, None)
    other = runs.stored(taken.job_id, taken.key)
    assert other is not None
    assert (other.run.status, other.claim_id) == (RunStatus.DISPATCHING, "other-executor")


def test_a_failed_dispatch_releases_the_claims_and_re_raises(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend
) -> None:
    # Given a backend that cannot start a task
    first, second = queued_run(runs, "job-a"), queued_run(runs, "job-b")
    backend.fail_with(DispatchFailed("RunTask failed: capacity"))

    # When the executor handles their message, Then the failure propagates (SQS redelivers)
    with pytest.raises(DispatchFailed):
        executor.handle(message_for(first, second))

    # And both runs are QUEUED again, unclaimed
    for run in (first, second):
        stored = runs.stored(run.job_id, run.key)
        assert stored is not None
        assert (stored.run.status, stored.claim_id) == (RunStatus.QUEUED, None)

    # And the redelivered message starts them once the backend works
    backend.fail_with(None)
    assert sorted(executor.handle(message_for(first, second))) == sorted([first.key, second.key])
    assert len(backend.dispatched) == 1


def test_an_expired_claim_is_taken_over(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend, clock: FakeClock
) -> None:
    # Given a run claimed by an executor that died before dispatching it
    run = queued_run(runs, "job-a")
    assert runs.claim(run, "dead-executor", NOW, CLAIM_SECONDS)

    # When the message comes back while the claim is still live, Then it is busy
    clock.advance(CLAIM_SECONDS)
    with pytest.raises(RunBusy):
        executor.handle(message_for(run))

    # But once the claim has expired, this executor takes the run over and dispatches it
    clock.advance(1)
    assert executor.handle(message_for(run)) == [run.key]
    stored = runs.stored(run.job_id, run.key)
    assert stored is not None
    assert stored.run.status is RunStatus.DISPATCHED
    assert stored.claim_id not in (None, "dead-executor")
    assert len(backend.dispatched) == 1


@pytest.mark.parametrize("stop", ["pause", "delete"])
def test_a_queued_run_of_a_paused_or_deleted_job_is_skipped_not_dispatched(
    executor: Executor,
    runs: FakeRunStore,
    jobs: FakeJobStore,
    backend: FakeDispatchBackend,
    stop: str,
) -> None:
    # Given a pack of two queued runs, and job-a paused (or deleted) since they were queued
    stopped, running = queued_run(runs, "job-a"), queued_run(runs, "job-b")
    job = jobs.get("job-a")
    assert job is not None
    assert jobs.pause(job, NOW) if stop == "pause" else jobs.delete(job)

    # When the executor handles the message
    dispatched = executor.handle(message_for(stopped, running))

    # Then only job-b's run is in the task; job-a's ended SKIPPED, saying why, out of flight
    assert dispatched == [running.key]
    assert [[spec.run_key for spec in specs] for _, specs in backend.dispatched] == [[running.key]]
    skipped = runs.stored("job-a", stopped.key)
    assert skipped is not None
    assert skipped.run.status is RunStatus.SKIPPED
    assert skipped.run.error == f"skipped: the job was {stop}d before this run started"
    assert (skipped.deadline, skipped.claim_id) == (None, None)


def test_a_message_whose_runs_are_all_of_a_paused_job_starts_no_task(
    executor: Executor, runs: FakeRunStore, jobs: FakeJobStore, backend: FakeDispatchBackend
) -> None:
    run = queued_run(runs, "job-a")
    job = jobs.get("job-a")
    assert job is not None
    assert jobs.pause(job, NOW)
    assert executor.handle(message_for(run)) == []
    assert backend.dispatched == []
    assert status_of(runs, run) is RunStatus.SKIPPED


def test_a_run_dispatched_again_keeps_the_pack_it_was_first_claimed_in(
    executor: Executor, runs: FakeRunStore, backend: FakeDispatchBackend, clock: FakeClock
) -> None:
    # Given a run claimed for pack p1 by an executor that died after RunTask (no DISPATCHED)
    run = queued_run(runs, "job-a")
    assert runs.claim(run, "dead", NOW.replace(minute=NOW.minute - 5), 60, "p1")

    # When another pack holding it is dispatched once that claim has expired
    message = DispatchMessage(
        pack_id="p2",
        user_id="alice",
        runs=[DueRun(job_id=run.job_id, key=run.key, attempt=run.attempt)],
    )
    assert executor.handle(message) == [run.key]

    # Then its task shares p1's claim objects with the first task: only one of them starts it
    ((pack_id, (spec,)),) = backend.dispatched
    assert (pack_id, spec.claim_pack) == ("p2", "p1")


# -- an early pack is held back in the queue --------------------------------------------------

AHEAD = 110  # the task's expected start (90 s) + the margin (20 s)


class RecordingHolds:
    """The dispatch queue's holds: which receipt was held for how long; refuses if told."""

    def __init__(self, accept: bool = True) -> None:
        self.held: list[tuple[str, int]] = []
        self._accept = accept

    def hold(self, receipt_handle: str, seconds: int) -> bool:
        self.held.append((receipt_handle, seconds))
        return self._accept


def holding_executor(
    runs: FakeRunStore,
    backend: FakeDispatchBackend,
    jobs: FakeJobStore,
    clock: FakeClock,
    holds: RecordingHolds,
) -> Executor:
    return make_executor(runs, backend, jobs, clock, dispatch_ahead_seconds=AHEAD, holds=holds)


def early_message(*runs: Run) -> DispatchMessage:
    return message_for(*runs).model_copy(update={"first_second": min(r.not_before for r in runs)})


def test_a_pack_that_comes_before_its_task_is_needed_is_held_until_it_is(
    runs: FakeRunStore, backend: FakeDispatchBackend, jobs: FakeJobStore, clock: FakeClock
) -> None:
    # Given a pack due at noon, received 170 s ahead (the watcher's lead)
    holds = RecordingHolds()
    executor = holding_executor(runs, backend, jobs, clock, holds)
    run = queued_run(runs, "job-a")
    clock.set(NOON - timedelta(seconds=170))

    # When the executor receives it, then it holds the message until 110 s before noon
    with pytest.raises(PackNotDue):
        executor.handle(early_message(run), "receipt-1")
    assert holds.held == [("receipt-1", 60)]
    # And nothing was claimed or started
    assert backend.dispatched == []
    stored = runs.get(run.job_id, run.key)
    assert stored is not None
    assert stored.status is RunStatus.QUEUED

    # When it comes back then, it is dispatched
    clock.set(NOON - timedelta(seconds=AHEAD))
    assert executor.handle(early_message(run), "receipt-2") == [run.key]
    assert holds.held == [("receipt-1", 60)]
    assert len(backend.dispatched) == 1


@pytest.mark.parametrize(
    ("ahead_of_noon", "receipt", "accept"),
    [
        (AHEAD + 9, "receipt-1", True),  # less early than worth holding
        (170, None, True),  # no receipt to hold (a direct call)
        (170, "receipt-1", False),  # the queue would not hold it
    ],
)
def test_a_pack_not_held_is_dispatched_at_once(
    runs: FakeRunStore,
    backend: FakeDispatchBackend,
    jobs: FakeJobStore,
    clock: FakeClock,
    ahead_of_noon: int,
    receipt: str | None,
    accept: bool,
) -> None:
    executor = holding_executor(runs, backend, jobs, clock, RecordingHolds(accept))
    run = queued_run(runs, "job-a")
    clock.set(NOON - timedelta(seconds=ahead_of_noon))
    assert executor.handle(early_message(run), receipt) == [run.key]
    assert len(backend.dispatched) == 1
