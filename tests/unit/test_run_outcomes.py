"""RunOutcomes on in-memory stores: the runner's reports move a run to RUNNING and to its end,
failures are retried with backoff while attempts last, a stopped task concludes the runs that
did not report, and nothing old or finished is ever moved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import pytest

from scheduler import keys
from scheduler.runs.run_models import AttemptRecord, Run, RunReport, RunStatus, RunTrigger, new_run
from scheduler.runs.run_outcomes import MAX_UNSTARTED_ATTEMPTS, RunOutcomes, retry_delay
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import epoch
from unit.fakes import FakeClock, FakeRunObjects, FakeRunStore, FakeScheduleStore

NOON = datetime(2026, 11, 27, 12, tzinfo=UTC)
NOW = NOON + timedelta(seconds=40)
RETRY_BASE = 30
RUNNING_GRACE = 60
TIMEOUT = 120


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def outcomes(runs: FakeRunStore, objects: FakeRunObjects, clock: FakeClock) -> RunOutcomes:
    return RunOutcomes(
        runs,
        objects,
        retry_base_seconds=RETRY_BASE,
        running_grace_seconds=RUNNING_GRACE,
        clock=clock,
    )


def dispatched_run(
    runs: FakeRunStore, job_id: str = "job-a", *, max_attempts: int = 3, pack: str = ""
) -> Run:
    """The 12:00 run of `job_id`, dispatched to task-1 (as the executor leaves it), in `pack`
    (by default, a pack of its own)."""
    run = new_run(
        job_id=job_id,
        user_id="alice",
        scheduled_second=epoch(NOON),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=max_attempts,
        timeout_seconds=TIMEOUT,
        now=NOON,
    )
    assert runs.create(run, "scripts/ab/ab.py", {})
    assert runs.mark_queued(run, NOON, epoch(NOON) + 600)
    assert runs.claim(run, "claim-1", NOON, 60, pack)
    assert runs.mark_dispatched(run, "claim-1", "task-1", NOON, epoch(NOON) + 600)
    return current(runs, run)


def current(runs: FakeRunStore, run: Run) -> Run:
    found = runs.get(run.job_id, run.key)
    assert found is not None
    return found


def report(run: Run, **fields: Any) -> RunReport:
    return RunReport(job_id=run.job_id, run_key=run.key, attempt=run.attempt, **fields)


def finished(run: Run, status: RunStatus, **fields: Any) -> RunReport:
    values: dict[str, Any] = {
        "exit_code": 0 if status is RunStatus.SUCCEEDED else 1,
        "finished_at": NOW - timedelta(seconds=1),
        "duration_ms": 39000,
    }
    return report(run, status=status, **values | fields)


def retry_item(run: Run, due_at: int) -> ScheduleItem:
    return ScheduleItem(
        job_id=run.job_id,
        user_id=run.user_id,
        scheduled_at=run.execution_time,
        due_at=due_at,
        trigger=RunTrigger.RETRY,
        run_key=run.key,
    )


def test_retry_delay_doubles_from_the_base_up_to_a_cap() -> None:
    assert [retry_delay(attempt, 30) for attempt in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(20, 30) == 3600
    assert retry_delay(3, 30, cap_seconds=100) == 100


# -- reports ------------------------------------------------------------------------------------


def test_a_started_report_marks_the_run_running(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a dispatched run, and the runner's started report
    run = dispatched_run(runs)
    started_at = NOON + timedelta(seconds=2)
    key = objects.put_report(report(run, started_at=started_at, start_lag_ms=1500), "started")

    # When the report's notification arrives
    outcomes.on_report(key)

    # Then the run is RUNNING since then, and due to end within its timeout and the grace
    stored = runs.stored(run.job_id, run.key)
    assert stored is not None
    assert (stored.run.status, stored.run.started_at, stored.run.start_lag_ms) == (
        RunStatus.RUNNING,
        started_at,
        1500,
    )
    assert stored.deadline == epoch(started_at) + TIMEOUT + RUNNING_GRACE


def test_a_succeeded_report_finishes_the_run(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a running run and its finished report, its output uploaded
    run = dispatched_run(runs)
    done = finished(run, RunStatus.SUCCEEDED, output_tail="ok\n", output_uploaded=True)
    key = objects.put_report(done, "finished")

    # When the report's notification arrives
    outcomes.on_report(key)

    # Then the run SUCCEEDED, with the report's fields and where its output is
    stored = runs.stored(run.job_id, run.key)
    assert stored is not None
    finished_run = stored.run
    assert (finished_run.status, finished_run.exit_code, finished_run.output_tail) == (
        RunStatus.SUCCEEDED,
        0,
        "ok\n",
    )
    assert (finished_run.finished_at, finished_run.duration_ms) == (done.finished_at, 39000)
    assert finished_run.output_key == keys.output_key(run.job_id, run.key, 1)
    # And it keeps its in-flight entry (removing it cost a write): the sweep reads it once,
    # ended, when its deadline passes; it expires with the table's retention
    assert stored.deadline is not None
    assert stored.expires_at == epoch(NOW) + 90 * 86400


def test_an_output_that_was_not_uploaded_has_no_output_key(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    run = dispatched_run(runs)
    done = finished(run, RunStatus.SUCCEEDED, output_tail="all\n", output_uploaded=False)
    outcomes.on_report(objects.put_report(done, "finished"))
    assert current(runs, run).output_key is None


def test_a_failed_attempt_with_attempts_left_is_retried_with_backoff(
    outcomes: RunOutcomes,
    runs: FakeRunStore,
    objects: FakeRunObjects,
    schedule: FakeScheduleStore,
    clock: FakeClock,
) -> None:
    # Given a run on its first of three attempts, and a FAILED finished report
    run = dispatched_run(runs)
    failure = finished(run, RunStatus.FAILED, error="boom", output_tail="Traceback\n")

    # When the report arrives
    outcomes.on_report(objects.put_report(failure, "finished"))

    # Then the run is PENDING again on attempt 2, startable after the backoff
    retried = current(runs, run)
    not_before = epoch(NOW) + retry_delay(1, RETRY_BASE)
    assert (retried.status, retried.attempt, retried.not_before) == (
        RunStatus.PENDING,
        2,
        not_before,
    )
    # With the failed attempt kept, and the attempt's traces cleared
    assert retried.attempts == [
        AttemptRecord(
            attempt=1,
            status=RunStatus.FAILED,
            exit_code=1,
            finished_at=failure.finished_at,
            error="boom",
        )
    ]
    assert (retried.output_tail, retried.exit_code, retried.task_id) == (None, None, None)
    # And a RETRY schedule item is due for the watcher at the end of the backoff
    assert schedule.items() == [retry_item(run, not_before)]

    # And when attempt 2 fails too, the wait doubles
    attempt_2 = current(runs, run)
    assert runs.mark_queued(attempt_2, NOW, not_before + 600)
    clock.advance(100)
    outcomes.on_report(objects.put_report(finished(attempt_2, RunStatus.TIMED_OUT), "finished"))
    third = current(runs, run)
    assert (third.status, third.attempt) == (RunStatus.PENDING, 3)
    assert third.not_before == epoch(clock.now) + retry_delay(2, RETRY_BASE) == epoch(NOW) + 160
    assert [a.status for a in third.attempts] == [RunStatus.FAILED, RunStatus.TIMED_OUT]


def test_the_last_attempt_failing_finishes_the_run(
    outcomes: RunOutcomes,
    runs: FakeRunStore,
    objects: FakeRunObjects,
    schedule: FakeScheduleStore,
) -> None:
    # Given a run on its only attempt
    run = dispatched_run(runs, max_attempts=1)

    # When it reports TIMED_OUT
    outcomes.on_report(objects.put_report(finished(run, RunStatus.TIMED_OUT), "finished"))

    # Then that is its end: no retry, no schedule item
    ended = current(runs, run)
    assert (ended.status, ended.attempt, ended.attempts) == (RunStatus.TIMED_OUT, 1, [])
    assert schedule.items() == []


def test_an_s3_notification_is_read_for_every_report_it_names(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given two runs' started reports, and S3's notification of them (keys URL-encoded)
    first, second = dispatched_run(runs, "job-a"), dispatched_run(runs, "job-b")
    names = [objects.put_report(report(run, started_at=NOON), "started") for run in (first, second)]
    body = json.dumps({"Records": [{"s3": {"object": {"key": quote_plus(k)}}} for k in names]})

    # When it arrives, Then both runs are RUNNING; S3's test event changes nothing
    outcomes.on_s3_notification(body)
    outcomes.on_s3_notification(json.dumps({"Event": "s3:TestEvent"}))
    assert [current(runs, r).status for r in (first, second)] == [RunStatus.RUNNING] * 2


def pack_claim_of(run: Run) -> tuple[str, int]:
    assert run.claim_pack is not None
    assert run.claim_second is not None
    return run.claim_pack, run.claim_second


def test_a_batch_of_finished_reports_ends_each_run_its_pack_claim_holds(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given two runs of one pack claim, and a run of another pack
    first, second = (dispatched_run(runs, job, pack="pack-1") for job in ("job-a", "job-b"))
    other = dispatched_run(runs, "job-c", pack="pack-2")
    pack, second_of_claim = pack_claim_of(first)
    assert pack_claim_of(second) == (pack, second_of_claim)

    # When one batch of the claim reports all three ends
    key = objects.put_batch(
        pack,
        second_of_claim,
        0,
        [
            finished(first, RunStatus.SUCCEEDED, output_tail="a\n"),
            finished(second, RunStatus.FAILED, exit_code=3),
            finished(other, RunStatus.SUCCEEDED),
        ],
    )
    outcomes.on_report(key)

    # Then the claim's runs end as reported (a failure retried), and the other pack's run,
    # which a batch of this claim cannot speak for, is left as it was
    assert (current(runs, first).status, current(runs, first).output_tail) == (
        RunStatus.SUCCEEDED,
        "a\n",
    )
    retried = current(runs, second)
    assert (retried.status, retried.attempts[0].exit_code) == (RunStatus.PENDING, 3)
    assert current(runs, other).status is RunStatus.DISPATCHED


# -- stopped tasks ------------------------------------------------------------------------------


def task_stopped(*refs: tuple[str, str, int], exit_code: int = 137) -> dict[str, Any]:
    """The detail of an ECS task-stopped event for a task that ran `refs`."""
    return {
        "lastStatus": "STOPPED",
        "stoppedReason": "Essential container in task exited",
        "containers": [{"name": "runner", "lastStatus": "STOPPED", "exitCode": exit_code}],
        "overrides": {
            "containerOverrides": [
                {
                    "name": "runner",
                    "environment": [
                        {"name": "RUN_REFS", "value": keys.format_run_refs(list(refs))}
                    ],
                }
            ]
        },
    }


def test_a_stopped_task_concludes_the_runs_that_did_not_report(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a task of three runs: one finished and reported, one whose finished report landed
    # but was not processed yet, and one whose script started (its runner claimed it) and
    # never reported its end
    reported, late, silent = (dispatched_run(runs, f"job-{n}") for n in "abc")
    objects.put_claim(silent)
    done = finished(reported, RunStatus.SUCCEEDED)
    outcomes.on_report(objects.put_report(done, "finished"))
    objects.put_report(finished(late, RunStatus.SUCCEEDED, output_tail="late\n"), "finished")

    # When the task's stopped event arrives
    outcomes.on_task_stopped(
        task_stopped(*[(r.job_id, r.key, 1) for r in (reported, late, silent)])
    )

    # Then the late one is concluded from its report, the silent one as a failed attempt
    # (retried: it has attempts left), and the reported one is untouched
    assert current(runs, reported).status is RunStatus.SUCCEEDED
    assert (current(runs, late).status, current(runs, late).output_tail) == (
        RunStatus.SUCCEEDED,
        "late\n",
    )
    retried = current(runs, silent)
    assert (retried.status, retried.attempt) == (RunStatus.PENDING, 2)
    assert retried.attempts[0].exit_code == 137
    assert retried.attempts[0].error == (
        "task stopped before the run reported its end: Essential container in task exited"
    )


def test_a_stopped_task_concludes_a_run_from_its_batch_not_yet_notified(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a run whose end landed in its pack claim's second batch, not processed yet
    run = dispatched_run(runs, max_attempts=1)
    objects.put_claim(run)
    pack, second = pack_claim_of(run)
    objects.put_batch(pack, second, 0, [])
    objects.put_batch(pack, second, 1, [finished(run, RunStatus.SUCCEEDED)])

    # When its task's stopped event comes first, from a runner that could not deliver a
    # report of another run (exit 2)
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 1), exit_code=2))

    # Then the run is concluded from its batched report, not failed
    assert current(runs, run).status is RunStatus.SUCCEEDED


def test_a_task_whose_runner_reported_every_run_leaves_them_to_their_reports(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a run whose finished report landed but was not processed yet, and a run whose
    # runner left it to the task holding its claim (no report of this task's)
    reported, elsewhere = (dispatched_run(runs, f"job-{n}", max_attempts=1) for n in "ab")
    objects.put_claim(reported)
    objects.put_claim(elsewhere)
    report_key = objects.put_report(finished(reported, RunStatus.SUCCEEDED), "finished")

    # When the task stops with the runner's exit 0 (every report delivered)
    outcomes.on_task_stopped(
        task_stopped(*[(r.job_id, r.key, 1) for r in (reported, elsewhere)], exit_code=0)
    )

    # Then the stop ends neither (it would have failed the second, and concluded the first
    # from its report): the report's notification ends the first
    assert current(runs, reported).status is RunStatus.DISPATCHED
    assert current(runs, elsewhere).status is RunStatus.DISPATCHED
    outcomes.on_report(report_key)
    assert current(runs, reported).status is RunStatus.SUCCEEDED


def test_a_stopped_task_fails_a_silent_last_attempt(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    run = dispatched_run(runs, max_attempts=1)
    objects.put_claim(run)  # its runner claimed it: the script started
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 1), exit_code=1))
    ended = current(runs, run)
    assert (ended.status, ended.exit_code, ended.output_key) == (RunStatus.FAILED, 1, None)


def test_a_task_that_stopped_before_any_runner_claimed_the_run_runs_it_again_uncounted(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects, clock: FakeClock
) -> None:
    # Given the last attempt of a run, dispatched, that no runner claimed (a runner claims
    # each run just before its script starts: the script never ran)
    run = dispatched_run(runs, max_attempts=1)

    # When its task stops
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 1)))

    # Then it is not failed: it runs again at once, the attempt not counted against
    # max_attempts, and its history says why
    again = current(runs, run)
    assert (again.status, again.attempt, again.not_before) == (
        RunStatus.PENDING,
        2,
        epoch(clock()),
    )
    (unstarted,) = again.attempts
    assert unstarted.script_started is False
    assert unstarted.error is not None
    assert unstarted.error.startswith("the script never started")

    # When its second attempt's script starts (claimed) and its task dies too
    runs.mark_queued(again, clock(), epoch(clock()) + 600)
    assert runs.claim(again, "claim-2", clock(), 60)
    objects.put_claim(current(runs, again))
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 2)))

    # Then that one counts: the run's one attempt is spent
    assert current(runs, run).status is RunStatus.FAILED


def test_a_run_named_by_its_pack_claim_counts_as_started(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given the last attempt of a run whose pack claim (one object for the pack's runs of its
    # second) names it, its own claim absent
    run = dispatched_run(runs, max_attempts=1)
    assert run.claim_pack is not None
    assert run.claim_second is not None
    named = {"runs": [f"{run.job_id}/{run.key}/1"], "token": "t"}
    objects.objects[keys.pack_claim_key(run.claim_pack, run.claim_second)] = json.dumps(named)

    # When its task stops, Then the attempt counts: the run fails
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 1)))
    assert current(runs, run).status is RunStatus.FAILED


def test_a_run_whose_tasks_never_start_fails_after_a_few_uncounted_attempts(
    outcomes: RunOutcomes, runs: FakeRunStore
) -> None:
    # Given a run whose every task stops before any runner claims it (an image that cannot
    # be pulled, say)
    run = dispatched_run(runs, max_attempts=1)
    for attempt in range(1, MAX_UNSTARTED_ATTEMPTS + 2):
        outcomes.on_task_stopped(task_stopped((run.job_id, run.key, attempt)))
        again = current(runs, run)
        if again.status is not RunStatus.PENDING:
            break
        runs.mark_queued(again, NOON, epoch(NOON) + 600)
        assert runs.claim(again, f"claim-{attempt + 1}", NOON, 60)

    # Then it fails after MAX_UNSTARTED_ATTEMPTS attempts that did not count, not forever
    ended = current(runs, run)
    assert (ended.status, ended.attempt) == (RunStatus.FAILED, MAX_UNSTARTED_ATTEMPTS + 1)


def test_a_task_event_that_is_not_a_stop_or_names_an_old_attempt_changes_nothing(
    outcomes: RunOutcomes, runs: FakeRunStore
) -> None:
    # Given a dispatched run
    run = dispatched_run(runs)

    # When a task is only RUNNING, or a stopped task ran the run's attempt 0 (an old one)
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 1)) | {"lastStatus": "RUNNING"})
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 0)))
    outcomes.on_task_stopped(task_stopped(("no-such-job", run.key, 1)))

    # Then the run is as it was
    assert current(runs, run) == run


# -- what must not move a run -------------------------------------------------------------------


def test_a_report_for_an_old_attempt_changes_nothing(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a run retried after its first attempt failed
    run = dispatched_run(runs)
    outcomes.on_report(objects.put_report(finished(run, RunStatus.FAILED), "finished"))
    retried = current(runs, run)
    assert retried.attempt == 2

    # When reports of attempt 1 arrive late (again, or a started one)
    outcomes.on_report(objects.put_report(report(run, started_at=NOON), "started"))
    outcomes.on_report(objects.put_report(finished(run, RunStatus.SUCCEEDED), "finished"))

    # Then attempt 2 is untouched
    assert current(runs, run) == retried


def test_a_report_for_a_finished_run_changes_nothing(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a run that SUCCEEDED
    run = dispatched_run(runs)
    outcomes.on_report(objects.put_report(finished(run, RunStatus.SUCCEEDED), "finished"))
    done = current(runs, run)

    # When a started report, a contradicting finished report, or its stopped task's event arrive
    outcomes.on_report(objects.put_report(report(run, started_at=NOON), "started"))
    outcomes.on_report(objects.put_report(finished(run, RunStatus.FAILED), "finished"))
    outcomes.on_task_stopped(task_stopped((run.job_id, run.key, 1)))

    # Then the run is as it was
    assert current(runs, run) == done


def test_unreadable_reports_and_other_objects_are_ignored(
    outcomes: RunOutcomes, runs: FakeRunStore, objects: FakeRunObjects
) -> None:
    # Given a dispatched run
    run = dispatched_run(runs)
    key = keys.report_key(run.job_id, run.key, 1, "finished")

    # When its report is malformed, missing, or the object is not a report at all
    objects.objects[key] = "{not json"
    outcomes.on_report(key)
    outcomes.on_report(keys.report_key(run.job_id, run.key, 1, "started"))
    outcomes.on_report("reports/elsewhere.txt")

    # Then the run is as it was
    assert current(runs, run) == run
