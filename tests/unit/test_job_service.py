"""JobService on in-memory stores: creating, reading, changing and listing jobs, and how every
change keeps the job's one schedule item where its next run is."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler import keys
from scheduler.errors import InvalidInput, InvalidPageToken, JobBusy, JobNameConflict, JobNotFound
from scheduler.jobs.job_models import Job, JobCreate, JobFilters, JobStatus, JobUpdate
from scheduler.jobs.job_service import JobService
from scheduler.pagination import PageTokens
from scheduler.schedule.schedule_item import ScheduleItem
from unit.fakes import FakeClock, FakeJobStore, FakeScheduleStore, FakeScriptStore, add_job

START = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # a Wednesday; London is UTC+1 in July
SECRET = b"unit-test-page-token-secret-0123456789"
SCRIPT = "print('nightly')\n"


def job_body(**fields: Any) -> JobCreate:
    return JobCreate.model_validate(
        {"name": "nightly", "schedule": "30 9 * * *", "script": SCRIPT} | fields
    )


def occurrence(job: Job, instant: datetime) -> ScheduleItem:
    return ScheduleItem.occurrence(job.job_id, job.user_id, instant)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def scripts() -> FakeScriptStore:
    return FakeScriptStore()


@pytest.fixture
def service(jobs: FakeJobStore, scripts: FakeScriptStore, clock: FakeClock) -> JobService:
    return JobService(jobs, scripts, clock=clock, page_tokens=PageTokens(SECRET))


# -- create -------------------------------------------------------------------------------------


def test_create_schedules_the_next_run_in_the_jobs_time_zone(
    service: JobService, jobs: FakeJobStore, schedule: FakeScheduleStore
) -> None:
    # Given 12:00 UTC, i.e. 13:00 in London
    # When alice creates a job for 09:30 London time
    job = service.create("alice", job_body(timezone="Europe/London"))

    # Then its next run is tomorrow 09:30 London time, shown with London's offset
    assert job.next_run_at == datetime(2026, 7, 2, 8, 30, tzinfo=UTC)
    assert job.next_run_at is not None
    assert job.next_run_at.utcoffset() == timedelta(hours=1)
    assert (job.user_id, job.status, job.created_at) == ("alice", JobStatus.ACTIVE, START)
    # And it is stored with exactly one schedule item, at that instant
    assert jobs.get(job.job_id) == job
    assert schedule.items() == [occurrence(job, datetime(2026, 7, 2, 8, 30, tzinfo=UTC))]


def test_create_stores_the_script_first_and_the_job_refers_to_it(
    schedule: FakeScheduleStore, scripts: FakeScriptStore, clock: FakeClock
) -> None:
    # Given a job store that notes whether the script was there when the job was written
    class ScriptCheckingJobs(FakeJobStore):
        def __init__(self) -> None:
            super().__init__(schedule)
            self.script_was_stored: list[bool] = []

        def create(self, job: Job, script_key: str) -> None:
            self.script_was_stored.append(scripts.objects.get(script_key) == SCRIPT)
            super().create(job, script_key)

    jobs = ScriptCheckingJobs()
    service = JobService(jobs, scripts, clock=clock)

    # When a job is created
    job = service.create("alice", job_body())

    # Then its script was stored before it, content-addressed by its sha256
    assert jobs.script_was_stored == [True]
    digest = hashlib.sha256(SCRIPT.encode()).hexdigest()
    assert job.script_sha256 == digest
    assert jobs.script_key_of(job.job_id) == keys.script_key(digest)


def test_a_second_job_with_the_same_name_is_a_conflict_but_another_owner_may_use_it(
    service: JobService, jobs: FakeJobStore, schedule: FakeScheduleStore
) -> None:
    # Given alice's job "nightly"
    first = service.create("alice", job_body())

    # When alice creates another "nightly", Then it is refused and nothing is added
    with pytest.raises(JobNameConflict) as refused:
        service.create("alice", job_body(schedule="0 * * * *"))
    assert refused.value.details == [
        {"field": "name", "problem": "already used by another of your jobs"}
    ]
    assert [j.job_id for j in jobs.all()] == [first.job_id]
    assert [i.job_id for i in schedule.items()] == [first.job_id]

    # But bob may have a "nightly" of his own
    assert service.create("bob", job_body()).name == "nightly"


def test_a_schedule_that_never_fires_is_invalid_input(
    service: JobService, jobs: FakeJobStore
) -> None:
    # February 30th does not exist
    with pytest.raises(InvalidInput) as refused:
        service.create("alice", job_body(schedule="0 0 30 2 *"))
    assert refused.value.details[0]["field"] == "schedule"
    assert jobs.all() == []


# -- get ----------------------------------------------------------------------------------------


def test_get_returns_the_callers_job(service: JobService) -> None:
    job = service.create("alice", job_body())
    assert service.get("alice", job.job_id) == job


def test_someone_elses_job_is_not_found(service: JobService) -> None:
    # Given alice's job
    job = service.create("alice", job_body())

    # When bob asks for it, Then it does not exist for him, as an unknown id does not
    with pytest.raises(JobNotFound):
        service.get("bob", job.job_id)
    with pytest.raises(JobNotFound):
        service.get("alice", "no-such-job")


# -- update -------------------------------------------------------------------------------------


def test_a_new_schedule_moves_the_next_run_and_its_schedule_item(
    service: JobService, jobs: FakeJobStore, schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    # Given a job for 09:30 daily (next: tomorrow 09:30)
    job = service.create("alice", job_body())
    clock.advance(60)

    # When its schedule becomes 18:00 daily
    updated = service.update("alice", job.job_id, JobUpdate(schedule="0 18 * * *"))

    # Then its next run is today 18:00, and the schedule item moved there
    today_18 = datetime(2026, 7, 1, 18, 0, tzinfo=UTC)
    assert updated.next_run_at == today_18
    assert (updated.schedule, updated.updated_at, updated.created_at) == (
        "0 18 * * *",
        START + timedelta(seconds=60),
        START,
    )
    assert jobs.get(job.job_id) == updated
    assert schedule.items() == [occurrence(job, today_18)]


def test_a_new_time_zone_moves_the_next_run(
    service: JobService, schedule: FakeScheduleStore
) -> None:
    # Given a job for 09:30 UTC (next: tomorrow), at 08:00 in New York
    job = service.create("alice", job_body())

    # When it moves to New York time
    updated = service.update("alice", job.job_id, JobUpdate(timezone="America/New_York"))

    # Then it next runs today at 09:30 New York time (13:30 UTC), shown in that zone
    assert updated.next_run_at == datetime(2026, 7, 1, 13, 30, tzinfo=UTC)
    assert updated.next_run_at is not None
    assert updated.next_run_at.utcoffset() == timedelta(hours=-4)
    assert schedule.items() == [occurrence(job, datetime(2026, 7, 1, 13, 30, tzinfo=UTC))]


def test_other_changes_keep_the_next_run_and_a_new_script_is_stored(
    service: JobService, jobs: FakeJobStore, scripts: FakeScriptStore, schedule: FakeScheduleStore
) -> None:
    # Given a job
    job = service.create("alice", job_body(description="old"))
    item_before = schedule.items()

    # When its script, parameters and description change
    new_script = "print('v2')\n"
    updated = service.update(
        "alice",
        job.job_id,
        JobUpdate(script=new_script, parameters={"v": 2}, description="new", max_attempts=5),
    )

    # Then those change, its next run and schedule item do not
    digest = hashlib.sha256(new_script.encode()).hexdigest()
    assert (updated.script_sha256, updated.parameters, updated.description) == (
        digest,
        {"v": 2},
        "new",
    )
    assert updated.max_attempts == 5
    assert updated.next_run_at == job.next_run_at
    assert schedule.items() == item_before
    # And the new script is stored and is what new runs will use
    assert scripts.objects[keys.script_key(digest)] == new_script
    assert jobs.script_key_of(job.job_id) == keys.script_key(digest)


def test_updating_a_paused_job_keeps_it_paused_without_a_schedule_item(
    service: JobService, schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    # Given a paused job
    job = service.create("alice", job_body())
    service.pause("alice", job.job_id)

    # When its schedule changes
    updated = service.update("alice", job.job_id, JobUpdate(schedule="0 18 * * *"))

    # Then it stays paused, with no next run and no schedule item
    assert (updated.status, updated.next_run_at, updated.schedule) == (
        JobStatus.PAUSED,
        None,
        "0 18 * * *",
    )
    assert schedule.items() == []

    # And once resumed it runs on the new schedule
    resumed = service.resume("alice", job.job_id)
    assert resumed.next_run_at == datetime(2026, 7, 1, 18, 0, tzinfo=UTC)
    assert schedule.items() == [occurrence(job, datetime(2026, 7, 1, 18, 0, tzinfo=UTC))]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (JobUpdate(schedule="0 0 30 2 *"), "schedule"),  # February 30th: never
        (JobUpdate(end_at=datetime(2026, 6, 1, tzinfo=UTC)), "end_at"),  # already past
    ],
    ids=["never-fires", "end-in-the-past"],
)
def test_a_paused_job_is_refused_a_schedule_that_never_runs_as_create_is(
    service: JobService, jobs: FakeJobStore, change: JobUpdate, field: str
) -> None:
    # Given a paused job
    job = service.create("alice", job_body())
    paused = service.pause("alice", job.job_id)

    # When it is changed to a schedule with no run from now on
    with pytest.raises(InvalidInput) as raised:
        service.update("alice", job.job_id, change)

    # Then that is refused, naming the field, and the job is as it was
    assert [detail["field"] for detail in raised.value.details] == [field]
    assert jobs.get(job.job_id) == paused


def test_resume_refuses_a_job_with_no_run_left_and_leaves_it_paused(
    service: JobService, jobs: FakeJobStore, schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    # Given a paused job whose end_at passes while it is paused
    job = service.create("alice", job_body(end_at=datetime(2026, 7, 3, tzinfo=UTC)))
    paused = service.pause("alice", job.job_id)
    clock.set(datetime(2026, 7, 4, tzinfo=UTC))

    # When it is resumed
    with pytest.raises(InvalidInput, match="cannot resume") as raised:
        service.resume("alice", job.job_id)

    # Then it is refused (an active job that never runs would hide it), and stays paused
    assert raised.value.details[0]["field"] == "end_at"
    assert jobs.get(job.job_id) == paused
    assert schedule.items() == []


def test_resume_refuses_a_stored_schedule_that_never_fires(
    jobs: FakeJobStore, scripts: FakeScriptStore, schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    # Given a paused job stored with a schedule that never fires (accepted before it was checked)
    service = JobService(jobs, scripts, clock=clock, page_tokens=PageTokens(SECRET))
    job = add_job(jobs, now=START, schedule="0 0 30 2 *", status=JobStatus.PAUSED)

    # When it is resumed, it is refused naming the schedule, and stays paused
    with pytest.raises(InvalidInput, match="cannot resume") as raised:
        service.resume(job.user_id, job.job_id)
    assert raised.value.details[0]["field"] == "schedule"
    stored = jobs.get(job.job_id)
    assert stored is not None
    assert stored.status is JobStatus.PAUSED


def test_null_fields_are_refused_but_a_null_description_clears_it(
    service: JobService, jobs: FakeJobStore
) -> None:
    # Given a job with a description
    job = service.create("alice", job_body(description="the nightly report"))

    # When schedule and timeout_seconds are sent as null, Then both are refused by name
    patch = JobUpdate.model_validate({"schedule": None, "timeout_seconds": None})
    with pytest.raises(InvalidInput) as refused:
        service.update("alice", job.job_id, patch)
    assert refused.value.details == [
        {"field": "schedule", "problem": "cannot be null"},
        {"field": "timeout_seconds", "problem": "cannot be null"},
    ]
    assert jobs.get(job.job_id) == job

    # But a null description removes it
    cleared = service.update("alice", job.job_id, JobUpdate.model_validate({"description": None}))
    assert cleared.description is None


def test_someone_elses_job_cannot_be_changed(service: JobService, jobs: FakeJobStore) -> None:
    job = service.create("alice", job_body())
    with pytest.raises(JobNotFound):
        service.update("bob", job.job_id, JobUpdate(schedule="0 18 * * *"))
    with pytest.raises(JobNotFound):
        service.pause("bob", job.job_id)
    with pytest.raises(JobNotFound):
        service.delete("bob", job.job_id)
    assert jobs.get(job.job_id) == job


# -- pause, resume, delete ----------------------------------------------------------------------


def test_pause_removes_the_next_run_and_pausing_again_changes_nothing(
    service: JobService, schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    # Given an active job
    job = service.create("alice", job_body())
    clock.advance(5)

    # When it is paused
    paused = service.pause("alice", job.job_id)

    # Then it has no next run and no schedule item
    assert (paused.status, paused.next_run_at, paused.updated_at) == (
        JobStatus.PAUSED,
        None,
        START + timedelta(seconds=5),
    )
    assert schedule.items() == []

    # And pausing it again is a no-op
    clock.advance(5)
    assert service.pause("alice", job.job_id) == paused


def test_resume_schedules_from_now_without_making_up_missed_runs(
    service: JobService, schedule: FakeScheduleStore, clock: FakeClock
) -> None:
    # Given a daily 09:30 job paused for three days
    job = service.create("alice", job_body())
    service.pause("alice", job.job_id)
    clock.set(datetime(2026, 7, 4, 10, 0, tzinfo=UTC))

    # When it is resumed
    resumed = service.resume("alice", job.job_id)

    # Then its next run is the next 09:30 from now, with a schedule item there
    next_run = datetime(2026, 7, 5, 9, 30, tzinfo=UTC)
    assert (resumed.status, resumed.next_run_at) == (JobStatus.ACTIVE, next_run)
    assert schedule.items() == [occurrence(job, next_run)]

    # And resuming an active job changes nothing
    assert service.resume("alice", job.job_id) == resumed
    assert schedule.items() == [occurrence(job, next_run)]


def test_delete_removes_the_job_its_schedule_and_frees_its_name(
    service: JobService, schedule: FakeScheduleStore
) -> None:
    # Given a job
    job = service.create("alice", job_body())

    # When it is deleted
    service.delete("alice", job.job_id)

    # Then it is gone with its schedule item
    with pytest.raises(JobNotFound):
        service.get("alice", job.job_id)
    assert schedule.items() == []
    # And its name can be used again
    assert service.create("alice", job_body()).job_id != job.job_id


# -- races with the watcher ---------------------------------------------------------------------


class WatcherMovesItFirst(FakeJobStore):
    """The watcher advances the job's next run once, between the service's read and write."""

    def __init__(self, schedule: FakeScheduleStore) -> None:
        super().__init__(schedule)
        self.moved = False

    def pause(self, job: Job, now: datetime) -> bool:
        if not self.moved and job.next_run_at is not None:
            self.moved = True
            following = job.next_run_at + timedelta(days=1)
            self.advance(job, occurrence(job, job.next_run_at), following)
        return super().pause(job, now)


def test_a_change_that_lost_a_race_reads_the_job_again_and_succeeds(
    schedule: FakeScheduleStore, scripts: FakeScriptStore, clock: FakeClock
) -> None:
    # Given the watcher moves the job's next run right after the service reads it
    jobs = WatcherMovesItFirst(schedule)
    service = JobService(jobs, scripts, clock=clock)
    job = service.create("alice", job_body())

    # When the job is paused
    paused = service.pause("alice", job.job_id)

    # Then the first write failed its condition, the second (on a fresh read) succeeded
    assert jobs.moved
    assert (paused.status, paused.next_run_at) == (JobStatus.PAUSED, None)
    # And the moved schedule item is not to be taken either
    assert jobs.upcoming() == []


class AlwaysLosingJobs(FakeJobStore):
    """Every conditional change fails, as if the watcher moved the job each time."""

    def update(self, updated: Job, previous: Job, script_key: str) -> bool:
        return False

    def pause(self, job: Job, now: datetime) -> bool:
        return False

    def resume(self, job: Job, following: datetime | None, now: datetime) -> bool:
        return False

    def delete(self, job: Job) -> bool:
        return False


@pytest.mark.parametrize(
    ("status", "change"),
    [
        (JobStatus.ACTIVE, lambda s, j: s.update("alice", j, JobUpdate(schedule="0 18 * * *"))),
        (JobStatus.ACTIVE, lambda s, j: s.pause("alice", j)),
        (JobStatus.PAUSED, lambda s, j: s.resume("alice", j)),
        (JobStatus.ACTIVE, lambda s, j: s.delete("alice", j)),
    ],
    ids=["update", "pause", "resume", "delete"],
)
def test_a_change_that_keeps_losing_the_race_is_job_busy(
    status: JobStatus,
    change: Any,
    schedule: FakeScheduleStore,
    scripts: FakeScriptStore,
    clock: FakeClock,
) -> None:
    # Given a job whose every conditional write fails
    jobs = AlwaysLosingJobs(schedule)
    job = add_job(jobs, now=START, status=status)
    service = JobService(jobs, scripts, clock=clock)

    # When it is changed, Then the caller is told to retry
    with pytest.raises(JobBusy):
        change(service, job.job_id)
    # And the job is as it was
    assert jobs.get(job.job_id) == job


# -- list ---------------------------------------------------------------------------------------


def test_list_pages_through_the_owners_jobs_newest_first(
    service: JobService, clock: FakeClock
) -> None:
    # Given five jobs of alice's, a minute apart, and one of bob's
    for number in range(5):
        service.create("alice", job_body(name=f"job-{number}"))
        clock.advance(60)
    service.create("bob", job_body(name="bobs"))

    # When alice lists them two at a time
    pages = [service.list("alice", JobFilters(), 2, None)]
    while pages[-1].next_token is not None:
        pages.append(service.list("alice", JobFilters(), 2, pages[-1].next_token))

    # Then she gets each of hers once, newest first, and the last page has no token
    assert [[job.name for job in page.items] for page in pages] == [
        ["job-4", "job-3"],
        ["job-2", "job-1"],
        ["job-0"],
    ]


def test_list_filters(service: JobService, clock: FakeClock) -> None:
    # Given alice's jobs, one of them paused
    for name in ("report-a", "report-b", "backup"):
        service.create("alice", job_body(name=name))
        clock.advance(60)
    backup = service.list("alice", JobFilters(name="backup"), 10, None).items[0]
    service.pause("alice", backup.job_id)

    # Then filters select by status and by name prefix
    active = service.list("alice", JobFilters(status=JobStatus.ACTIVE), 10, None)
    assert [job.name for job in active.items] == ["report-b", "report-a"]
    paused = service.list("alice", JobFilters(status=JobStatus.PAUSED), 10, None)
    assert [job.name for job in paused.items] == ["backup"]
    created = service.list("alice", JobFilters(created_after=START), 10, None)
    assert [job.name for job in created.items] == ["backup", "report-b"]


@pytest.mark.parametrize(
    ("after", "before"),
    [("created_after", "created_before"), ("next_run_after", "next_run_before")],
)
@pytest.mark.parametrize("gap", [0, -60])
def test_an_empty_time_range_is_an_empty_page(
    service: JobService, clock: FakeClock, after: str, before: str, gap: int
) -> None:
    # Given a job, and a range whose end is not after its start (DynamoDB refuses such a key
    # range, so the store must not be asked)
    service.create("alice", JobCreate(name="backup", schedule="0 3 * * *", script="pass"))
    filters = JobFilters(**{after: START, before: START + timedelta(seconds=gap)})
    # When alice lists with it
    page = service.list("alice", filters, 10, None)
    # Then nothing matches, and there is no next page
    assert page.items == []
    assert page.next_token is None


def test_a_page_token_only_works_for_its_owner_and_its_filters(
    service: JobService, clock: FakeClock
) -> None:
    # Given a first page of alice's active jobs
    for number in range(3):
        service.create("alice", job_body(name=f"job-{number}"))
        clock.advance(60)
    active = JobFilters(status=JobStatus.ACTIVE)
    token = service.list("alice", active, 1, None).next_token
    assert token is not None

    # Then bob cannot use it, nor alice with other filters
    with pytest.raises(InvalidPageToken):
        service.list("bob", active, 1, token)
    with pytest.raises(InvalidPageToken):
        service.list("alice", JobFilters(), 1, token)
    # But alice with the same filters gets the next page
    assert [job.name for job in service.list("alice", active, 1, token).items] == ["job-1"]


def test_create_keeps_every_scheduling_field_it_was_given(service: JobService) -> None:
    body = JobCreate.model_validate(
        {
            "name": "full",
            "schedule": "0 * * * *",
            "script": "1",
            "jitter_seconds": 30,
            "pause_after_failures": 3,
            "catch_up": {"policy": "LATEST", "window_seconds": 600},
            "dst": {"gap": "SKIP"},
        }
    )
    job = service.create("alice", body)
    stored = service.get("alice", job.job_id)
    for found in (job, stored):
        assert (found.jitter_seconds, found.pause_after_failures) == (30, 3)
        assert found.catch_up == body.catch_up
        assert found.dst == body.dst
