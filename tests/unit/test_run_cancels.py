"""Cancelling runs (RunCancels, RunService.cancel) and what the runner's overlap decisions
become (RunOutcomes): on in-memory stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from scheduler import keys
from scheduler.errors import JobNotFound, RunEnded, RunNotFound
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun
from scheduler.pipeline.executor import Executor
from scheduler.runs.run_cancels import RunCancels
from scheduler.runs.run_models import (
    AttemptRecord,
    CancelRequest,
    ConcurrencyPolicy,
    Run,
    RunReport,
    RunStatus,
    RunTrigger,
    new_run,
)
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.runs.run_service import RunService
from scheduler.times import epoch
from unit.fakes import (
    FakeClock,
    FakeDispatchBackend,
    FakeJobStore,
    FakeRunObjects,
    FakeRunStore,
    add_job,
)

NOON = datetime(2026, 11, 30, 12, tzinfo=UTC)
NOW = NOON + timedelta(seconds=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def cancels(runs: FakeRunStore, objects: FakeRunObjects, clock: FakeClock) -> RunCancels:
    return RunCancels(runs, objects, clock)


@pytest.fixture
def service(
    jobs: FakeJobStore, runs: FakeRunStore, objects: FakeRunObjects, cancels: RunCancels
) -> RunService:
    return RunService(jobs, runs, clock=FakeClock(NOW), objects=objects, cancels=cancels)


@pytest.fixture
def outcomes(
    runs: FakeRunStore, objects: FakeRunObjects, clock: FakeClock, cancels: RunCancels
) -> RunOutcomes:
    return RunOutcomes(
        runs, objects, retry_base_seconds=30, running_grace_seconds=60, clock=clock, cancels=cancels
    )


def a_run(
    runs: FakeRunStore,
    job_id: str,
    at: datetime = NOON,
    *,
    overlap: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
    max_attempts: int = 3,
) -> Run:
    run = new_run(
        job_id=job_id,
        user_id="alice",
        scheduled_second=epoch(at),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=max_attempts,
        timeout_seconds=300,
        now=NOON - timedelta(minutes=3),
        overlap=overlap,
    )
    assert runs.create(run, "scripts/ab/ab.py", {})
    return run


def queued(runs: FakeRunStore, run: Run) -> Run:
    assert runs.mark_queued(run, NOON - timedelta(minutes=3), epoch(NOON) + 900)
    return now_of(runs, run)


def dispatched(runs: FakeRunStore, run: Run) -> Run:
    run = queued(runs, run)
    assert runs.claim(run, "c1", NOON - timedelta(minutes=2), 60)
    assert runs.mark_dispatched(run, "c1", "task-1", NOON - timedelta(minutes=2), epoch(NOON) + 900)
    return now_of(runs, run)


def running(runs: FakeRunStore, run: Run) -> Run:
    run = dispatched(runs, run)
    started = RunReport(job_id=run.job_id, run_key=run.key, attempt=run.attempt, start_lag_ms=5)
    assert runs.mark_running(run, started, NOON, epoch(NOON) + 900)
    return now_of(runs, run)


def now_of(runs: FakeRunStore, run: Run) -> Run:
    found = runs.get(run.job_id, run.key)
    assert found is not None
    return found


# -- cancel by the owner ------------------------------------------------------------------------


def test_cancelling_a_running_run_signals_its_runner_and_ends_it_cancelled(
    service: RunService, jobs: FakeJobStore, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a running run
    job = add_job(jobs, now=NOON)
    run = running(runs, a_run(runs, job.job_id))

    # When its owner cancels it, saying why
    answer = service.cancel("alice", job.job_id, run.key, CancelRequest(reason="wrong input"))

    # Then it is CANCELLED with the reason, out of the in-flight index (no deadline to sweep)
    stored = runs.stored(job.job_id, run.key)
    assert stored is not None
    assert stored.run.status is RunStatus.CANCELLED
    assert stored.run.error == "cancelled by its owner: wrong input"
    assert stored.deadline is None
    assert answer.status is RunStatus.CANCELLED
    # And the runner's signal is written: the cancel object it reads at the run's second (never
    # start) and polls while the script runs; no claim is taken (the runner's claims are its own)
    assert objects.cancel_requested(job.job_id, run.key, 1)
    assert keys.claim_key(job.job_id, run.key, 1) not in objects.objects


def test_a_cancel_marks_the_pack_claim_of_a_run_claimed_while_it_was_being_cancelled(
    cancels: RunCancels, jobs: FakeJobStore, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a queued run read by a cancel, then claimed by an executor into pack p's claim
    job = add_job(jobs, now=NOON)
    read = queued(runs, a_run(runs, job.job_id))
    assert runs.claim(read, "c1", NOON, 60, "p")
    claimed = now_of(runs, read)
    assert (claimed.claim_pack, claimed.claim_second) == ("p", epoch(NOON))

    # When the cancel goes on with the run as it read it (no pack claim)
    ended = cancels.cancel(read, "cancelled by its owner")

    # Then it is CANCELLED only after it marked that claim, which its runner reads at the
    # second (else the runner would not read the run's own cancel object, and start it)
    assert ended.status is RunStatus.CANCELLED
    assert keys.pack_cancel_key("p", epoch(NOON)) in objects.objects
    assert objects.cancel_requested(job.job_id, read.key, 1)


def test_a_cancelled_queued_run_is_not_dispatched(
    service: RunService, jobs: FakeJobStore, runs: FakeRunStore, clock: FakeClock
) -> None:
    # Given a queued run, cancelled before the executor takes its message
    job = add_job(jobs, now=NOON)
    run = queued(runs, a_run(runs, job.job_id))
    service.cancel("alice", job.job_id, run.key)

    # When the executor takes the message
    backend = FakeDispatchBackend()
    executor = Executor(
        runs, backend, jobs, claim_seconds=60, dispatch_grace_seconds=300, clock=clock
    )
    message = DispatchMessage(
        pack_id="p", user_id="alice", runs=[DueRun(job_id=job.job_id, key=run.key, attempt=1)]
    )
    started = executor.handle(message)

    # Then nothing is started, and the run stays CANCELLED
    assert started == []
    assert backend.dispatched == []
    assert now_of(runs, run).status is RunStatus.CANCELLED


def test_cancelling_a_cancelled_run_answers_it_again(
    service: RunService, jobs: FakeJobStore, runs: FakeRunStore
) -> None:
    job = add_job(jobs, now=NOON)
    run = running(runs, a_run(runs, job.job_id))
    first = service.cancel("alice", job.job_id, run.key)

    again = service.cancel("alice", job.job_id, run.key)

    assert again.status is RunStatus.CANCELLED
    assert again.error == first.error


def test_a_run_that_ended_otherwise_cannot_be_cancelled(
    service: RunService, jobs: FakeJobStore, runs: FakeRunStore
) -> None:
    # Given a run that succeeded
    job = add_job(jobs, now=NOON)
    run = running(runs, a_run(runs, job.job_id))
    done = RunReport(
        job_id=job.job_id, run_key=run.key, attempt=1, status=RunStatus.SUCCEEDED, exit_code=0
    )
    assert runs.finish(run, done, None, NOW)

    # When its owner tries to cancel it, then it is refused (409) and it stays SUCCEEDED
    with pytest.raises(RunEnded, match="SUCCEEDED"):
        service.cancel("alice", job.job_id, run.key)
    assert now_of(runs, run).status is RunStatus.SUCCEEDED


def test_someone_elses_run_is_not_found(
    service: RunService, jobs: FakeJobStore, runs: FakeRunStore
) -> None:
    job = add_job(jobs, now=NOON)
    run = running(runs, a_run(runs, job.job_id))

    with pytest.raises(JobNotFound):
        service.cancel("mallory", job.job_id, run.key)
    with pytest.raises(RunNotFound):
        service.cancel("alice", job.job_id, "1795000000-nope")
    assert now_of(runs, run).status is RunStatus.RUNNING


def test_a_run_retried_meanwhile_is_cancelled_at_its_new_attempt(
    runs: FakeRunStore, objects: FakeRunObjects, cancels: RunCancels
) -> None:
    # Given a run read at attempt 1, which then fails and is retried (attempt 2, PENDING)
    run = running(runs, a_run(runs, "job-a"))
    failed = AttemptRecord(attempt=1, status=RunStatus.FAILED, exit_code=1)
    assert runs.retry(run, failed, epoch(NOW) + 30, NOW)

    # When the cancel written for attempt 1 lands
    result = cancels.cancel(run, "cancelled by its owner")

    # Then attempt 2 is cancelled (and signalled) too: no retry runs after a cancel
    assert (result.status, result.attempt) == (RunStatus.CANCELLED, 2)
    assert now_of(runs, run).status is RunStatus.CANCELLED
    assert objects.cancel_requested("job-a", run.key, 2)


# -- what the runner reports after a cancel ------------------------------------------------------


def test_the_cancelled_scripts_report_fills_in_its_output_and_the_status_stays(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects, cancels: RunCancels
) -> None:
    # Given a running run, cancelled
    run = running(runs, a_run(runs, "job-a"))
    cancels.cancel(run, "cancelled by its owner")

    # When its runner reports the script it stopped
    report = RunReport(
        job_id="job-a",
        run_key=run.key,
        attempt=1,
        status=RunStatus.CANCELLED,
        exit_code=-15,
        duration_ms=4200,
        output_tail="working...\n",
        output_uploaded=False,
    )
    outcomes.on_report(objects.put_report(report, "finished"))

    # Then the run keeps CANCELLED and its reason, with what the script did
    stored = now_of(runs, run)
    assert stored.status is RunStatus.CANCELLED
    assert stored.error == "cancelled by its owner"
    assert (stored.exit_code, stored.duration_ms, stored.output_tail) == (-15, 4200, "working...\n")


def test_a_cancel_that_crashed_before_recording_is_obeyed_and_not_retried(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a running run whose cancel signal was written, but the API died before the record
    run = running(runs, a_run(runs, "job-a", max_attempts=3))
    objects.request_cancel(run, "cancelled by its owner")

    # When the runner reports the script it stopped
    report = RunReport(
        job_id="job-a",
        run_key=run.key,
        attempt=1,
        status=RunStatus.CANCELLED,
        error="cancelled by its owner: the script was sent SIGTERM",
    )
    outcomes.on_report(objects.put_report(report, "finished"))

    # Then the run ends CANCELLED, attempts left or not
    assert (now_of(runs, run).status, now_of(runs, run).attempt) == (RunStatus.CANCELLED, 1)


def test_a_task_that_never_started_a_cancelled_run_concludes_it_cancelled(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a dispatched run whose cancel object its runner found at the second (it never
    # started it) and whose cancel was not recorded
    run = dispatched(runs, a_run(runs, "job-a"))
    objects.request_cancel(run, "cancelled by its owner")

    # When its task stops without a report from it
    outcomes.conclude_unreported(run, "task stopped before the run reported its end")

    # Then it is CANCELLED, not FAILED and retried
    assert now_of(runs, run).status is RunStatus.CANCELLED


# -- the runner's overlap decisions ---------------------------------------------------------------


def test_a_run_the_runner_skipped_is_final(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    run = dispatched(runs, a_run(runs, "job-a", overlap=ConcurrencyPolicy.FORBID))
    report = RunReport(
        job_id="job-a",
        run_key=run.key,
        attempt=1,
        status=RunStatus.SKIPPED,
        error="skipped: run 1795000000-job-a was still running (FORBID)",
    )

    outcomes.on_report(objects.put_report(report, "finished"))

    stored = now_of(runs, run)
    assert (stored.status, stored.attempt) == (RunStatus.SKIPPED, 1)
    assert "FORBID" in (stored.error or "")


def test_a_waiting_run_gets_a_deadline_past_its_wait(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a BUFFER_ONE run whose runner found the previous run holding the lock until +1 h
    run = dispatched(runs, a_run(runs, "job-a", overlap=ConcurrencyPolicy.BUFFER_ONE))
    wait_until = epoch(NOW) + 3600
    report = RunReport(
        job_id="job-a", run_key=run.key, attempt=1, waiting_for="x", wait_until=wait_until
    )

    # When its waiting report arrives
    outcomes.on_report(objects.put_report(report, "waiting"))

    # Then it is WAITING, and the deadline sweep leaves it alone until its wait and its own
    # timeout have passed
    stored = runs.stored("job-a", run.key)
    assert stored is not None
    assert stored.run.status is RunStatus.WAITING
    assert stored.deadline == wait_until + 300 + 60


def test_a_replace_run_has_the_runs_it_replaces_cancelled(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a REPLACE job's 12:00 run still running, and its 12:01 run waiting for the lock
    old = running(runs, a_run(runs, "job-a", overlap=ConcurrencyPolicy.REPLACE))
    new = dispatched(
        runs,
        a_run(runs, "job-a", NOON + timedelta(minutes=1), overlap=ConcurrencyPolicy.REPLACE),
    )
    report = RunReport(
        job_id="job-a",
        run_key=new.key,
        attempt=1,
        waiting_for=old.key,
        wait_until=epoch(NOW) + 400,
        replaces=[old.key],
    )

    # When the new run's waiting report arrives
    outcomes.on_report(objects.put_report(report, "waiting"))

    # Then the old run is cancelled (its runner signalled), naming the new one
    stopped = now_of(runs, old)
    assert stopped.status is RunStatus.CANCELLED
    assert new.key in (stopped.error or "")
    assert objects.cancel_requested("job-a", old.key, 1)
    assert now_of(runs, new).status is RunStatus.WAITING


def test_a_dead_task_releases_the_lock_it_held(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a FORBID run whose task died holding the job's lock
    run = running(runs, a_run(runs, "job-a", overlap=ConcurrencyPolicy.FORBID))
    objects.objects[keys.lock_key("job-a")] = json.dumps(
        {"run_key": run.key, "attempt": 1, "until": epoch(NOW) + 400}
    )

    # When its task's stop is seen
    outcomes.conclude_unreported(run, "task stopped")

    # Then the lock is gone: the job's next run is not skipped for a dead one
    assert keys.lock_key("job-a") not in objects.objects
