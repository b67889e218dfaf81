"""RunService on in-memory stores: a job's run history, one run and its output, and "run now"
through the normal queue (with the watcher as the safety net when the queue refuses)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from scheduler import keys
from scheduler.errors import InvalidInput, InvalidPageToken, JobNotFound, JobPaused, RunNotFound
from scheduler.jobs.job_models import BackfillRequest, Job, RunNowRequest
from scheduler.pagination import PageTokens
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun
from scheduler.pipeline.watcher import Watcher, WatcherPolicy
from scheduler.runs.run_models import Run, RunReport, RunStatus, RunTrigger, new_run
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.runs.run_service import OUTPUT_LINK_SECONDS, RunService
from scheduler.schedule.cron import DstPolicy, Gap
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import epoch
from unit.fakes import (
    FakeClock,
    FakeJobStore,
    FakeRunObjects,
    FakeRunQueue,
    FakeRunStore,
    FakeScheduleStore,
    add_job,
)

START = datetime(2026, 11, 27, 11, 30, 0, 250000, tzinfo=UTC)
SECRET = b"unit-test-page-token-secret-0123456789"
GRACE = 300


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def service(
    jobs: FakeJobStore,
    runs: FakeRunStore,
    schedule: FakeScheduleStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
) -> RunService:
    return RunService(
        jobs,
        runs,
        clock=clock,
        page_tokens=PageTokens(SECRET),
        schedule=schedule,
        queue=queue,
        dispatch_grace_seconds=GRACE,
        objects=objects,
    )


@pytest.fixture
def job(jobs: FakeJobStore) -> Job:
    """alice's hourly job (next run 12:00)."""
    return add_job(jobs, now=START, name="hourly", parameters={"region": "eu"})


def past_run(runs: FakeRunStore, job: Job, hour: int, report: RunReport | None = None) -> Run:
    """A scheduled run of `job` at `hour`:00 that day, finished with `report` if given."""
    run = new_run(
        job_id=job.job_id,
        user_id=job.user_id,
        scheduled_second=epoch(datetime(2026, 11, 27, hour, tzinfo=UTC)),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=job.max_attempts,
        timeout_seconds=job.timeout_seconds,
        now=START,
    )
    assert runs.create(run, keys.script_key(job.script_sha256), job.parameters)
    if report is not None:
        assert runs.mark_queued(run, START, run.not_before + 600)
        finished = report.model_copy(update={"job_id": job.job_id, "run_key": run.key})
        output = keys.output_key(job.job_id, run.key, 1) if report.output_uploaded else None
        assert runs.finish(run, finished, output, START)
    found = runs.get(job.job_id, run.key)
    assert found is not None
    return found


def succeeded(tail: str, *, uploaded: bool) -> RunReport:
    return RunReport(
        job_id="",
        run_key="",
        attempt=1,
        status=RunStatus.SUCCEEDED,
        exit_code=0,
        output_tail=tail,
        output_uploaded=uploaded,
    )


# -- history ------------------------------------------------------------------------------------


def test_list_pages_through_the_jobs_runs_newest_first(
    service: RunService, runs: FakeRunStore, job: Job
) -> None:
    # Given three runs of alice's job
    made = [past_run(runs, job, hour) for hour in (8, 9, 10)]

    # When she lists them two at a time
    first = service.list("alice", job.job_id, 2, None)
    assert first.next_token is not None
    second = service.list("alice", job.job_id, 2, first.next_token)

    # Then she gets them newest first, each once
    assert [run.key for run in first.items] == [made[2].key, made[1].key]
    assert [run.key for run in second.items] == [made[0].key]
    assert second.next_token is None


def test_a_runs_page_token_is_bound_to_its_owner_and_job(
    service: RunService, runs: FakeRunStore, jobs: FakeJobStore, job: Job
) -> None:
    # Given a page token for alice's job, and another job of hers
    for hour in (8, 9):
        past_run(runs, job, hour)
    token = service.list("alice", job.job_id, 1, None).next_token
    assert token is not None
    other = add_job(jobs, now=START, name="other")

    # Then it does not page through her other job's runs
    with pytest.raises(InvalidPageToken):
        service.list("alice", other.job_id, 1, token)


def test_someone_elses_runs_are_not_found(
    service: RunService, runs: FakeRunStore, job: Job
) -> None:
    # Given a run of alice's job
    run = past_run(runs, job, 9)

    # Then bob can neither list nor read it: for him the job does not exist
    with pytest.raises(JobNotFound):
        service.list("bob", job.job_id, 10, None)
    with pytest.raises(JobNotFound):
        service.get("bob", job.job_id, run.key)
    with pytest.raises(JobNotFound):
        service.output("bob", job.job_id, run.key)


def test_get_returns_the_run_and_an_unknown_key_is_not_found(
    service: RunService, runs: FakeRunStore, job: Job
) -> None:
    run = past_run(runs, job, 9)
    assert service.get("alice", job.job_id, run.key) == run
    with pytest.raises(RunNotFound):
        service.get("alice", job.job_id, "0000000000-nope")


# -- output -------------------------------------------------------------------------------------


def test_an_uploaded_output_is_answered_with_a_short_lived_link(
    service: RunService, runs: FakeRunStore, objects: FakeRunObjects, job: Job
) -> None:
    # Given a run whose output was too long for its tail and was uploaded
    run = past_run(runs, job, 9, succeeded("...the end\n", uploaded=True))

    # When its output is asked for
    output = service.output("alice", job.job_id, run.key)

    # Then the answer is a link to the output object, valid for a few minutes
    key = keys.output_key(job.job_id, run.key, 1)
    assert objects.links == [(key, OUTPUT_LINK_SECONDS)]
    assert output.url is not None
    assert key in output.url
    assert output.text is None


def test_an_output_that_fits_in_the_tail_is_answered_as_text(
    service: RunService, runs: FakeRunStore, objects: FakeRunObjects, job: Job
) -> None:
    # Given a run whose whole output is its tail, and a run that left no output yet
    whole = past_run(runs, job, 9, succeeded("hello\n", uploaded=False))
    silent = past_run(runs, job, 10)

    # Then the tail is the answer, and no output is an empty text
    assert service.output("alice", job.job_id, whole.key).model_dump() == {
        "url": None,
        "text": "hello\n",
    }
    assert service.output("alice", job.job_id, silent.key).text == ""
    assert objects.links == []


# -- run now ------------------------------------------------------------------------------------


def test_run_now_queues_a_manual_run_at_the_next_whole_second(
    service: RunService,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    schedule: FakeScheduleStore,
    job: Job,
) -> None:
    # Given 11:30:00.25 and alice's hourly job
    # When she runs it now
    run = service.run_now("alice", job.job_id)

    # Then a MANUAL run for 11:30:01 exists, attempt 1, with the job's script and parameters
    second = epoch(datetime(2026, 11, 27, 11, 30, 1, tzinfo=UTC))
    assert re.fullmatch(rf"{second:010d}-{job.job_id}-m[0-9a-f]{{8}}", run.key)
    assert (run.trigger, run.execution_time, run.not_before, run.attempt) == (
        RunTrigger.MANUAL,
        second,
        second,
        1,
    )
    assert runs.script_of(job.job_id, run.key) == (
        keys.script_key(job.script_sha256),
        {"region": "eu"},
    )
    # And it was sent alone, then marked QUEUED with its deadline
    assert queue.accepted == [
        DispatchMessage(
            pack_id=f"{run.key}-1",
            user_id="alice",
            runs=[DueRun(job_id=job.job_id, key=run.key, attempt=1)],
        )
    ]
    assert (run.status, run.queued_at) == (RunStatus.QUEUED, START)
    stored = runs.stored(job.job_id, run.key)
    assert stored is not None
    assert stored.run.status is RunStatus.QUEUED
    assert stored.deadline == second + job.timeout_seconds + GRACE
    # And its schedule item is gone: only the job's own next occurrence is left
    assert schedule.items() == [
        ScheduleItem.occurrence(job.job_id, "alice", datetime(2026, 11, 27, 12, tzinfo=UTC))
    ]


def test_run_now_on_a_whole_second_runs_at_that_second(
    service: RunService, clock: FakeClock, job: Job
) -> None:
    clock.set(datetime(2026, 11, 27, 11, 45, tzinfo=UTC))
    run = service.run_now("alice", job.job_id)
    assert run.execution_time == epoch(datetime(2026, 11, 27, 11, 45, tzinfo=UTC))


def test_many_run_nows_in_the_same_second_each_run_at_that_second(
    service: RunService, runs: FakeRunStore, queue: FakeRunQueue, job: Job
) -> None:
    # Given a run now at 11:30:00.25 (run at 11:30:01)
    first = service.run_now("alice", job.job_id)

    # When she clicks nine more times within the same second (the sixth used to be a 500)
    more = [service.run_now("alice", job.job_id) for _ in range(9)]

    # Then each is a run of its own, all at that second (none pushed into a later one), queued
    assert {run.execution_time for run in more} == {first.execution_time}
    assert {run.not_before for run in more} == {first.execution_time}
    assert len({run.key for run in [first, *more]}) == 10
    assert [key for key, _ in queue.accepted_runs()] == [run.key for run in [first, *more]]
    assert len(runs.all()) == 10


def test_when_the_queue_refuses_the_run_stays_pending_for_the_watcher(
    service: RunService,
    runs: FakeRunStore,
    jobs: FakeJobStore,
    queue: FakeRunQueue,
    schedule: FakeScheduleStore,
    objects: FakeRunObjects,
    clock: FakeClock,
    job: Job,
) -> None:
    # Given the queue refuses messages
    queue.refuse()

    # When alice runs her job now
    run = service.run_now("alice", job.job_id)

    # Then the run exists, PENDING, and its MANUAL schedule item stays
    assert run.status is RunStatus.PENDING
    stored = runs.get(job.job_id, run.key)
    assert stored is not None
    assert stored.status is RunStatus.PENDING
    manual = ScheduleItem(
        job_id=job.job_id,
        user_id="alice",
        scheduled_at=run.execution_time,
        due_at=run.execution_time,
        trigger=RunTrigger.MANUAL,
        run_key=run.key,
    )
    assert manual in schedule.items(job.job_id)

    # And when the queue is back, the watcher's next tick sends it and drops the item
    queue.accept()
    clock.advance(10)
    policy = WatcherPolicy(
        lookahead_seconds=0,
        overlap_seconds=300,
        max_window_seconds=1800,
        pack_window_seconds=5,
        max_runs_per_task=10,
        dispatch_grace_seconds=GRACE,
    )
    outcomes = RunOutcomes(
        runs, objects, retry_base_seconds=30, running_grace_seconds=60, clock=clock
    )
    Watcher(jobs, schedule, runs, queue, outcomes, policy, clock).tick()
    assert queue.accepted_runs() == [(run.key, 1)]
    after = runs.get(job.job_id, run.key)
    assert after is not None
    assert after.status is RunStatus.QUEUED
    assert manual not in schedule.items(job.job_id)


def test_run_now_of_someone_elses_job_is_not_found(
    service: RunService, runs: FakeRunStore, queue: FakeRunQueue, job: Job
) -> None:
    with pytest.raises(JobNotFound):
        service.run_now("bob", job.job_id)
    assert runs.all() == []
    assert queue.received == []


def test_run_now_does_not_take_the_second_of_a_run_the_watcher_already_created(
    service: RunService, runs: FakeRunStore, clock: FakeClock, job: Job
) -> None:
    # Given the watcher already created the 12:00 run (it looks ahead)
    scheduled = past_run(runs, job, 12)
    clock.set(datetime(2026, 11, 27, 11, 59, 59, 500000, tzinfo=UTC))

    # When alice runs the job now, at 11:59:59.5 (its second is 12:00:00)
    run = service.run_now("alice", job.job_id)

    # Then the manual run is a run of its own, at 12:00:00 beside the scheduled one
    assert run.execution_time == scheduled.execution_time
    assert run.key != scheduled.key
    assert run.trigger is RunTrigger.MANUAL
    kept = runs.get(job.job_id, scheduled.key)
    assert kept is not None
    assert kept.trigger is RunTrigger.SCHEDULE


def test_a_run_now_in_the_second_of_an_occurrence_does_not_take_its_place(
    service: RunService,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    schedule: FakeScheduleStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
    job: Job,
) -> None:
    # Given a run now at 11:59:59.5, which runs at 12:00:00, the hourly job's next occurrence
    clock.set(datetime(2026, 11, 27, 11, 59, 59, 500000, tzinfo=UTC))
    manual = service.run_now("alice", job.job_id)

    # When the watcher takes the 12:00 occurrence
    policy = WatcherPolicy(
        lookahead_seconds=60,
        overlap_seconds=300,
        max_window_seconds=1800,
        pack_window_seconds=5,
        max_runs_per_task=10,
        dispatch_grace_seconds=GRACE,
    )
    outcomes = RunOutcomes(
        runs, objects, retry_base_seconds=30, running_grace_seconds=60, clock=clock
    )
    Watcher(jobs, schedule, runs, queue, outcomes, policy, clock).tick()

    # Then the occurrence has its own SCHEDULE run beside the manual one: both queued
    at_noon = [run for run in runs.all() if run.execution_time == manual.execution_time]
    assert sorted(run.trigger for run in at_noon) == [RunTrigger.MANUAL, RunTrigger.SCHEDULE]
    assert {run.status for run in at_noon} == {RunStatus.QUEUED}


def test_run_now_and_backfill_of_a_paused_job_are_refused_and_write_nothing(
    service: RunService,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    schedule: FakeScheduleStore,
    queue: FakeRunQueue,
    job: Job,
) -> None:
    # Given alice's job, paused
    assert jobs.pause(job, START)
    items = schedule.items()

    # When she runs it now, or backfills it, both are refused: a paused job starts no run
    with pytest.raises(JobPaused, match="resume"):
        service.run_now("alice", job.job_id)
    backfill = BackfillRequest.model_validate(
        {"from": "2026-11-27T00:00:00Z", "to": "2026-11-27T03:00:00Z"}
    )
    with pytest.raises(JobPaused):
        service.backfill("alice", job.job_id, backfill)

    # And nothing was written or sent
    assert runs.all() == []
    assert queue.received == []
    assert schedule.items() == items


def test_run_now_with_its_own_parameters_and_a_reason_records_both(
    service: RunService, runs: FakeRunStore, job: Job
) -> None:
    # When alice runs her job now with other parameters, saying why
    request = RunNowRequest(parameters={"region": "us", "dry_run": True}, reason="INC-42 rerun")
    run = service.run_now("alice", job.job_id, request)

    # Then this run gets those parameters (the job keeps its own) and shows the reason
    assert runs.script_of(job.job_id, run.key)[1] == {"region": "us", "dry_run": True}
    stored = runs.get(job.job_id, run.key)
    assert stored is not None
    assert (stored.reason, stored.parameters_overridden) == ("INC-42 rerun", True)
    assert job.parameters == {"region": "eu"}

    # And a plain run now still takes the job's parameters, with no reason
    plain = service.run_now("alice", job.job_id)
    assert runs.script_of(job.job_id, plain.key)[1] == {"region": "eu"}
    assert (plain.reason, plain.parameters_overridden) == (None, None)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"parameters": {"blob": "x" * 20000}}, "at most 16384"),
        ({"reason": ""}, "at least 1 character"),
        ({"reason": "r" * 300}, "at most 256 characters"),
        ({"params": {}}, "Extra inputs are not permitted"),
    ],
)
def test_run_now_overrides_are_checked_like_the_jobs_fields(
    body: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        RunNowRequest.model_validate(body)


# -- backfill ---------------------------------------------------------------------------------


def backfill(**fields: object) -> BackfillRequest:
    return BackfillRequest.model_validate(fields)


def test_a_backfill_runs_the_ranges_occurrences_now_and_fills_only_the_gaps(
    service: RunService,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    schedule: FakeScheduleStore,
    job: Job,
) -> None:
    # Given alice's hourly job, whose 08:00 run exists already (it ran)
    past_run(runs, job, 8)
    window = {"from": "2026-11-27T06:30:00Z", "to": "2026-11-27T10:00:00Z"}

    # When she asks first for a dry run, then for the backfill itself
    dry = service.backfill("alice", job.job_id, backfill(**window, dry_run=True))
    done = service.backfill("alice", job.job_id, backfill(**window, reason="INC-9"))

    # Then the dry run listed 07:00-10:00 and created nothing; the backfill queued the three
    # occurrences without a run, as BACKFILL runs starting now, and left 08:00 alone
    assert [o.result for o in dry.occurrences] == [
        "would_create",
        "exists",
        "would_create",
        "would_create",
    ]
    assert [o.result for o in done.occurrences] == ["created", "exists", "created", "created"]
    created = [runs.get(job.job_id, o.run_key) for o in done.occurrences if o.result == "created"]
    assert all(r is not None and r.trigger is RunTrigger.BACKFILL for r in created)
    assert all(r is not None and r.status is RunStatus.QUEUED for r in created)
    assert all(r is not None and r.reason == "INC-9" for r in created)
    assert all(r is not None and r.not_before == epoch(START) + 1 for r in created)
    assert len(queue.accepted) == 1  # one owner: one pack
    assert [i.trigger for i in schedule.items()] == [RunTrigger.SCHEDULE]  # fallbacks gone

    # And repeating it changes nothing
    again = service.backfill("alice", job.job_id, backfill(**window))
    assert {o.result for o in again.occurrences} == {"exists"}


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"from": "2026-11-27T10:00:00Z", "to": "2026-11-27T13:00:00Z"}, "in the past"),
        ({"from": "2026-11-01T00:00:00Z", "to": "2026-11-27T00:00:00Z"}, "over 100 occurrences"),
    ],
)
def test_a_backfill_into_the_future_or_too_large_is_refused(
    service: RunService, job: Job, window: dict[str, str], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        service.backfill("alice", job.job_id, backfill(**window))


def test_a_backfill_range_must_be_in_order() -> None:
    with pytest.raises(ValidationError, match="must be after"):
        backfill(**{"from": "2026-11-27T10:00:00Z", "to": "2026-11-27T09:00:00Z"})


def test_a_backfill_follows_the_jobs_dst_policy(
    service: RunService, jobs: FakeJobStore, runs: FakeRunStore
) -> None:
    # Given a New York job at 02:30 that skips the time the spring jump skips
    job = add_job(jobs, now=START, name="ny", schedule="30 2 * * *", timezone="America/New_York")
    jobs.update(job.model_copy(update={"dst": DstPolicy(gap=Gap.SKIP)}), job, "scripts/x.py")
    window = {"from": "2026-03-07T00:00:00Z", "to": "2026-03-10T00:00:00Z", "dry_run": True}

    # When the spring of 2026 is backfilled, Then March 8 (02:30 did not exist) is not listed
    answer = service.backfill("alice", job.job_id, backfill(**window))
    assert [o.scheduled_at.day for o in answer.occurrences] == [7, 9]
