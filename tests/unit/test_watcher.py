"""The watcher's tick on in-memory stores: due schedule items become queued runs exactly once,
the schedule moves on, the cursor never passes what could not be sent, and silent runs are
concluded.

Whether one tick also takes a job's next occurrence when it falls due inside the tick's own
window (after `now`) is being changed; these tests use schedules whose next occurrence falls
outside the window, so they hold either way."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler import keys
from scheduler.jobs.job_models import CatchUp, CatchUpPolicy, Job, JobStatus
from scheduler.pipeline.watcher import TickReport, Watcher, WatcherPolicy
from scheduler.runs.run_models import (
    AttemptRecord,
    ConcurrencyPolicy,
    Run,
    RunReport,
    RunStatus,
    RunTrigger,
    new_run,
)
from scheduler.runs.run_outcomes import RunOutcomes, retry_delay
from scheduler.runs.run_service import RunService
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
    dies_once,
    make_job,
)

DAY = datetime(2026, 11, 27, tzinfo=UTC)
CREATED = DAY.replace(hour=11, minute=30)  # hourly jobs created then next run at 12:00
TICK = DAY.replace(hour=11, minute=59)  # a tick whose window is [11:54:00, 12:00:30]
NOON = DAY.replace(hour=12)
RETRY_BASE = 30
GRACE = 300
YEARLY = "0 0 1 1 *"  # a schedule whose next run is far from every window here


def policy(**changes: Any) -> WatcherPolicy:
    settings: dict[str, Any] = {
        "lookahead_seconds": 90,
        "overlap_seconds": 300,
        "max_window_seconds": 1800,
        "pack_window_seconds": 5,
        "max_runs_per_task": 10,
        "dispatch_grace_seconds": GRACE,
    }
    return WatcherPolicy(**settings | changes)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(TICK)


def make_watcher(
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
    **policy_changes: Any,
) -> Watcher:
    outcomes = RunOutcomes(
        runs, objects, retry_base_seconds=RETRY_BASE, running_grace_seconds=60, clock=clock
    )
    return Watcher(jobs, schedule, runs, queue, outcomes, policy(**policy_changes), clock)


@pytest.fixture
def watcher(
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
) -> Watcher:
    return make_watcher(jobs, schedule, runs, queue, objects, clock)


def hourly(jobs: FakeJobStore, name: str = "hourly", **fields: Any) -> Job:
    """A job running at minute 0 of every hour, created at 11:30 (next run: 12:00)."""
    return add_job(jobs, now=CREATED, name=name, **fields)


def run_key(job: Job, at: datetime) -> str:
    return keys.run_key(at, job.job_id)


def existing_run(runs: FakeRunStore, job: Job, at: datetime, *, queued_until: int | None) -> Run:
    """A scheduled run of `job` at `at`, as a tick created it; QUEUED with that deadline if
    `queued_until` is given."""
    run = new_run(
        job_id=job.job_id,
        user_id=job.user_id,
        scheduled_second=epoch(at),
        trigger=RunTrigger.SCHEDULE,
        max_attempts=job.max_attempts,
        timeout_seconds=job.timeout_seconds,
        now=at,
    )
    assert runs.create(run, keys.script_key(job.script_sha256), job.parameters)
    if queued_until is not None:
        assert runs.mark_queued(run, at, queued_until)
    found = runs.get(job.job_id, run.key)
    assert found is not None
    return found


def status_of(runs: FakeRunStore, job: Job, key: str) -> RunStatus | None:
    run = runs.get(job.job_id, key)
    return run.status if run else None


# -- one due run --------------------------------------------------------------------------------


def test_a_tick_queues_a_due_run_once_and_writes_the_next_occurrence(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given an hourly job due at 12:00
    job = hourly(jobs)

    # When the watcher ticks at 11:59 (looking 90 s ahead)
    report = watcher.tick()

    # Then the 12:00 run is created, sent once and QUEUED, its deadline counted from 12:00
    key = run_key(job, NOON)
    assert queue.accepted_runs() == [(key, 1)]
    assert queue.accepted[0].pack_id == f"{key}-1"
    stored = runs.stored(job.job_id, key)
    assert stored is not None
    assert (stored.run.status, stored.run.trigger, stored.run.queued_at) == (
        RunStatus.QUEUED,
        RunTrigger.SCHEDULE,
        TICK,
    )
    assert stored.deadline == epoch(NOON) + job.timeout_seconds + GRACE
    assert stored.script_key == keys.script_key(job.script_sha256)
    # And the job's schedule item is now its 13:00 occurrence, shown on the job too; the
    # 12:00 item is left to expire (not deleted: 1 WRU a run), taken since the job shows 13:00
    thirteen = NOON + timedelta(hours=1)
    assert jobs.upcoming() == [ScheduleItem.occurrence(job.job_id, "alice", thirteen)]
    assert schedule.items() == [
        ScheduleItem.occurrence(job.job_id, "alice", NOON),
        ScheduleItem.occurrence(job.job_id, "alice", thirteen),
    ]
    stored_job = jobs.get(job.job_id)
    assert stored_job is not None
    assert stored_job.next_run_at == thirteen
    # And the report and the cursor say so
    assert (report.window_start, report.window_end) == (
        epoch(TICK - timedelta(seconds=300)),
        epoch(TICK + timedelta(seconds=90)),
    )
    assert (report.items, report.queued, report.already_handled) == (1, 1, 0)
    # (the cursor stops at the tick's own time, not the window's end: an item written after
    # the tick, a retry say, may be due before that end)
    assert schedule.cursor() == epoch(TICK)


def test_overlapping_ticks_do_not_queue_a_run_twice(
    watcher: Watcher, jobs: FakeJobStore, queue: FakeRunQueue, clock: FakeClock
) -> None:
    # Given a tick that queued the 12:00 run
    job = hourly(jobs)
    watcher.tick()

    # When the next ticks look back over the same seconds (at once, and a minute later)
    again = watcher.tick()
    clock.advance(60)
    later = watcher.tick()

    # Then nothing more is sent
    assert queue.accepted_runs() == [(run_key(job, NOON), 1)]
    assert (again.queued, later.queued) == (0, 0)


def test_a_tick_that_died_before_moving_the_schedule_is_finished_by_sending_the_run_again(
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
) -> None:
    # Given a tick that queued the 12:00 run and died before replacing its schedule item
    jobs = FakeJobStore(schedule)
    dies_once(jobs, "advance")  # the watcher's Lambda timing out there, say, before it writes
    job = hourly(jobs)
    watcher = make_watcher(jobs, schedule, runs, queue, objects, clock)
    with pytest.raises(TimeoutError):
        watcher.tick()
    assert ScheduleItem.occurrence(job.job_id, "alice", NOON) in schedule.items()

    # When the next tick sees the same item
    clock.advance(60)
    report = watcher.tick()

    # Then the run, QUEUED but perhaps never sent, is sent again (the executor's claim lets one
    # dispatch through), no second run is created, and the schedule moves on
    assert queue.accepted_runs() == [(run_key(job, NOON), 1)] * 2
    assert (report.queued, report.already_handled) == (1, 0)
    assert [r.key for r in runs.all()] == [run_key(job, NOON)]
    assert status_of(runs, job, run_key(job, NOON)) is RunStatus.QUEUED
    assert jobs.upcoming() == [
        ScheduleItem.occurrence(job.job_id, "alice", NOON + timedelta(hours=1))
    ]


def test_a_tick_that_died_between_the_next_item_and_the_job_loses_and_doubles_nothing(
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
) -> None:
    # Given a tick that queued the 12:00 run, put the 13:00 item and died before moving the job
    jobs = FakeJobStore(schedule)
    dies_once(jobs, "move_job")  # after putting the next item, before moving the job to it
    job = hourly(jobs)
    watcher = make_watcher(jobs, schedule, runs, queue, objects, clock)
    with pytest.raises(TimeoutError):
        watcher.tick()
    thirteen = NOON + timedelta(hours=1)
    assert jobs.upcoming() == [ScheduleItem.occurrence(job.job_id, "alice", NOON)]

    # When the next ticks see both items
    clock.advance(60)
    watcher.tick()
    clock.advance(60)
    again = watcher.tick()

    # Then the 12:00 run is sent again once (the job still showed it), the job moves to 13:00,
    # and after that the 12:00 item is passed over: taken, left to expire
    assert queue.accepted_runs() == [(run_key(job, NOON), 1)] * 2
    assert jobs.upcoming() == [ScheduleItem.occurrence(job.job_id, "alice", thirteen)]
    assert (again.items, again.queued) == (0, 0)
    assert [r.key for r in runs.all()] == [run_key(job, NOON)]


def test_an_item_put_by_a_taker_that_lost_to_an_update_is_never_run(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    clock: FakeClock,
) -> None:
    # Given a stale taker that put the job's 13:00 item after an update had moved the job to
    # 12:30 (its move of the job then failed: the job shows neither 12:00 nor 13:00)
    job = hourly(jobs)
    half_past = NOON + timedelta(minutes=30)
    moved = job.model_copy(update={"schedule": "30 * * * *", "next_run_at": half_past})
    assert jobs.update(moved, job, keys.script_key(job.script_sha256)) is True
    thirteen = NOON + timedelta(hours=1)
    assert jobs.advance(job, ScheduleItem.occurrence(job.job_id, "alice", NOON), thirteen) is None
    assert ScheduleItem.occurrence(job.job_id, "alice", thirteen) in schedule.items()

    # When the watcher ticks through 13:00
    for minute in range(0, 70):
        clock.set(TICK + timedelta(minutes=minute))
        watcher.tick()

    # Then only the occurrence the job showed ran (12:30; it shows 13:30 next): the orphan
    # 13:00 item made no run
    assert [r.scheduled_at for r in runs.all()] == [half_past]
    assert jobs.upcoming() == [
        ScheduleItem.occurrence(job.job_id, "alice", thirteen + timedelta(minutes=30))
    ]


# -- jobs that should not run -------------------------------------------------------------------


@pytest.mark.parametrize("gone", ["paused", "deleted"])
def test_the_item_of_a_paused_or_deleted_job_is_dropped(
    gone: str,
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given a job paused (or deleted) after the tick's item was read: its item lingers
    job = hourly(jobs)
    item = ScheduleItem.occurrence(job.job_id, "alice", NOON)
    assert (jobs.pause(job, CREATED) if gone == "paused" else jobs.delete(job)) is True
    schedule.put(item)

    # When the watcher ticks
    report = watcher.tick()

    # Then no run is created or sent, and the item is not taken (nor deleted: it expires)
    assert runs.all() == []
    assert queue.received == []
    assert jobs.upcoming() == []
    assert (report.items, report.queued) == (0, 0)


@pytest.mark.parametrize(
    ("policy_name", "previous"),
    [
        (ConcurrencyPolicy.FORBID, RunStatus.SUCCEEDED),
        (ConcurrencyPolicy.ALLOW, RunStatus.QUEUED),
    ],
)
def test_a_run_is_queued_when_its_policy_allows_it(
    policy_name: ConcurrencyPolicy,
    previous: RunStatus,
    watcher: Watcher,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given the 11:00 run finished (FORBID), or unfinished (ALLOW)
    job = hourly(jobs, concurrency_policy=policy_name)
    earlier = existing_run(
        runs, job, NOON - timedelta(hours=1), queued_until=epoch(NOON + timedelta(hours=2))
    )
    if previous is RunStatus.SUCCEEDED:
        done = RunReport(
            job_id=job.job_id, run_key=earlier.key, attempt=1, status=RunStatus.SUCCEEDED
        )
        assert runs.finish(earlier, done, None, TICK)

    # When the 12:00 run falls due, Then it is queued
    watcher.tick()
    assert queue.accepted_runs() == [(run_key(job, NOON), 1)]


# -- packs --------------------------------------------------------------------------------------


def test_one_owners_runs_due_together_share_tasks_of_at_most_max_runs(
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
) -> None:
    # Given three of alice's jobs and one of bob's due at 12:00, and one of alice's at 12:01
    at_noon = [hourly(jobs, name=f"a{n}") for n in range(3)]
    bobs = hourly(jobs, name="b", user_id="bob")
    later = add_job(jobs, now=CREATED, name="a-later", schedule="1 * * * *")
    owner = {job.job_id: job.user_id for job in [*at_noon, bobs, later]}

    # When a tick at 11:59:45 takes them, with at most 2 runs a task
    clock.set(TICK + timedelta(seconds=45))
    watcher = make_watcher(jobs, schedule, runs, queue, objects, clock, max_runs_per_task=2)
    report = watcher.tick()

    # Then every run is sent once
    assert report.queued == 5
    sent = [run.job_id for message in queue.accepted for run in message.runs]
    assert Counter(sent) == Counter(owner.keys())
    # And each message holds one owner's runs due in the same pack window, at most 2
    for message in queue.accepted:
        assert {owner[run.job_id] for run in message.runs} == {message.user_id}
        assert len({epoch_of(run.key) // 5 for run in message.runs}) == 1
        assert 1 <= len(message.runs) <= 2
        assert message.pack_id == f"{message.runs[0].key}-1"
    packs = sorted((m.user_id, epoch_of(m.runs[0].key), len(m.runs)) for m in queue.accepted)
    noon, one_past = epoch(NOON), epoch(NOON) + 60
    assert packs == [
        ("alice", noon, 1),
        ("alice", noon, 2),
        ("alice", one_past, 1),
        ("bob", noon, 1),
    ]


def epoch_of(run_key: str) -> int:
    return int(run_key.split("-", maxsplit=1)[0])


def test_runs_due_within_the_pack_window_share_a_task(
    watcher: Watcher,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given manual runs of one job at 12:00:01, 12:00:03 (one 5 s window) and 12:00:06
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    made = []
    for second in (1, 3, 6):
        run = new_run(
            job_id=job.job_id,
            user_id="alice",
            scheduled_second=epoch(NOON) + second,
            trigger=RunTrigger.MANUAL,
            max_attempts=3,
            timeout_seconds=300,
            now=CREATED,
        )
        item = ScheduleItem(
            job_id=job.job_id,
            user_id="alice",
            scheduled_at=run.execution_time,
            due_at=run.execution_time,
            trigger=RunTrigger.MANUAL,
            run_key=run.key,
        )
        assert runs.create_with_schedule_item(run, "scripts/x.py", {}, item)
        made.append(run.key)

    # When the watcher ticks
    watcher.tick()

    # Then the first two go in one task, the third in another
    assert [[run.key for run in m.runs] for m in queue.accepted] == [made[:2], made[2:]]


# -- the queue refusing -------------------------------------------------------------------------


def test_an_unsent_run_keeps_its_item_and_holds_the_cursor_before_it(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    clock: FakeClock,
) -> None:
    # Given the queue refuses every message
    job = hourly(jobs)
    queue.refuse()

    # When the watcher ticks
    report = watcher.tick()

    # Then the run exists (created QUEUED, to be sent), its item stays, and the cursor stops
    # just before it
    key = run_key(job, NOON)
    assert report.queued == 0
    assert status_of(runs, job, key) is RunStatus.QUEUED
    assert schedule.items() == [ScheduleItem.occurrence(job.job_id, "alice", NOON)]
    assert schedule.cursor() < epoch(NOON)

    # When the queue is back only after a longer outage than the ticks' look-back
    queue.accept()
    clock.set(NOON + timedelta(minutes=20))
    late = watcher.tick()

    # Then the next tick starts from the cursor and sends the run, once, 20 minutes late
    assert late.window_start == epoch(TICK)
    assert queue.accepted_runs() == [(key, 1)]
    assert late.late_seconds == [20 * 60]
    assert status_of(runs, job, key) is RunStatus.QUEUED
    assert jobs.upcoming() == [
        ScheduleItem.occurrence(job.job_id, "alice", NOON + timedelta(hours=1))
    ]


def test_a_run_never_sent_through_an_outage_past_its_deadline_is_sent_not_swept(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    clock: FakeClock,
) -> None:
    # Given a run created QUEUED whose send was refused, and a queue back only after the
    # deadline it was created with (its second + timeout + grace)
    job = hourly(jobs, timeout_seconds=60)
    queue.refuse()
    watcher.tick()
    key = run_key(job, NOON)
    created = runs.get(job.job_id, key)
    assert created is not None
    assert created.deadline == epoch(NOON) + 60 + GRACE
    queue.accept()
    clock.set(NOON + timedelta(seconds=60 + GRACE + 120))

    # When the next tick takes it (from the cursor) and then sweeps
    report = watcher.tick()

    # Then it is sent with a deadline from this send, and the sweep leaves it alone
    assert queue.accepted_runs() == [(key, 1)]
    assert report.lost_runs_concluded == 0
    sent = runs.get(job.job_id, key)
    assert sent is not None
    assert (sent.status, sent.attempt) == (RunStatus.QUEUED, 1)
    assert sent.deadline == epoch(clock()) + 60 + GRACE


def test_only_the_refused_runs_hold_their_items(
    watcher: Watcher, jobs: FakeJobStore, schedule: FakeScheduleStore, queue: FakeRunQueue
) -> None:
    # Given alice's and bob's jobs due at 12:00, and a queue refusing bob's message
    alices = hourly(jobs, name="a")
    bobs = hourly(jobs, name="b", user_id="bob")
    queue.refuse(lambda message: message.user_id == "bob")

    # When the watcher ticks
    watcher.tick()

    # Then alice's run is sent and her schedule moves on; bob's item stays for the next tick
    assert queue.accepted_runs() == [(run_key(alices, NOON), 1)]
    assert sorted((i.job_id, i.due_at) for i in jobs.upcoming()) == sorted(
        [(alices.job_id, epoch(NOON) + 3600), (bobs.job_id, epoch(NOON))]
    )
    assert schedule.cursor() < epoch(NOON)


def test_a_queue_that_fails_outright_leaves_everything_for_the_next_tick(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given a queue that raises (an error the client does not retry)
    job = hourly(jobs)
    queue.fail_with(ConnectionError("sqs is down"))

    # When the watcher ticks, Then the tick fails, leaving the item and the cursor as they were
    with pytest.raises(ConnectionError):
        watcher.tick()
    assert schedule.items() == [ScheduleItem.occurrence(job.job_id, "alice", NOON)]
    assert schedule.cursor() is None
    assert status_of(runs, job, run_key(job, NOON)) is RunStatus.QUEUED

    # And the next tick sends the run
    queue.accept()
    watcher.tick()
    assert queue.accepted_runs() == [(run_key(job, NOON), 1)]


# -- catching up --------------------------------------------------------------------------------


def test_after_an_outage_every_missed_occurrence_is_queued_from_the_cursor(
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
) -> None:
    # Given an hourly job that catches up on everything missed in 6 hours, whose 09:00 run was
    # next when the watcher stopped, at 08:45
    job = make_job(now=DAY.replace(hour=8, minute=30)).model_copy(
        update={"catch_up": CatchUp(policy=CatchUpPolicy.ALL, window_seconds=6 * 3600)}
    )
    jobs.create(job, keys.script_key(job.script_sha256))
    schedule.advance_cursor(epoch(DAY.replace(hour=8, minute=45)))

    # When the watcher is back at 12:30 (with a window long enough for the whole outage)
    clock.set(DAY.replace(hour=12, minute=30))
    watcher = make_watcher(jobs, schedule, runs, queue, objects, clock, max_window_seconds=6 * 3600)
    report = watcher.tick()

    # Then the window starts at the cursor and the 09:00, 10:00, 11:00 and 12:00 runs are sent
    assert report.window_start == epoch(DAY.replace(hour=8, minute=45))
    missed = [DAY.replace(hour=hour) for hour in (9, 10, 11, 12)]
    assert queue.accepted_runs() == [(run_key(job, at), 1) for at in missed]
    assert all(status_of(runs, job, run_key(job, at)) is RunStatus.QUEUED for at in missed)
    assert sorted(report.late_seconds) == [1800, 5400, 9000, 12600]
    # And the job's next run is 13:00, with one schedule item there
    assert jobs.upcoming() == [ScheduleItem.occurrence(job.job_id, "alice", DAY.replace(hour=13))]
    stored = jobs.get(job.job_id)
    assert stored is not None
    assert stored.next_run_at == DAY.replace(hour=13)
    assert schedule.cursor() == epoch(DAY.replace(hour=12, minute=30))


def test_the_cursor_only_moves_forward(watcher: Watcher, schedule: FakeScheduleStore) -> None:
    # Given a cursor further on than this tick's window (an overlapping, newer tick moved it)
    ahead = epoch(TICK) + 3600
    schedule.advance_cursor(ahead)

    # When an older tick ends, Then the cursor stays
    report: TickReport = watcher.tick()
    assert report.window_end < ahead
    assert schedule.cursor() == ahead


# -- retries and silent runs --------------------------------------------------------------------


def test_a_due_retry_is_sent_as_its_next_attempt_and_its_item_dropped(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given a run whose first attempt failed, retrying at 11:59:20
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    run = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(NOON))
    failed = AttemptRecord(attempt=1, status=RunStatus.FAILED, exit_code=1)
    retry_at = epoch(TICK) + 20
    assert runs.retry(run, failed, retry_at, TICK)
    assert [i.trigger for i in schedule.items(job.job_id)] == [
        RunTrigger.RETRY,
        RunTrigger.SCHEDULE,
    ]

    # When the watcher ticks
    watcher.tick()

    # Then attempt 2 is sent and QUEUED, with a deadline from its retry time; the item is gone
    assert queue.accepted_runs() == [(run.key, 2)]
    assert queue.accepted[0].pack_id == f"{run.key}-2"
    stored = runs.stored(job.job_id, run.key)
    assert stored is not None
    assert (stored.run.status, stored.run.attempt) == (RunStatus.QUEUED, 2)
    assert stored.deadline == retry_at + job.timeout_seconds + GRACE
    assert [i.trigger for i in schedule.items(job.job_id)] == [RunTrigger.SCHEDULE]


@pytest.mark.parametrize("stop", ["pause", "delete"])
def test_a_retry_of_a_paused_or_deleted_job_is_skipped_when_due_not_sent(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    stop: str,
) -> None:
    # Given a run whose first attempt failed, retrying at 11:59:20, and its job then paused
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    run = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(NOON))
    failed = AttemptRecord(attempt=1, status=RunStatus.FAILED, exit_code=1)
    assert runs.retry(run, failed, epoch(TICK) + 20, TICK)
    assert jobs.pause(job, TICK) if stop == "pause" else jobs.delete(job)

    # When the watcher ticks
    watcher.tick()

    # Then nothing is sent: attempt 2 ends SKIPPED, saying why, and its item is gone
    assert queue.accepted_runs() == []
    skipped = runs.get(job.job_id, run.key)
    assert skipped is not None
    assert (skipped.status, skipped.attempt) == (RunStatus.SKIPPED, 2)
    assert skipped.error == f"skipped: the job was {stop}d before this run started"
    assert [i for i in schedule.items(job.job_id) if i.trigger is RunTrigger.RETRY] == []


def test_a_retry_of_a_job_resumed_before_it_is_due_is_sent(
    watcher: Watcher, jobs: FakeJobStore, runs: FakeRunStore, queue: FakeRunQueue
) -> None:
    # Given a pending retry whose job was paused, then resumed before the retry fell due
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    run = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(NOON))
    failed = AttemptRecord(attempt=1, status=RunStatus.FAILED, exit_code=1)
    assert runs.retry(run, failed, epoch(TICK) + 20, TICK)
    assert jobs.pause(job, TICK)
    paused = jobs.get(job.job_id)
    assert paused is not None
    assert jobs.resume(paused, job.next_run_at, TICK)

    # When the watcher ticks, attempt 2 is sent
    watcher.tick()
    assert queue.accepted_runs() == [(run.key, 2)]


def test_the_sweep_concludes_overdue_runs_as_failed_attempts(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    objects: FakeRunObjects,
) -> None:
    # Given a run dispatched for 11:00 whose runner claimed it (its script started) and never
    # reported, past its 11:10 deadline, and one not yet past its deadline
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    lost = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(TICK) - 2900)
    assert runs.claim(lost, "claim-1", DAY.replace(hour=11), 60)
    assert runs.mark_dispatched(lost, "claim-1", "task-1", DAY.replace(hour=11), None)
    objects.put_claim(lost)
    fine = existing_run(runs, job, DAY.replace(hour=11, minute=30), queued_until=epoch(TICK) + 600)

    # When the watcher ticks
    report = watcher.tick()

    # Then the lost run's attempt is failed and retried with backoff; the other is untouched
    assert report.lost_runs_concluded == 1
    retried = runs.get(job.job_id, lost.key)
    assert retried is not None
    assert (retried.status, retried.attempt) == (RunStatus.PENDING, 2)
    assert retried.attempts[0].status is RunStatus.FAILED
    assert retried.attempts[0].error == (
        "no report from the runner before the deadline (was DISPATCHED)"
    )
    not_before = epoch(TICK) + retry_delay(1, RETRY_BASE)
    assert retried.not_before == not_before
    assert (
        ScheduleItem(
            job_id=job.job_id,
            user_id="alice",
            scheduled_at=lost.execution_time,
            due_at=not_before,
            trigger=RunTrigger.RETRY,
            run_key=lost.key,
        )
        in schedule.items()
    )
    assert status_of(runs, job, fine.key) is RunStatus.QUEUED


def test_the_sweep_sends_again_a_run_no_executor_claimed_before_its_deadline(
    watcher: Watcher,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given a run queued for 11:30 whose message no executor took (a backlog, or the DLQ), now
    # past its deadline: the scheduler's delay, not an attempt of the script
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    stuck = existing_run(runs, job, DAY.replace(hour=11, minute=30), queued_until=epoch(TICK) - 1)

    # When the watcher ticks
    report = watcher.tick()

    # Then it is sent again, still attempt 1, with a deadline counted from now
    assert report.lost_runs_concluded == 1
    assert queue.accepted_runs() == [(stuck.key, 1)]
    stored = runs.stored(job.job_id, stuck.key)
    assert stored is not None
    assert (stored.run.status, stored.run.attempt, stored.run.attempts) == (RunStatus.QUEUED, 1, [])
    assert stored.deadline == epoch(TICK) + job.timeout_seconds + GRACE


def test_an_unclaimed_run_whose_sending_again_fails_is_swept_again(
    watcher: Watcher,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    clock: FakeClock,
) -> None:
    # Given an unclaimed run past its deadline, and a queue that refuses it at the next tick
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    stuck = existing_run(runs, job, DAY.replace(hour=11, minute=30), queued_until=epoch(TICK) - 1)
    queue.refuse()
    watcher.tick()
    assert status_of(runs, job, stuck.key) is RunStatus.QUEUED

    # When the queue works again, a minute later
    queue.accept()
    clock.set(TICK + timedelta(minutes=1))
    watcher.tick()

    # Then the sweep has not passed it by: it is sent again
    assert queue.accepted_runs() == [(stuck.key, 1)]


def test_the_sweep_skips_an_unclaimed_run_its_catch_up_policy_calls_missed(
    watcher: Watcher,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
) -> None:
    # Given a job that does not catch up, and its run queued for 11:30 that no executor took
    job = make_job(now=CREATED, schedule=YEARLY).model_copy(
        update={"catch_up": CatchUp(policy=CatchUpPolicy.NONE)}
    )
    jobs.create(job, keys.script_key(job.script_sha256))
    stuck = existing_run(runs, job, DAY.replace(hour=11, minute=30), queued_until=epoch(TICK) - 1)

    # When the watcher ticks past its deadline
    watcher.tick()

    # Then it is not sent again: it ends SKIPPED, saying why
    assert queue.accepted_runs() == []
    skipped = runs.get(job.job_id, stuck.key)
    assert skipped is not None
    assert skipped.status is RunStatus.SKIPPED
    assert skipped.error is not None
    assert skipped.error.startswith("not started before its deadline; skipped: missed by 1740 s")


def test_the_sweep_concludes_an_overdue_run_from_its_late_report(
    watcher: Watcher,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    objects: FakeRunObjects,
) -> None:
    # Given an overdue run whose finished report landed but was never processed
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    lost = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(TICK) - 60)
    objects.put_report(
        RunReport(
            job_id=job.job_id,
            run_key=lost.key,
            attempt=1,
            status=RunStatus.SUCCEEDED,
            exit_code=0,
            output_tail="done\n",
            output_uploaded=False,
        ),
        "finished",
    )

    # When the watcher ticks, Then the run is concluded from that report
    assert watcher.tick().lost_runs_concluded == 1
    stored = runs.stored(job.job_id, lost.key)
    assert stored is not None
    assert (stored.run.status, stored.run.output_tail) == (RunStatus.SUCCEEDED, "done\n")
    assert stored.deadline is not None  # its in-flight entry stays; the sweep's cursor is past it
    # And a later tick does not conclude it again
    assert watcher.tick().lost_runs_concluded == 0


class CountsReads(FakeRunStore):
    def __init__(self, schedule: FakeScheduleStore) -> None:
        super().__init__(schedule)
        self.reads: list[str] = []

    def get(self, job_id: str, key: str) -> Run | None:
        self.reads.append(key)
        return super().get(job_id, key)


def test_the_sweep_reads_an_ended_runs_kept_entry_once_and_leaves_the_run_alone(
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    queue: FakeRunQueue,
    objects: FakeRunObjects,
    clock: FakeClock,
) -> None:
    # Given a run that ended (its in-flight entry kept, with a deadline that then passes)
    runs = CountsReads(schedule)
    watcher = make_watcher(jobs, schedule, runs, queue, objects, clock)
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    ended = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(TICK) + 30)
    report = RunReport(
        job_id=job.job_id, run_key=ended.key, attempt=1, status=RunStatus.SUCCEEDED, exit_code=0
    )
    assert runs.finish(ended, report, None, TICK)
    runs.reads.clear()

    # When ticks pass its deadline
    for minute in range(4):
        clock.set(TICK + timedelta(minutes=minute))
        assert watcher.tick().lost_runs_concluded == 0

    # Then the sweep read it once (the tick after its deadline), and it stayed SUCCEEDED
    assert runs.reads.count(ended.key) == 1
    assert status_of(runs, job, ended.key) is RunStatus.SUCCEEDED
    assert schedule.swept() == epoch(TICK + timedelta(minutes=3)) - 1


def test_a_start_recorded_after_its_deadline_is_still_swept_if_the_run_goes_silent(
    watcher: Watcher,
    jobs: FakeJobStore,
    runs: FakeRunStore,
    clock: FakeClock,
) -> None:
    # Given a run whose started report was handled so late that its deadline (from its start)
    # was already behind the sweep's cursor
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    run = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(TICK) + 600)
    watcher.tick()
    late = TICK + timedelta(seconds=5)
    report = RunReport(job_id=job.job_id, run_key=run.key, attempt=1, started_at=TICK)
    assert runs.mark_running(run, report, late, epoch(TICK) - 500)

    # Then its deadline is at least a minute after the write, past the cursor
    stored = runs.stored(job.job_id, run.key)
    assert stored is not None
    assert stored.deadline == epoch(late) + 60
    # And when the run stays silent, a tick after that concludes it
    clock.set(late + timedelta(seconds=61))
    assert watcher.tick().lost_runs_concluded == 1


def test_jobs_that_are_not_active_get_no_runs(
    watcher: Watcher, jobs: FakeJobStore, runs: FakeRunStore
) -> None:
    # Given a paused job (no schedule item at all)
    add_job(jobs, now=CREATED, status=JobStatus.PAUSED)
    # When the watcher ticks, Then nothing happens
    assert watcher.tick().items == 0
    assert runs.all() == []


# -- late writes and outages --------------------------------------------------------------------


def test_an_item_written_just_after_a_tick_is_taken_by_the_next_one(
    watcher: Watcher, jobs: FakeJobStore, queue: FakeRunQueue, clock: FakeClock
) -> None:
    # Given a tick at 11:59 whose window reached 12:00:30
    watcher.tick()

    # And a job created at 11:59:10, due at 12:00 (inside that window, after its scan)
    clock.advance(10)
    job = add_job(jobs, now=clock.now)

    # When the next tick runs a minute (and a few seconds) later
    clock.set(NOON + timedelta(seconds=3))
    watcher.tick()

    # Then its look-back takes the job's first run
    assert queue.accepted_runs() == [(run_key(job, NOON), 1)]


# Regression: the cursor once moved to the window's end (now + lookahead), past items written
# after the tick but due before that end; a catch-up tick started there and never took them.


def test_a_retry_written_just_after_a_tick_is_taken_after_a_watcher_outage(
    watcher: Watcher, jobs: FakeJobStore, runs: FakeRunStore, queue: FakeRunQueue, clock: FakeClock
) -> None:
    # Given a tick at 11:59 (its window, and so the cursor, reach 12:00:30)
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    run = existing_run(runs, job, DAY.replace(hour=11), queued_until=epoch(NOON))
    watcher.tick()

    # And, 10 s later, the run's attempt fails and is retried at 11:59:40 (run_reports does this,
    # whether or not the watcher is up)
    clock.advance(10)
    failed = AttemptRecord(attempt=1, status=RunStatus.FAILED, exit_code=1)
    assert runs.retry(run, failed, epoch(clock.now) + RETRY_BASE, clock.now)

    # When the watcher's next tick is 20 minutes later (longer than its 5 minutes of look-back)
    clock.set(NOON + timedelta(minutes=20))
    watcher.tick()

    # Then that tick sends attempt 2
    assert queue.accepted_runs() == [(run.key, 2)]


def test_a_run_now_refused_by_the_queue_is_sent_after_a_long_queue_outage(
    watcher: Watcher,
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    queue: FakeRunQueue,
    clock: FakeClock,
) -> None:
    # Given a tick at 11:59 (its window, and so the cursor, reach 12:00:30)
    job = add_job(jobs, now=CREATED, schedule=YEARLY)
    watcher.tick()

    # And a run now at 11:59:10 that the queue refuses: it stays PENDING with its item (11:59:11)
    clock.advance(10)
    queue.refuse()
    service = RunService(jobs, runs, clock=clock, schedule=schedule, queue=queue)
    run = service.run_now("alice", job.job_id)
    assert run.status is RunStatus.PENDING

    # And the queue refuses for 20 minutes (longer than the ticks' 5 minutes of look-back)
    clock.set(NOON)
    watcher.tick()
    queue.accept()
    clock.set(NOON + timedelta(minutes=20))

    # When the next tick runs, Then it sends the run (the cursor was to hold before it)
    watcher.tick()
    assert queue.accepted_runs() == [(run.key, 1)]
