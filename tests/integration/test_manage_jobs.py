"""Pause, resume and delete through their handlers: the job, its name guard and its upcoming
schedule item always change together."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from integration.conftest import api_event, body_of, load_event, runs_of, stores_of
from scheduler import wiring

SCRIPT = "print('hi')\n"
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _create(invoke, name: str = "nightly", schedule: str = "0 3 * * *") -> dict[str, Any]:
    body = {"name": name, "schedule": schedule, "timezone": "Europe/London", "script": SCRIPT}
    # A key of its own: events/create_job.json's would make a second create a retry of the first.
    event = api_event("create_job", body=body, headers={"idempotency-key": uuid.uuid4().hex})
    response = invoke("CreateJobFunction", event)
    assert response["statusCode"] == 201, response
    return body_of(response)


def _call(invoke, function: str, event: str, job_id: str, user: str = "alice") -> dict[str, Any]:
    suffix = {"pause_job": "/pause", "resume_job": "/resume", "delete_job": "", "get_job": ""}[
        event
    ]
    return invoke(
        function,
        api_event(
            event, user=user, path=f"/jobs/{job_id}{suffix}", path_parameters={"job_id": job_id}
        ),
    )


def _schedule_items(stack, job_id: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(stack.physical_names["ScheduleTable"])
    return [i for i in table.scan()["Items"] if i.get("job_id") == job_id]


def test_pause_stops_scheduling_and_resume_starts_it_again(stack, invoke) -> None:
    # Given an active job with its upcoming schedule item
    job = _create(invoke)
    assert len(_schedule_items(stack, job["job_id"])) == 1

    # When its owner pauses it (twice: the second is a no-op)
    paused = _call(invoke, "PauseJobFunction", "pause_job", job["job_id"])
    again = _call(invoke, "PauseJobFunction", "pause_job", job["job_id"])

    # Then it is PAUSED with no next run, and nothing is left to schedule it
    assert paused["statusCode"] == 200, paused
    assert body_of(paused)["status"] == "PAUSED"
    assert body_of(paused)["next_run_at"] is None
    assert body_of(again)["status"] == "PAUSED"
    assert _schedule_items(stack, job["job_id"]) == []

    # When it is resumed
    resumed = _call(invoke, "ResumeJobFunction", "resume_job", job["job_id"])

    # Then it is ACTIVE again, with exactly one upcoming item at its next occurrence
    assert resumed["statusCode"] == 200, resumed
    body = body_of(resumed)
    assert body["status"] == "ACTIVE"
    assert body["next_run_at"] == job["next_run_at"]
    (item,) = _schedule_items(stack, job["job_id"])
    assert int(item["scheduled_at"]) == int(datetime.fromisoformat(body["next_run_at"]).timestamp())


def test_delete_removes_job_name_and_schedule(stack, invoke) -> None:
    job = _create(invoke)

    deleted = _call(invoke, "DeleteJobFunction", "delete_job", job["job_id"])

    assert deleted["statusCode"] == 204, deleted
    assert _schedule_items(stack, job["job_id"]) == []
    got = invoke(
        "GetJobFunction",
        api_event(
            "get_job", path=f"/jobs/{job['job_id']}", path_parameters={"job_id": job["job_id"]}
        ),
    )
    assert got["statusCode"] == 404
    # The name is free again
    assert _create(invoke)["name"] == job["name"]
    again = _call(invoke, "DeleteJobFunction", "delete_job", job["job_id"])
    assert again["statusCode"] == 404


def test_another_owner_can_neither_pause_resume_nor_delete(stack, invoke) -> None:
    job = _create(invoke)
    for function, event in (
        ("PauseJobFunction", "pause_job"),
        ("ResumeJobFunction", "resume_job"),
        ("DeleteJobFunction", "delete_job"),
    ):
        response = _call(invoke, function, event, job["job_id"], user="bob")
        assert response["statusCode"] == 404, (function, response)
        assert body_of(response)["error"]["code"] == "job_not_found"
    assert len(_schedule_items(stack, job["job_id"])) == 1


@pytest.mark.usefixtures("one_run_per_tick")
def test_a_paused_job_is_not_run_by_the_watcher(stack, invoke) -> None:
    job = _create(invoke, name="minutely", schedule="* * * * *")
    _call(invoke, "PauseJobFunction", "pause_job", job["job_id"])

    invoke("WatcherFunction", load_event("watcher"))

    assert runs_of(stack, job["job_id"]) == []
    assert _schedule_items(stack, job["job_id"]) == []


def test_a_pause_racing_the_watcher_changes_nothing_and_is_retried(
    stack, invoke, monkeypatch
) -> None:
    # Given a job read just before the watcher moved its next run
    job = _create(invoke)
    service = wiring.job_service()
    stale = service.get("alice", job["job_id"])
    jobs_table = boto3.resource("dynamodb").Table(stack.physical_names["JobsTable"])
    jobs_table.update_item(
        Key={"pk": f"JOB#{job['job_id']}"},
        UpdateExpression="SET next_run_utc = :later",
        ExpressionAttributeValues={":later": "2030-01-01T03:00:00.000000Z"},
    )

    # When the stale view is used to pause, the transaction refuses and writes nothing
    jobs = stores_of(stack, "PauseJobFunction", monkeypatch).jobs
    assert jobs.pause(stale, datetime.now(UTC)) is False
    assert len(_schedule_items(stack, job["job_id"])) == 1
    assert jobs_table.get_item(Key={"pk": f"JOB#{job['job_id']}"})["Item"]["status"] == "ACTIVE"

    # And the service, which reads again, succeeds
    assert service.pause("alice", job["job_id"]).status.value == "PAUSED"


def _patch(invoke, job_id: str, body: Any, user: str = "alice") -> dict[str, Any]:
    return invoke(
        "UpdateJobFunction",
        api_event(
            "update_job",
            user=user,
            path=f"/jobs/{job_id}",
            path_parameters={"job_id": job_id},
            body=body,
        ),
    )


def test_update_moves_the_schedule_and_keeps_the_rest(stack, invoke) -> None:
    # Given a nightly job in London
    job = _create(invoke)

    # When its schedule and time zone change
    response = _patch(invoke, job["job_id"], {"schedule": "30 6 * * *", "timezone": "Asia/Tokyo"})

    # Then the next run follows the new schedule, with the new zone's offset
    assert response["statusCode"] == 200, response
    updated = body_of(response)
    next_run = datetime.fromisoformat(updated["next_run_at"])
    assert (next_run.hour, next_run.minute, next_run.utcoffset().total_seconds()) == (
        6,
        30,
        9 * 3600,
    )
    assert updated["name"] == job["name"]
    assert updated["script_sha256"] == job["script_sha256"]
    assert updated["created_at"] == job["created_at"]
    # And exactly one schedule item exists, at the new next run
    (item,) = _schedule_items(stack, job["job_id"])
    assert int(item["scheduled_at"]) == int(next_run.timestamp())
    # And a GET shows the same
    got = invoke(
        "GetJobFunction",
        api_event(
            "get_job", path=f"/jobs/{job['job_id']}", path_parameters={"job_id": job["job_id"]}
        ),
    )
    assert body_of(got) == updated


def test_update_of_the_script_and_parameters_keeps_the_schedule(stack, invoke) -> None:
    job = _create(invoke)
    response = _patch(
        invoke,
        job["job_id"],
        {"script": "print('v2')\n", "parameters": {"v": 2}, "description": None},
    )
    assert response["statusCode"] == 200, response
    updated = body_of(response)
    assert updated["script_sha256"] != job["script_sha256"]
    assert updated["parameters"] == {"v": 2}
    assert updated["description"] is None
    assert updated["next_run_at"] == job["next_run_at"]
    assert len(_schedule_items(stack, job["job_id"])) == 1
    key = f"scripts/{updated['script_sha256'][:2]}/{updated['script_sha256']}.py"
    body = boto3.client("s3").get_object(Bucket=stack.physical_names["ScriptsBucket"], Key=key)
    assert body["Body"].read() == b"print('v2')\n"


def test_bad_updates_are_refused_and_change_nothing(stack, invoke) -> None:
    job = _create(invoke)
    for patch, field in (
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"script": "def broken(:\n"}, "script"),
        ({"name": "renamed"}, "name"),
        ({"schedule": None}, "schedule"),
        ({"max_attempts": 0}, "max_attempts"),
    ):
        response = _patch(invoke, job["job_id"], patch)
        assert response["statusCode"] == 400, (patch, response)
        details = body_of(response)["error"]["details"]
        assert any(d["field"] == field for d in details), (patch, details)
    got = invoke(
        "GetJobFunction",
        api_event(
            "get_job", path=f"/jobs/{job['job_id']}", path_parameters={"job_id": job["job_id"]}
        ),
    )
    assert body_of(got) == job
    assert _patch(invoke, job["job_id"], {"max_attempts": 2}, user="bob")["statusCode"] == 404


def test_a_paused_job_stays_paused_when_its_schedule_changes(stack, invoke) -> None:
    job = _create(invoke)
    _call(invoke, "PauseJobFunction", "pause_job", job["job_id"])
    updated = body_of(_patch(invoke, job["job_id"], {"schedule": "0 4 * * *"}))
    assert updated["status"] == "PAUSED"
    assert updated["next_run_at"] is None
    assert _schedule_items(stack, job["job_id"]) == []
    resumed = body_of(_call(invoke, "ResumeJobFunction", "resume_job", job["job_id"]))
    assert datetime.fromisoformat(resumed["next_run_at"]).hour == 4


def test_a_schedule_and_a_job_can_be_previewed_by_their_owner_only(stack, invoke) -> None:
    # A schedule tried before any job has it (events/preview_schedule.json): New York's jump
    response = invoke("PreviewScheduleFunction", load_event("preview_schedule"))
    assert response["statusCode"] == 200, response
    preview = body_of(response)
    assert [o["dst"] for o in preview["occurrences"]] == [None, None, "shifted"]
    assert preview["occurrences"][2]["local"] == "2026-03-08T03:30:00-04:00"

    # A job's own schedule, in its zone
    job = _create(invoke)
    path = f"/jobs/{job['job_id']}/preview"
    event = api_event(
        "get_job", path=path, path_parameters={"job_id": job["job_id"]}, query={"count": "2"}
    )
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /jobs/{job_id}/preview"
    answer = body_of(invoke("PreviewScheduleFunction", event))
    assert answer["timezone"] == "Europe/London"
    assert [o["local"][11:16] for o in answer["occurrences"]] == ["03:00", "03:00"]

    # Someone else's job is not found; a bad count is a 400 naming it
    other = api_event("get_job", user="bob", path=path, path_parameters={"job_id": job["job_id"]})
    assert invoke("PreviewScheduleFunction", other)["statusCode"] == 404
    bad = api_event(
        "get_job", path=path, path_parameters={"job_id": job["job_id"]}, query={"count": "500"}
    )
    refused = invoke("PreviewScheduleFunction", bad)
    assert refused["statusCode"] == 400
    assert {d["field"] for d in body_of(refused)["error"]["details"]} == {"count"}


def test_a_job_counts_failures_in_a_row_pauses_with_a_reason_and_resume_clears_it(
    stack, invoke, monkeypatch
) -> None:
    # Given a job (its table items as the repository writes them)
    job = _create(invoke)
    jobs = stores_of(stack, "RunReportsFunction", monkeypatch).jobs

    # Failures count up; a success forgets them; a missing job counts nothing
    assert jobs.count_failure(job["job_id"]) == 1
    assert jobs.count_failure(job["job_id"]) == 2
    jobs.reset_failures(job["job_id"])
    jobs.reset_failures(job["job_id"])  # nothing to forget: no error
    assert jobs.count_failure(job["job_id"]) == 1
    assert jobs.count_failure("no-such-job") is None

    # Pausing for failures removes the upcoming run and shows why
    assert jobs.pause_for_failures(job["job_id"], "paused after 3 runs in a row failed", NOW)
    paused = body_of(_call(invoke, "GetJobFunction", "get_job", job["job_id"]))
    assert (paused["status"], paused["paused_reason"]) == (
        "PAUSED",
        "paused after 3 runs in a row failed",
    )
    assert _schedule_items(stack, job["job_id"]) == []
    assert not jobs.pause_for_failures(job["job_id"], "again", NOW)  # not active: nothing

    # And a resume starts afresh: no reason, no count
    resumed = body_of(_call(invoke, "ResumeJobFunction", "resume_job", job["job_id"]))
    assert (resumed["status"], resumed["paused_reason"]) == ("ACTIVE", None)
    assert jobs.count_failure(job["job_id"]) == 1
