"""Inputs that used to answer 500 (issue 10, item 8): each is a 4xx that says what is wrong, and
writes nothing. Handlers invoked in-process against moto, as in test_jobs_api.py."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from devstack.template import Stack
from integration.conftest import Invoke, api_event, body_of
from scheduler import wiring
from scheduler.api.request_body import MAX_JSON_DEPTH

SCRIPT = "print('hello')\n"
JOB: dict[str, Any] = {"name": "hostile", "schedule": "30 2 * * *", "script": SCRIPT}
TABLES = ("JobsTable", "ScheduleTable", "RunsTable", "IdempotencyTable")


def assert_error(response: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    assert response["statusCode"] == status, response["body"]
    assert response["headers"]["Content-Type"] == "application/json"
    error: dict[str, Any] = body_of(response)["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def assert_nothing_written(stack: Stack) -> None:
    for table in TABLES:
        name = stack.physical_names[table]
        assert boto3.resource("dynamodb").Table(name).scan()["Items"] == [], table
    listing = boto3.client("s3").list_objects_v2(Bucket=stack.physical_names["ScriptsBucket"])
    assert listing.get("KeyCount", 0) == 0


def create_event(*, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    """events/create_job.json, its Idempotency-Key kept (so that table is checked too)."""
    event = api_event("create_job", body=body or JOB)
    event["headers"].update(headers or {})
    return event


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"a": value}
    return {"a": value} if depth else value


# ------------------------------------------------------------------------------ the body


def test_a_body_that_is_not_utf8_is_a_400_naming_the_body(invoke: Invoke, stack: Stack) -> None:
    # Given a body API Gateway passes base64-encoded (it is not UTF-8 text)
    event = create_event()
    raw = json.dumps(JOB).encode().replace(b"hello", b"h\xffllo")
    event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
    # When it is posted
    error = assert_error(invoke("CreateJobFunction", event), 400, "invalid_input")
    # Then the answer says the body is not UTF-8
    assert error["details"] == [{"field": "body", "problem": "the body is not valid UTF-8 text"}]
    assert "UTF-8" in error["message"]
    assert_nothing_written(stack)


def test_json_nested_beyond_the_recursion_limit_is_a_400(invoke: Invoke, stack: Stack) -> None:
    event = create_event()
    event["body"] = "[" * 100_000 + "]" * 100_000
    error = assert_error(invoke("CreateJobFunction", event), 400, "validation_error")
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in error["message"]
    assert_nothing_written(stack)


def test_parameters_nested_beyond_the_limit_are_a_400_and_at_the_limit_are_fine(
    invoke: Invoke, stack: Stack
) -> None:
    # The body is one level, parameters another: MAX_JSON_DEPTH - 1 levels inside them fit
    too_deep = create_event(**{**JOB, "parameters": nested(MAX_JSON_DEPTH)})
    error = assert_error(invoke("CreateJobFunction", too_deep), 400, "validation_error")
    assert "nested deeper" in error["message"]
    assert_nothing_written(stack)

    deep_enough = create_event(**{**JOB, "parameters": nested(MAX_JSON_DEPTH - 1)})
    assert invoke("CreateJobFunction", deep_enough)["statusCode"] == 201


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "multipart/form-data",  # no boundary: powertools fails parsing it (found by fuzzing)
        "application/xml",
        "application/json; charset=latin-1",
        None,
    ],
)
def test_a_body_not_sent_as_json_is_a_415_naming_the_content_type(
    invoke: Invoke, stack: Stack, content_type: str | None
) -> None:
    # Given a valid JSON body sent with another (or no) content type
    event = create_event()
    if content_type is None:
        del event["headers"]["content-type"]
    else:
        event["headers"]["content-type"] = content_type
    # When it is posted
    error = assert_error(invoke("CreateJobFunction", event), 415, "unsupported_media_type")
    # Then the answer says what to send, and what came
    assert "Content-Type: application/json" in error["message"]
    assert (content_type or "no Content-Type").split(";")[0] in error["message"]
    assert error["details"][0]["field"] == "content-type"
    assert_nothing_written(stack)


def test_json_with_a_charset_parameter_is_accepted(invoke: Invoke) -> None:
    event = create_event(headers={"content-type": "application/json; charset=UTF-8"})
    assert invoke("CreateJobFunction", event)["statusCode"] == 201, "utf-8 is JSON's charset"


def test_every_body_route_refuses_a_text_body(invoke: Invoke) -> None:
    job = body_of(invoke("CreateJobFunction", create_event()))["job_id"]
    routes = {
        "UpdateJobFunction": ("update_job", f"/jobs/{job}", {"description": "x"}),
        "RunJobFunction": ("run_job", f"/jobs/{job}/run", {"reason": "x"}),
        "BackfillJobFunction": (
            "backfill_job",
            f"/jobs/{job}/backfill",
            {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
        ),
        "PreviewScheduleFunction": (
            "preview_schedule",
            "/schedules/preview",
            {"schedule": "@daily"},
        ),
    }
    for function, (name, path, body) in routes.items():
        event = api_event(name, body=body, path=path, path_parameters={"job_id": job})
        event["headers"]["content-type"] = "text/plain"
        assert_error(invoke(function, event), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("raw_body", "kind"),
    [("[null, null]", "an array"), ("[]", "an array"), ('"x"', "a string"), ("null", "null")],
)
def test_a_body_that_is_not_a_json_object_is_a_400_even_where_the_body_is_optional(
    invoke: Invoke, raw_body: str, kind: str
) -> None:
    # powertools took `[null, null]` for run now's optional body left out: a 202 (found by
    # fuzzing the live stack)
    job = body_of(invoke("CreateJobFunction", create_event()))["job_id"]
    event = api_event(
        "run_job", raw_body=raw_body, path=f"/jobs/{job}/run", path_parameters={"job_id": job}
    )
    error = assert_error(invoke("RunJobFunction", event), 400, "invalid_input")
    assert error["details"] == [
        {"field": "body", "problem": f"the body must be a JSON object, not {kind}"}
    ]


@pytest.mark.parametrize("after", [0, 0.5, "0.5", "2026-11-27T00:00Z", "2026-11-27 00:00:00Z"])
def test_an_instant_in_a_body_that_is_not_rfc_3339_text_is_a_400(
    invoke: Invoke, after: Any
) -> None:
    # pydantic alone took a number as epoch seconds (a 200 from 1970)
    body = {"schedule": "@daily", "after": after}
    event = api_event("preview_schedule", body=body, path="/schedules/preview")
    error = assert_error(invoke("PreviewScheduleFunction", event), 400, "validation_error")
    assert error["details"][0]["field"] == "after"
    assert "RFC 3339" in error["details"][0]["problem"]


def test_run_now_without_a_body_needs_no_content_type(invoke: Invoke) -> None:
    job = body_of(invoke("CreateJobFunction", create_event()))["job_id"]
    event = api_event("run_job", path=f"/jobs/{job}/run", path_parameters={"job_id": job})
    assert "content-type" not in event["headers"]
    assert invoke("RunJobFunction", event)["statusCode"] == 202


# ------------------------------------------------------------------------------ list queries


@pytest.mark.parametrize("gap", ["2026-11-27T00:00:00Z", "2026-11-26T00:00:00Z"])
def test_created_after_not_before_created_before_is_an_empty_page(invoke: Invoke, gap: str) -> None:
    # DynamoDB refuses a key range whose low end is above its high end (moto does not): the
    # service answers an empty range without asking it.
    body_of(invoke("CreateJobFunction", create_event()))
    query = {"created_after": "2026-11-27T00:00:00Z", "created_before": gap}
    reply = invoke("ListJobsFunction", api_event("list_jobs", query=query))
    assert reply["statusCode"] == 200, reply
    assert json.loads(reply["body"]) == {"items": [], "next_token": None}


@pytest.mark.parametrize("instant", ["0.5", "0", "1764547200", "2026-11-27T00:00Z", "2026-11-27"])
def test_a_list_bound_that_is_not_an_rfc_3339_date_time_is_a_400(
    invoke: Invoke, instant: str
) -> None:
    reply = invoke("ListJobsFunction", api_event("list_jobs", query={"next_run_before": instant}))
    error = assert_error(reply, 400, "validation_error")
    assert error["details"][0]["field"] == "next_run_before"
    assert "RFC 3339" in error["details"][0]["problem"]


# ------------------------------------------------------------------------------ run now


def test_run_now_many_times_in_one_second_starts_a_run_each_time(
    invoke: Invoke, stack: Stack
) -> None:
    # Given a clock that stays within one second (the sixth call used to be a 500)
    job = body_of(invoke("CreateJobFunction", create_event()))["job_id"]
    wiring.use_clock(lambda: datetime(2026, 11, 27, 17, 0, 0, 500000, tzinfo=UTC))
    event = api_event("run_job", path=f"/jobs/{job}/run", path_parameters={"job_id": job})
    # When run now is called eight times
    answers = [invoke("RunJobFunction", event) for _ in range(8)]
    # Then each is a 202 with a run of its own, all due at that second
    assert [answer["statusCode"] for answer in answers] == [202] * 8
    runs = [body_of(answer) for answer in answers]
    assert len({run["key"] for run in runs}) == 8
    assert {run["not_before"] for run in runs} == {1795798801}


# ---------------------------------------------------------------------- pause, change, resume


def job_call(invoke: Invoke, function: str, name: str, job: str, **fields: Any) -> dict[str, Any]:
    suffix = {"pause_job": "/pause", "resume_job": "/resume", "update_job": ""}[name]
    event = api_event(
        name,
        path=f"/jobs/{job}{suffix}",
        path_parameters={"job_id": job},
        body=fields or None,
    )
    answer: dict[str, Any] = invoke(function, event)
    return answer


def test_a_paused_job_cannot_be_given_a_schedule_that_never_fires(invoke: Invoke) -> None:
    # Given a paused job
    job = body_of(invoke("CreateJobFunction", create_event()))["job_id"]
    assert job_call(invoke, "PauseJobFunction", "pause_job", job)["statusCode"] == 200
    # When it is changed to February 30th, it is refused as create refuses it
    answer = job_call(invoke, "UpdateJobFunction", "update_job", job, schedule="0 0 30 2 *")
    error = assert_error(answer, 400, "invalid_input")
    assert error["details"][0]["field"] == "schedule"
    # And resuming it gives an active job with a next run
    resumed = body_of(job_call(invoke, "ResumeJobFunction", "resume_job", job))
    assert (resumed["status"], resumed["schedule"]) == ("ACTIVE", JOB["schedule"])
    assert resumed["next_run_at"] is not None
