"""Per-job notifications, on in-memory stores: a job's owner is told when a run ends FAILED or
TIMED_OUT once its retries are used up, and when it starts later than the job allows (once per
run, not per retry); nobody is told anything a job did not ask for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.pipeline.watcher import Watcher
from scheduler.runs.run_models import (
    Notifications,
    Run,
    RunEvent,
    RunNotification,
    RunReport,
    RunStatus,
    RunTrigger,
    new_run,
)
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.times import epoch
from unit.fakes import (
    FakeClock,
    FakeJobStore,
    FakeRunObjects,
    FakeRunStore,
    FakeScheduleStore,
    make_job,
    watcher_over,
)

NOON = datetime(2026, 11, 27, 12, tzinfo=UTC)


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: list[RunNotification] = []

    def notify(self, notification: RunNotification) -> None:
        self.sent.append(notification)


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def outcomes(
    runs: FakeRunStore, objects: FakeRunObjects, notifier: RecordingNotifier
) -> RunOutcomes:
    clock = FakeClock(NOON + timedelta(seconds=30))
    return RunOutcomes(
        runs,
        objects,
        retry_base_seconds=30,
        running_grace_seconds=60,
        clock=clock,
        notifier=notifier,
    )


def dispatched(runs: FakeRunStore, notifications: Notifications, max_attempts: int = 2) -> Run:
    run = new_run(
        job_id="job-a",
        user_id="alice",
        scheduled_second=epoch(NOON),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=max_attempts,
        timeout_seconds=60,
        now=NOON,
        notifications=notifications,
    )
    assert runs.create(run, "scripts/ab/ab.py", {})
    return redispatch(runs, run)


def redispatch(runs: FakeRunStore, run: Run) -> Run:
    """The run's current attempt, queued and dispatched as the pipeline leaves it."""
    current = runs.get(run.job_id, run.key)
    assert current is not None
    assert runs.mark_queued(current, NOON, epoch(NOON) + 600)
    assert runs.claim(current, "claim", NOON, 60)
    assert runs.mark_dispatched(current, "claim", "task", NOON, epoch(NOON) + 600)
    found = runs.get(run.job_id, run.key)
    assert found is not None
    return found


def ended(run: Run, status: RunStatus, lag_ms: int = 5) -> RunReport:
    return RunReport(
        job_id=run.job_id,
        run_key=run.key,
        attempt=run.attempt,
        status=status,
        exit_code=0 if status is RunStatus.SUCCEEDED else 3,
        start_lag_ms=lag_ms,
        output_tail="Traceback: boom\n",
    )


def test_a_failed_run_is_told_once_its_retries_are_used_up(
    runs: FakeRunStore, outcomes: RunOutcomes, notifier: RecordingNotifier
) -> None:
    # Given a job that wants to hear of failures, and its run's first attempt failing
    run = dispatched(runs, Notifications(on_failure=True))
    assert outcomes.conclude(run, ended(run, RunStatus.FAILED)) is RunStatus.PENDING
    assert notifier.sent == []  # a retry follows: nothing to tell yet

    # When the second and last attempt fails too
    second = redispatch(runs, run)
    assert outcomes.conclude(second, ended(second, RunStatus.FAILED)) is RunStatus.FAILED

    # Then the owner is told once, with the run's status, exit code, output tail and link
    (told,) = notifier.sent
    assert (told.event_type, told.user_id, told.job_id) == (RunEvent.RUN_FAILED, "alice", "job-a")
    assert (told.status, told.exit_code, told.attempt) == (RunStatus.FAILED, 3, 2)
    assert told.output_tail == "Traceback: boom\n"
    assert told.link == f"/jobs/job-a/runs/{run.key}"


def test_a_timed_out_run_is_told_and_a_success_is_not(
    runs: FakeRunStore, outcomes: RunOutcomes, notifier: RecordingNotifier
) -> None:
    run = dispatched(runs, Notifications(on_failure=True), max_attempts=1)
    outcomes.conclude(run, ended(run, RunStatus.TIMED_OUT))
    assert [n.status for n in notifier.sent] == [RunStatus.TIMED_OUT]

    other = new_run(
        job_id="job-b",
        user_id="alice",
        scheduled_second=epoch(NOON),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=1,
        timeout_seconds=60,
        now=NOON,
        notifications=Notifications(on_failure=True),
    )
    assert runs.create(other, "scripts/ab/ab.py", {})
    other = redispatch(runs, other)
    outcomes.conclude(other, ended(other, RunStatus.SUCCEEDED))
    assert len(notifier.sent) == 1


def test_a_late_start_is_told_once_not_per_retry(
    runs: FakeRunStore, outcomes: RunOutcomes, notifier: RecordingNotifier
) -> None:
    # Given a job that wants to hear of starts over 10 s late, whose first attempt started
    # 12 s late and failed, and whose retry started later still
    run = dispatched(runs, Notifications(late_after_seconds=10))
    outcomes.conclude(run, ended(run, RunStatus.FAILED, lag_ms=12_000))
    second = redispatch(runs, run)
    outcomes.conclude(second, ended(second, RunStatus.SUCCEEDED, lag_ms=45_000))

    # Then the owner heard of the late start once
    (told,) = notifier.sent
    assert (told.event_type, told.attempt, told.start_lag_ms) == (RunEvent.RUN_LATE, 1, 12_000)


def test_a_late_start_recorded_by_two_handlers_at_once_is_told_once(
    runs: FakeRunStore, objects: FakeRunObjects, outcomes: RunOutcomes, notifier: RecordingNotifier
) -> None:
    # Given a late run, read while DISPATCHED by the handler of its task's stop
    stale = dispatched(runs, Notifications(late_after_seconds=10), max_attempts=1)

    # When its started report is handled meanwhile, and then the stop's handler concludes it
    # from its stale read (the run's finished report had landed)
    started = RunReport(
        job_id=stale.job_id, run_key=stale.key, attempt=1, start_lag_ms=12_000, started_at=NOON
    )
    outcomes.on_report(objects.put_report(started, "started"))
    outcomes.conclude(stale, ended(stale, RunStatus.SUCCEEDED, lag_ms=12_000))

    # Then the owner heard of the late start once
    assert [n.event_type for n in notifier.sent] == [RunEvent.RUN_LATE]


def test_a_job_that_asked_for_nothing_is_told_nothing(
    runs: FakeRunStore, outcomes: RunOutcomes, notifier: RecordingNotifier
) -> None:
    run = dispatched(runs, Notifications(), max_attempts=1)
    outcomes.conclude(run, ended(run, RunStatus.FAILED, lag_ms=90_000))
    assert notifier.sent == []


# -- the dead man's switch -------------------------------------------------------------------


def pipeline(
    clock: FakeClock, notifier: RecordingNotifier
) -> tuple[FakeJobStore, FakeRunStore, Watcher]:
    schedule = FakeScheduleStore()
    jobs, runs = FakeJobStore(schedule), FakeRunStore(schedule)
    watcher = watcher_over(
        jobs, schedule, runs, clock, notifier=notifier, dispatch_grace_seconds=3600
    )
    return jobs, runs, watcher


@pytest.mark.parametrize("succeeds", [False, True])
def test_a_scheduled_run_not_succeeded_within_its_grace_is_told_once(succeeds: bool) -> None:
    # Given an hourly job that wants to hear of a run not succeeded 10 minutes after its second
    clock = FakeClock(NOON - timedelta(seconds=60))
    notifier = RecordingNotifier()
    jobs, runs, watcher = pipeline(clock, notifier)
    job = make_job(now=NOON - timedelta(hours=1)).model_copy(
        update={"notifications": Notifications(missed_after_seconds=600)}
    )
    jobs.create(job, "scripts/ab/ab.py")

    # When its 12:00 run is queued, then succeeds (or not), and the watcher ticks on
    watcher.tick()
    (run,) = runs.all()
    if succeeds:
        assert runs.claim(run, "claim", NOON, 60)
        claimed = runs.get(run.job_id, run.key)
        assert claimed is not None
        assert runs.mark_dispatched(claimed, "claim", "task", NOON, epoch(NOON) + 600)
        dispatched = runs.get(run.job_id, run.key)
        assert dispatched is not None
        assert runs.finish(dispatched, ended(dispatched, RunStatus.SUCCEEDED), None, NOON)
    for _ in range(14):
        clock.advance(60)
        watcher.tick()

    # Then the owner is told once, of the run as it stands, only if it did not succeed
    told = [n for n in notifier.sent if n.event_type is RunEvent.RUN_MISSED]
    if succeeds:
        assert told == []
    else:
        (missed,) = told
        assert (missed.job_id, missed.run_key) == (job.job_id, run.key)
        assert missed.status is RunStatus.QUEUED


# -- pause after repeated failures ------------------------------------------------------------


def test_a_job_pauses_itself_after_n_failures_in_a_row_and_says_why() -> None:
    # Given a job that pauses after 2 runs in a row failed, and its owner wants to hear of it
    clock = FakeClock(NOON)
    notifier = RecordingNotifier()
    schedule = FakeScheduleStore()
    jobs, runs = FakeJobStore(schedule), FakeRunStore(schedule)
    outcomes = RunOutcomes(
        runs,
        FakeRunObjects(),
        retry_base_seconds=30,
        running_grace_seconds=60,
        clock=clock,
        notifier=notifier,
        jobs=jobs,
    )
    job = make_job(now=NOON - timedelta(hours=3)).model_copy(
        update={"pause_after_failures": 2, "notifications": Notifications(on_failure=True)}
    )
    jobs.create(job, "scripts/ab/ab.py")

    def a_run_that_ends(hour: int, status: RunStatus) -> None:
        run = new_run(
            job_id=job.job_id,
            user_id="alice",
            scheduled_second=epoch(NOON) - hour * 3600,
            trigger=RunTrigger.SCHEDULE,
            max_attempts=1,
            timeout_seconds=60,
            now=NOON,
            pause_after_failures=2,
            notifications=Notifications(on_failure=True),
        )
        assert runs.create(run, "scripts/ab/ab.py", {})
        run = redispatch(runs, run)
        outcomes.conclude(run, ended(run, status))

    # When one fails, one succeeds (the count starts again), then two fail
    a_run_that_ends(3, RunStatus.FAILED)
    a_run_that_ends(2, RunStatus.SUCCEEDED)
    a_run_that_ends(1, RunStatus.FAILED)
    stored = jobs.get(job.job_id)
    assert stored is not None
    assert stored.status.value == "ACTIVE"
    a_run_that_ends(0, RunStatus.TIMED_OUT)

    # Then the job is paused, says why, has no upcoming run, and its owner was told
    stored = jobs.get(job.job_id)
    assert stored is not None
    assert stored.status.value == "PAUSED"
    assert stored.paused_reason is not None
    assert "2 runs in a row" in stored.paused_reason
    assert schedule.items() == []
    assert [n.event_type for n in notifier.sent][-1] is RunEvent.JOB_PAUSED
