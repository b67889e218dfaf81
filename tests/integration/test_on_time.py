"""On time in every case, with a clock we control (the services read `wiring.use_clock`): a run is
in the dispatch queue at least the Fargate start time before its second, whether the watcher
takes it (every-minute jobs included) or create, update and resume take a new occurrence the
next tick might see too late. Production pacing: one tick a minute, at an arbitrary second."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from integration.conftest import (
    api_event,
    body_of,
    load_event,
    runs_of,
    sqs_event,
    use_function_environment,
)
from scheduler import times, wiring
from scheduler.config import DispatchSettings

SCRIPT = "print('on time')\n"
NOW = datetime(2026, 12, 1, 10, 0, 20, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, moment: datetime) -> None:
        self.now = moment


@pytest.fixture
def clock(stack) -> Clock:
    controlled = Clock(NOW)
    wiring.use_clock(controlled)  # the stack fixture puts the real clock back
    return controlled


@pytest.fixture
def settings(stack, monkeypatch) -> DispatchSettings:
    """The dispatch settings the functions run with (the template's defaults)."""
    use_function_environment(stack, "WatcherFunction", monkeypatch)
    return DispatchSettings()  # type: ignore[call-arg]


def _create(invoke, schedule: str, **fields: Any) -> dict[str, Any]:
    body = {"name": f"job-{uuid.uuid4().hex[:8]}", "schedule": schedule, "script": SCRIPT}
    response = invoke("CreateJobFunction", api_event("create_job", body=body | fields))
    assert response["statusCode"] == 201, response
    return body_of(response)


def _queued_messages(stack) -> list[dict[str, Any]]:
    url = stack.resolve({"Ref": "DispatchQueue"})
    sqs = boto3.client("sqs")
    messages = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        messages += batch
    return messages


def _schedule_items(stack, job_id: str) -> list[int]:
    """Due seconds of the job's items still to be taken: a taken occurrence's item stays until
    it expires, and the job shows its next occurrence (due_runs.is_live; no jitter here)."""
    jobs = boto3.resource("dynamodb").Table(stack.physical_names["JobsTable"])
    shown = jobs.get_item(Key={"pk": f"JOB#{job_id}"})["Item"].get("next_run_utc")
    table = boto3.resource("dynamodb").Table(stack.physical_names["ScheduleTable"])
    return sorted(
        int(i["due_at"])
        for i in table.scan()["Items"]
        if i.get("job_id") == job_id
        and shown is not None
        and int(i["scheduled_at"]) == int(datetime.fromisoformat(str(shown)).timestamp())
    )


def _call(invoke, function: str, event: str, job_id: str, body: Any = None) -> dict[str, Any]:
    suffix = {"pause_job": "/pause", "resume_job": "/resume", "update_job": ""}[event]
    path = f"/jobs/{job_id}{suffix}"
    response = invoke(
        function, api_event(event, path=path, path_parameters={"job_id": job_id}, body=body)
    )
    assert response["statusCode"] == 200, response
    return body_of(response)


def test_the_lead_covers_fargate_start_and_a_late_tick(settings: DispatchSettings) -> None:
    # The derived lead: task start + dispatch + one tick interval + how late a tick may fire
    assert settings.lead_seconds == 90 + 5 + 60 + 15


def test_a_first_run_due_before_the_next_tick_is_queued_by_the_create(
    stack, invoke, clock: Clock
) -> None:
    # Given 10:00:20, when a job is created that first runs at 10:01 (40 s from now)
    job = _create(invoke, "1 10 * * *")

    # Then its run is queued by the create itself, without waiting for a tick
    (run,) = runs_of(stack, job["job_id"])
    assert (run["status"], int(run["execution_time"])) == ("QUEUED", 1796119260)
    assert len(_queued_messages(stack)) == 1
    # and the job's schedule has moved on to tomorrow's occurrence
    assert _schedule_items(stack, job["job_id"]) == [1796119260 + 86400]
    assert job["next_run_at"].startswith("2026-12-01T10:01:00")

    # When the next tick comes, five seconds later
    clock.at(NOW + timedelta(seconds=5))
    invoke("WatcherFunction", load_event("watcher"))

    # Then nothing is queued twice
    assert len(runs_of(stack, job["job_id"])) == 1
    assert _queued_messages(stack) == []


def test_the_next_tick_sends_what_a_dying_create_left(stack, invoke, clock: Clock) -> None:
    # Given a create that died before sending: the run is created QUEUED, never sent, and its
    # item still due
    boto3.setup_default_session()

    def fail(**_: Any) -> None:
        raise RuntimeError("the function died before sending")

    boto3.DEFAULT_SESSION.events.register("before-call.sqs.SendMessageBatch", fail)
    wiring.reset()
    job = _create(invoke, "1 10 * * *")
    boto3.DEFAULT_SESSION.events.unregister("before-call.sqs.SendMessageBatch", fail)
    wiring.reset()
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "QUEUED"
    assert _queued_messages(stack) == []
    assert _schedule_items(stack, job["job_id"]) == [1796119260]

    # When the next tick runs
    clock.at(NOW + timedelta(seconds=30))
    invoke("WatcherFunction", load_event("watcher"))

    # Then the run is queued once, and the schedule goes on
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "QUEUED"
    assert len(_queued_messages(stack)) == 1
    assert _schedule_items(stack, job["job_id"]) == [1796119260 + 86400]


def test_an_update_that_moves_the_next_run_close_queues_it(stack, invoke, clock: Clock) -> None:
    # Given a nightly job
    job = _create(invoke, "0 3 * * *")
    assert runs_of(stack, job["job_id"]) == []

    # When, 20 s before 10:01, its schedule is changed to 10:01
    _call(invoke, "UpdateJobFunction", "update_job", job["job_id"], {"schedule": "1 10 * * *"})

    # Then the 10:01 run is queued by the update
    (run,) = runs_of(stack, job["job_id"])
    assert (run["status"], int(run["execution_time"])) == ("QUEUED", 1796119260)
    assert len(_queued_messages(stack)) == 1


def test_a_resume_just_before_an_occurrence_queues_it(stack, invoke, clock: Clock) -> None:
    # Given a job created and paused an hour earlier
    clock.at(NOW - timedelta(hours=1))
    job = _create(invoke, "1 10 * * *")
    _call(invoke, "PauseJobFunction", "pause_job", job["job_id"])

    # When it is resumed 40 s before its 10:01 occurrence
    clock.at(NOW)
    _call(invoke, "ResumeJobFunction", "resume_job", job["job_id"])

    # Then that occurrence is queued at once
    (run,) = runs_of(stack, job["job_id"])
    assert (run["status"], int(run["execution_time"])) == ("QUEUED", 1796119260)


@pytest.mark.parametrize("change", ["pause", "delete"])
def test_a_pause_or_delete_past_an_untaken_occurrence_records_it(
    stack, invoke, clock: Clock, change: str
) -> None:
    # Given a job created an hour before its 10:01 occurrence, which no tick took (the watcher
    # is late or down)
    clock.at(NOW - timedelta(hours=1))
    job = _create(invoke, "1 10 * * *")
    assert runs_of(stack, job["job_id"]) == []

    # When it is paused (or deleted) 30 s after that occurrence
    clock.at(NOW + timedelta(seconds=70))
    if change == "pause":
        _call(invoke, "PauseJobFunction", "pause_job", job["job_id"])
    else:
        path = f"/jobs/{job['job_id']}"
        event = api_event("delete_job", path=path, path_parameters={"job_id": job["job_id"]})
        assert invoke("DeleteJobFunction", event)["statusCode"] == 204

    # Then the occurrence is not lost: its run is recorded and sent (it ends SKIPPED when it
    # would start, as any run queued before a pause or delete)
    (run,) = runs_of(stack, job["job_id"])
    assert (run["status"], int(run["execution_time"])) == ("QUEUED", 1796119260)
    assert len(_queued_messages(stack)) == 1


def test_every_minute_runs_are_queued_a_fargate_start_ahead_whatever_the_tick_second(
    stack, invoke, clock: Clock, settings: DispatchSettings
) -> None:
    # Given an every-minute job created at 09:00:00, and ticks once a minute at :37
    clock.at(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    job = _create(invoke, "* * * * *")
    ticks = [datetime(2026, 12, 1, 9, minute, 37, tzinfo=UTC) for minute in range(8)]

    # When the watcher ticks for eight minutes
    for tick in ticks:
        clock.at(tick)
        invoke("WatcherFunction", load_event("watcher"))

    # Then every occurrence up to the last tick's window was queued, each one before its
    # second by at least the task start and dispatch time (or, for those due sooner than that
    # after the create, at the create itself)
    runs = sorted(runs_of(stack, job["job_id"]), key=lambda r: int(r["execution_time"]))
    seconds = [int(r["execution_time"]) for r in runs]
    first = int(datetime(2026, 12, 1, 9, 1, tzinfo=UTC).timestamp())
    assert seconds == list(range(first, seconds[-1] + 1, 60))
    assert seconds[-1] >= int(ticks[-1].timestamp()) + settings.lead_seconds - 60
    needed = settings.task_start_seconds + settings.dispatch_seconds
    created = int(datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp())
    for run in runs:
        second = int(run["execution_time"])
        lead = second - times.epoch(times.from_text(run["queued_at"]))
        assert lead >= min(needed, second - created), run


def test_an_early_pack_is_held_in_the_queue_until_its_task_is_needed(
    stack, invoke, clock: Clock
) -> None:
    # Given 10:00:20 and a job created to run at 10:03 (160 s ahead, inside the 170 s lead):
    # the create queues its run at once
    job = _create(invoke, "3 10 * * *")
    (message,) = _queued_messages(stack)
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"

    # When the executor receives it 120 s before 10:03: its task (expected to start in 90 s,
    # +20 s of margin) is needed only in 10 s
    clock.at(datetime(2026, 12, 1, 10, 1, 0, tzinfo=UTC))
    result = invoke("ExecutorFunction", sqs_event([message], arn))

    # Then the message goes back to the queue, held for those 10 s, and nothing is dispatched
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "QUEUED"
    ecs = boto3.client("ecs")
    assert ecs.list_tasks(cluster=stack.physical_names["RunnerCluster"])["taskArns"] == []
    assert _queued_messages(stack) == []  # out of sight...
    time.sleep(11)
    (again,) = _queued_messages(stack)  # ...for 10 s, not the queue's 180 s

    # When it comes back at 10:01:10, its task is dispatched
    clock.at(datetime(2026, 12, 1, 10, 1, 10, tzinfo=UTC))
    assert invoke("ExecutorFunction", sqs_event([again], arn)) == {"batchItemFailures": []}
    assert len(ecs.list_tasks(cluster=stack.physical_names["RunnerCluster"])["taskArns"]) == 1
