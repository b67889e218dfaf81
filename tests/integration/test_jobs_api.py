"""The job API end to end in-process: the template's handlers, invoked with API Gateway HTTP API
events shaped like events/*.json, against moto resources created from template.yaml.

What the handlers wrote is checked with boto3 directly, not through the API."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from devstack.template import Stack
from integration.conftest import Invoke, api_event, body_of
from scheduler import keys, wiring

START = datetime(2026, 11, 27, 16, 59, tzinfo=UTC)  # a Friday
JOB_FIELDS = {
    "job_id",
    "user_id",
    "name",
    "schedule",
    "timezone",
    "parameters",
    "description",
    "status",
    "next_run_at",
    "script_sha256",
    "timeout_seconds",
    "max_attempts",
    "concurrency_policy",
    "notifications",
    "catch_up",
    "start_at",
    "end_at",
    "jitter_seconds",
    "dst",
    "pause_after_failures",
    "paused_reason",
    "created_at",
    "updated_at",
    "last_run",
}
TABLES = ("JobsTable", "ScheduleTable", "RunsTable", "IdempotencyTable")
SCRIPT = "import os\nprint(os.environ['JOB_PARAMETERS'])\n"
JOB: dict[str, Any] = {"name": "nightly-report", "schedule": "30 2 * * *", "script": SCRIPT}


class Clock:
    """The create service's clock: each job is created one minute after the previous one."""

    def __init__(self, start: datetime) -> None:
        self.next = start

    def __call__(self) -> datetime:
        now, self.next = self.next, self.next + timedelta(minutes=1)
        return now


@pytest.fixture(autouse=True)
def clock(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(START)
    wiring.use_clock(fake)  # the stack fixture puts the real clock back
    return fake


# ------------------------------------------------------------------------------ helpers


def create_event(
    body: Any = None, *, user: str | None = "alice", key: str | None = None
) -> dict[str, Any]:
    """events/create_job.json with `body`, and an Idempotency-Key header only if `key` is given."""
    event = api_event("create_job", user=user, body=body)
    event["headers"].pop("idempotency-key", None)
    if key is not None:
        event["headers"]["idempotency-key"] = key
    return event


def create(invoke: Invoke, body: Any, *, user: str = "alice", key: str | None = None) -> Any:
    return invoke("CreateJobFunction", create_event(body, user=user, key=key))


def created(invoke: Invoke, body: Any, *, user: str = "alice") -> dict[str, Any]:
    response = create(invoke, body, user=user)
    assert response["statusCode"] == 201, response["body"]
    job: dict[str, Any] = body_of(response)
    return job


def get(invoke: Invoke, job_id: str, *, user: str | None = "alice") -> Any:
    event = api_event(
        "get_job", user=user, path=f"/jobs/{job_id}", path_parameters={"job_id": job_id}
    )
    return invoke("GetJobFunction", event)


def list_jobs(invoke: Invoke, *, user: str | None = "alice", **query: Any) -> Any:
    event = api_event("list_jobs", user=user, query={k: str(v) for k, v in query.items()})
    return invoke("ListJobsFunction", event)


def listed(invoke: Invoke, *, user: str = "alice", **query: Any) -> dict[str, Any]:
    response = list_jobs(invoke, user=user, **query)
    assert response["statusCode"] == 200, response["body"]
    page: dict[str, Any] = body_of(response)
    return page


def all_pages(invoke: Invoke, **query: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    token = None
    while True:
        page = listed(invoke, **query, **({"next_token": token} if token else {}))
        pages.append([job["job_id"] for job in page["items"]])
        token = page.get("next_token")
        if not token:
            return pages
        assert len(pages) < 20, "pagination does not end"


def assert_error(response: dict[str, Any], status: int, code: str | None = None) -> dict[str, Any]:
    """`response` is `status` with the API's one error shape; returns the error."""
    assert response["statusCode"] == status, response["body"]
    assert response["headers"]["Content-Type"] == "application/json"
    body = body_of(response)
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], list)
    if code is not None:
        assert error["code"] == code
    return error


def fields_of(error: dict[str, Any]) -> set[str]:
    return {detail["field"] for detail in error["details"]}


def scan(stack: Stack, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        boto3.resource("dynamodb").Table(stack.physical_names[table]).scan()["Items"]
    )
    return items


def bucket(stack: Stack) -> str:
    return stack.physical_names["ScriptsBucket"]


def object_versions(stack: Stack) -> list[dict[str, Any]]:
    versions: list[dict[str, Any]] = (
        boto3.client("s3").list_object_versions(Bucket=bucket(stack)).get("Versions", [])
    )
    return versions


def snapshot(stack: Stack) -> dict[str, list[str]]:
    """Every item of every table, and the keys of every object in the bucket."""
    state = {
        table: sorted(json.dumps(item, sort_keys=True, default=str) for item in scan(stack, table))
        for table in TABLES
    }
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket(stack))
    state["ScriptsBucket"] = sorted(entry["Key"] for entry in listing.get("Contents", []))
    return state


def assert_nothing_written(stack: Stack) -> None:
    for table in TABLES:
        assert scan(stack, table) == [], table
    assert object_versions(stack) == []


def job_items(stack: Stack) -> list[dict[str, Any]]:
    """Job items proper: name guards are the items of the jobs table without `created_key`."""
    return [item for item in scan(stack, "JobsTable") if "created_key" in item]


@contextmanager
def failing(service: str, operation: str, code: str) -> Iterator[None]:
    """Within the block, that call fails with that error, as AWS answers once botocore has
    given up retrying (a `before-call` hook answers in AWS's place); every other call goes
    through to moto."""
    event = f"before-call.{service}.{operation}"

    def refuse(**_: Any) -> tuple[Any, dict[str, Any]]:
        error = {"Code": code, "Message": "injected by the test"}
        return SimpleNamespace(status_code=400, headers={}), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    boto3.setup_default_session()  # the services' clients are rebuilt from it, hook included
    boto3.DEFAULT_SESSION.events.register(event, refuse)
    wiring.reset()
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION.events.unregister(event, refuse)
        wiring.reset()


# ------------------------------------------------------------------------------ create


def test_the_sample_create_event_creates_a_job_that_get_returns(invoke: Invoke) -> None:
    # Given events/create_job.json exactly as it is (Europe/London, with an Idempotency-Key)
    response = invoke("CreateJobFunction", api_event("create_job"))
    # Then the job is created with every documented field
    assert response["statusCode"] == 201, response["body"]
    job = body_of(response)
    assert set(job) == JOB_FIELDS
    assert response["headers"]["Location"] == f"/jobs/{job['job_id']}"
    assert re.fullmatch(r"[0-9a-f]{32}", job["job_id"])
    assert job["user_id"] == "alice"
    assert job["name"] == "nightly-report"
    assert job["schedule"] == "30 2 * * *"
    assert job["timezone"] == "Europe/London"
    assert job["parameters"] == {"region": "eu"}
    assert job["description"] is None
    assert job["status"] == "ACTIVE"
    assert job["script_sha256"] == hashlib.sha256(SCRIPT.encode()).hexdigest()
    assert (job["timeout_seconds"], job["max_attempts"]) == (300, 3)
    assert datetime.fromisoformat(job["created_at"]) == START
    assert datetime.fromisoformat(job["updated_at"]) == START
    # 02:30 in London on the day after 16:59Z on 27 November (GMT, offset zero)
    assert datetime.fromisoformat(job["next_run_at"]) == datetime(2026, 11, 28, 2, 30, tzinfo=UTC)

    # And GET returns it as created
    got = get(invoke, job["job_id"])
    assert got["statusCode"] == 200, got["body"]
    assert body_of(got) == job


def test_create_writes_the_job_its_name_guard_one_schedule_item_and_the_script(
    invoke: Invoke, stack: Stack
) -> None:
    # Given a job in New York (EST, UTC-5, in November)
    body = {
        **JOB,
        "timezone": "America/New_York",
        "parameters": {"region": "us", "days": 3},
        "description": "the nightly report",
        "timeout_seconds": 60,
        "max_attempts": 5,
    }
    # When it is created
    response = create(invoke, body)
    # Then the answer shows it, next run in the job's offset
    assert response["statusCode"] == 201, response["body"]
    job = body_of(response)
    job_id = job["job_id"]
    assert job["next_run_at"] == "2026-11-28T02:30:00-05:00"
    assert job["parameters"] == {"region": "us", "days": 3}
    assert job["description"] == "the nightly report"
    assert (job["timeout_seconds"], job["max_attempts"]) == (60, 5)

    # And the jobs table holds the job, its name guard and alice's job count, nothing else
    items = scan(stack, "JobsTable")
    assert len(items) == 3
    [owner] = [item for item in items if item["pk"] == "OWNER#alice"]
    assert owner["job_count"] == 1
    items.remove(owner)
    [stored] = job_items(stack)
    assert stored["job_id"] == job_id
    assert stored["user_id"] == "alice"
    assert stored["name"] == "nightly-report"
    assert stored["status"] == "ACTIVE"
    assert stored["timezone"] == "America/New_York"
    assert stored["script_sha256"] == job["script_sha256"]
    [guard] = [item for item in items if "created_key" not in item]
    assert guard["job_id"] == job_id
    assert "alice" in guard["pk"]
    assert "nightly-report" in guard["pk"]

    # And exactly one schedule item, at the next run (07:30Z), keyed <hour>#<shard>, <epoch>#<id>
    [slot] = scan(stack, "ScheduleTable")
    next_run = datetime(2026, 11, 28, 7, 30, tzinfo=UTC)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}#\d{2}", slot["bucket"])
    hour, shard = slot["bucket"].split("#")
    assert hour == "2026-11-28T07"
    assert int(shard) < 16  # ScheduleShards defaults to 16
    assert int(shard) == keys.shard_of(job_id, 16)
    assert slot["slot"] == f"{int(next_run.timestamp()):010d}#{job_id}"
    assert re.fullmatch(r"\d{10}#[0-9a-f]{32}", slot["slot"])
    assert slot["job_id"] == job_id

    # And the script is in the bucket once, under its sha256
    digest = hashlib.sha256(SCRIPT.encode()).hexdigest()
    [version] = object_versions(stack)
    assert digest in version["Key"]
    stored_script = boto3.client("s3").get_object(Bucket=bucket(stack), Key=version["Key"])
    assert stored_script["Body"].read() == SCRIPT.encode()

    # And nothing was written to the runs or idempotency tables (no Idempotency-Key was sent)
    assert scan(stack, "RunsTable") == []
    assert scan(stack, "IdempotencyTable") == []

    # And another job with the same script shares its object, without a second version of it
    created(invoke, {**JOB, "name": "another-report"})
    assert snapshot(stack)["ScriptsBucket"] == [version["Key"]]
    assert [v["VersionId"] for v in object_versions(stack)] == [version["VersionId"]]


def test_a_duplicate_name_is_a_conflict_and_writes_nothing(invoke: Invoke, stack: Stack) -> None:
    # Given alice's job
    first = created(invoke, JOB)
    before = snapshot(stack)
    # When she creates another job with the same name (and the same script)
    response = create(invoke, {**JOB, "schedule": "@hourly"})
    # Then it is a conflict naming the field, and no item nor object was added
    error = assert_error(response, 409, "job_name_conflict")
    assert "name" in fields_of(error)
    assert "Location" not in response["headers"]
    assert snapshot(stack) == before
    # And the first job is unchanged
    assert body_of(get(invoke, first["job_id"])) == first


# ------------------------------------------------------------------------------ idempotency


def test_a_retried_create_with_the_same_key_returns_the_same_job_once(
    invoke: Invoke, stack: Stack
) -> None:
    # Given a create with an Idempotency-Key
    first = create(invoke, JOB, key="key-1")
    assert first["statusCode"] == 201, first["body"]
    # When the same request is sent again
    again = create(invoke, JOB, key="key-1")
    # Then the same job is returned and only one exists
    assert again["statusCode"] == 201, again["body"]
    assert body_of(again) == body_of(first)
    assert again["headers"]["Location"] == first["headers"]["Location"]
    assert len(job_items(stack)) == 1
    assert len(scan(stack, "ScheduleTable")) == 1


def test_a_retried_create_whose_job_was_deleted_is_a_409_not_a_201_for_a_gone_job(
    invoke: Invoke, stack: Stack
) -> None:
    # Given a job created with an Idempotency-Key, then deleted (found by fuzzing: the retry
    # answered 201 with a Location that was a 404)
    first = body_of(create(invoke, JOB, key="key-1"))
    job_id = first["job_id"]
    path = f"/jobs/{job_id}"
    deleted = invoke(
        "DeleteJobFunction", api_event("delete_job", path=path, path_parameters={"job_id": job_id})
    )
    assert deleted["statusCode"] == 204, deleted
    # When the create is retried with the same key
    again = create(invoke, JOB, key="key-1")
    # Then it says the key's job is gone, and creates nothing
    error = assert_error(again, 409, "idempotency_key_stale")
    assert job_id in error["message"]
    assert job_items(stack) == []


def test_the_same_key_with_another_body_is_rejected(invoke: Invoke, stack: Stack) -> None:
    first = create(invoke, JOB, key="key-1")
    assert first["statusCode"] == 201
    before = snapshot(stack)
    response = create(invoke, {**JOB, "name": "another-name"}, key="key-1")
    assert_error(response, 422, "idempotency_key_reused")
    assert snapshot(stack) == before


def test_names_and_idempotency_keys_are_per_owner(invoke: Invoke, stack: Stack) -> None:
    # Given alice's job, created with an Idempotency-Key
    alice = create(invoke, JOB, key="key-1")
    # When bob sends the same body with the same key
    bob = create(invoke, JOB, key="key-1", user="bob")
    # Then bob gets his own job, with the same name
    assert (alice["statusCode"], bob["statusCode"]) == (201, 201)
    assert body_of(alice)["job_id"] != body_of(bob)["job_id"]
    assert body_of(bob)["user_id"] == "bob"
    assert body_of(bob)["name"] == body_of(alice)["name"]
    assert len(job_items(stack)) == 2


# ------------------------------------------------------------------------------ bad input


def raw_create_event(raw_body: str | None, *, key: str) -> dict[str, Any]:
    event = create_event(key=key)
    if raw_body is None:
        del event["body"]
    else:
        event["body"] = raw_body
    return event


BAD_INPUT: list[tuple[str, Any, str, str]] = [
    ("bad-cron", {**JOB, "schedule": "61 * * * *"}, "schedule", "invalid cron"),
    ("six-fields", {**JOB, "schedule": "0 0 * * * *"}, "schedule", "5 fields"),
    ("never-fires", {**JOB, "schedule": "0 0 30 2 *"}, "schedule", "never fires"),
    ("unknown-tz", {**JOB, "timezone": "Mars/Olympus"}, "timezone", "Mars/Olympus"),
    ("syntax-error", {**JOB, "script": "x = 1\ny = (\n"}, "script", "line 2"),
    ("300-kb-script", {**JOB, "script": "x = 1\n" * 50_000}, "script", "at most 262144"),
    ("big-parameters", {**JOB, "parameters": {"blob": "x" * 17_000}}, "parameters", "at most"),
    ("bad-name", {**JOB, "name": "has space"}, "name", "pattern"),
    ("unknown-field", {**JOB, "owner": "mallory"}, "owner", "not permitted"),
    ("missing-field", {"name": "x", "script": "pass"}, "schedule", "required"),
    ("max-attempts", {**JOB, "max_attempts": 0}, "max_attempts", "greater than"),
    ("malformed-json", "{not json", "body", "JSON"),
    ("json-array", "[1, 2]", "body", ""),
    ("empty-body", "", "body", "required"),
    ("missing-body", None, "body", "required"),
]


def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(
    invoke: Invoke, stack: Stack, subtests: Any
) -> None:
    for case, body, field, in_problem in BAD_INPUT:
        with subtests.test(msg=case):
            # Given a bad request (with an Idempotency-Key, so that table is checked too)
            if body is None or isinstance(body, str):
                event = raw_create_event(body, key=f"key-{case}")
            else:
                event = create_event(body, key=f"key-{case}")
            # When it is posted
            response = invoke("CreateJobFunction", event)
            # Then it is a 400 whose details name the field and the problem
            error = assert_error(response, 400)
            assert error["code"] in {"validation_error", "invalid_input"}
            assert field in fields_of(error), error
            problems = " ".join(d["problem"] for d in error["details"] if d["field"] == field)
            assert in_problem.lower() in problems.lower(), error
            assert field in error["message"] or error["code"] == "invalid_input"
            # And nothing was written anywhere
            assert_nothing_written(stack)


# ------------------------------------------------------------------------------ authentication


def test_without_a_subject_claim_every_route_is_401(invoke: Invoke, stack: Stack) -> None:
    no_authorizer = create_event(JOB, user=None)
    assert_error(invoke("CreateJobFunction", no_authorizer), 401, "unauthenticated")

    no_sub = create_event(JOB)
    del no_sub["requestContext"]["authorizer"]["jwt"]["claims"]["sub"]
    assert_error(invoke("CreateJobFunction", no_sub), 401, "unauthenticated")

    empty_sub = create_event(JOB, user="")
    assert_error(invoke("CreateJobFunction", empty_sub), 401, "unauthenticated")

    assert_error(get(invoke, "0" * 32, user=None), 401, "unauthenticated")
    assert_error(list_jobs(invoke, user=None), 401, "unauthenticated")
    assert_nothing_written(stack)


# ------------------------------------------------------------------------------ get


def test_someone_elses_job_is_not_found_exactly_like_a_missing_one(invoke: Invoke) -> None:
    # Given alice's job
    job_id = created(invoke, JOB)["job_id"]
    missing_id = "f" * 32
    # When bob asks for it, and for a job that does not exist
    foreign = get(invoke, job_id, user="bob")
    missing = get(invoke, missing_id, user="bob")
    # Then both are the same 404, revealing nothing of alice's job
    foreign_error = assert_error(foreign, 404, "job_not_found")
    missing_error = assert_error(missing, 404, "job_not_found")
    assert foreign_error["details"] == missing_error["details"]
    assert foreign_error["message"].replace(job_id, "<id>") == missing_error["message"].replace(
        missing_id, "<id>"
    )
    assert "nightly-report" not in foreign["body"]
    assert "alice" not in foreign["body"]


# ------------------------------------------------------------------------------ list


def test_list_is_newest_first_only_the_callers_and_limited(invoke: Invoke) -> None:
    ids = [created(invoke, {**JOB, "name": f"job-{i}"})["job_id"] for i in range(3)]
    bobs = created(invoke, {**JOB, "name": "job-0"}, user="bob")["job_id"]

    page = listed(invoke)
    assert [job["job_id"] for job in page["items"]] == ids[::-1]
    assert page.get("next_token") is None
    assert all(set(job) == JOB_FIELDS for job in page["items"])
    assert [job["job_id"] for job in listed(invoke, user="bob")["items"]] == [bobs]
    assert listed(invoke, user="carol")["items"] == []

    # The limit is between 1 and 100
    assert [job["job_id"] for job in listed(invoke, limit=1)["items"]] == [ids[2]]
    assert [job["job_id"] for job in listed(invoke, limit=100)["items"]] == ids[::-1]
    for limit in (0, 101):
        assert "limit" in fields_of(assert_error(list_jobs(invoke, limit=limit), 400))


@pytest.fixture
def four_jobs(invoke: Invoke, stack: Stack) -> list[str]:
    """j0..j3 created at 16:59, 17:00, 17:01 and 17:02 on 2026-11-27 (UTC); j3 is paused."""
    specs = [
        ("report-daily", "0 3 * * *"),  # next run 2026-11-28T03:00Z
        ("report-hourly", "0 * * * *"),  # next run 2026-11-27T18:00Z
        ("backup", "0 0 1 1 *"),  # next run 2027-01-01T00:00Z
        ("report-weekly", "@weekly"),  # next run 2026-11-29T00:00Z (Sunday)
    ]
    ids = [created(invoke, {**JOB, "name": n, "schedule": s})["job_id"] for n, s in specs]
    boto3.resource("dynamodb").Table(stack.physical_names["JobsTable"]).update_item(
        Key={"pk": f"JOB#{ids[3]}"},
        UpdateExpression="SET #s = :paused",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":paused": "PAUSED"},
        ConditionExpression="attribute_exists(pk)",
    )
    return ids


FILTERS: list[tuple[dict[str, str], list[int]]] = [
    ({}, [3, 2, 1, 0]),
    ({"status": "ACTIVE"}, [2, 1, 0]),
    ({"status": "PAUSED"}, [3]),
    ({"name": "report-"}, [3, 1, 0]),
    ({"name": "backup"}, [2]),
    ({"name": "nothing"}, []),
    ({"created_after": "2026-11-27T17:00:00Z"}, [3, 2]),
    ({"created_before": "2026-11-27T17:01:00Z"}, [1, 0]),
    ({"created_after": "2026-11-27T16:59:00Z", "created_before": "2026-11-27T17:02:00Z"}, [2, 1]),
    ({"created_after": "2026-11-27T18:00:00+01:00"}, [3, 2]),
    ({"next_run_after": "2026-11-28T03:00:00Z"}, [3, 2]),
    ({"next_run_before": "2026-11-29T00:00:00Z"}, [1, 0]),
    ({"next_run_after": "2026-11-28T00:00:00Z", "next_run_before": "2027-01-01T00:00:00Z"}, [3, 0]),
    ({"status": "ACTIVE", "name": "report-"}, [1, 0]),
]


def test_each_filter_alone_and_paginated(
    invoke: Invoke, four_jobs: list[str], subtests: Any
) -> None:
    for query, expected in FILTERS:
        with subtests.test(msg=json.dumps(query)):
            page = listed(invoke, **query)
            assert [job["job_id"] for job in page["items"]] == [four_jobs[i] for i in expected]
            assert page.get("next_token") is None
            # And one job a page, the same jobs in the same order
            pages = all_pages(invoke, limit=1, **query)
            assert [job_id for page in pages for job_id in page] == [four_jobs[i] for i in expected]
            assert all(len(page) <= 1 for page in pages)


BAD_QUERIES: list[tuple[dict[str, str], str]] = [
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"status": "SLEEPING"}, "status"),
    ({"created_after": "2026-11-27T17:00:00"}, "created_after"),
    ({"created_before": "yesterday"}, "created_before"),
    ({"next_run_after": "2026-13-01T00:00:00Z"}, "next_run_after"),
    ({"next_run_before": "2026-11-27"}, "next_run_before"),
    ({"name": "n" * 129}, "name"),
    ({"owner": "bob"}, "owner"),
]


def test_bad_list_queries_are_400_naming_the_parameter(invoke: Invoke, subtests: Any) -> None:
    for query, field in BAD_QUERIES:
        with subtests.test(msg=json.dumps(query)[:80]):
            error = assert_error(list_jobs(invoke, **query), 400)
            assert field in fields_of(error), error


def test_next_token_walks_three_pages_without_duplicates_or_gaps(invoke: Invoke) -> None:
    # Given 7 jobs
    ids = [created(invoke, {**JOB, "name": f"job-{i}"})["job_id"] for i in range(7)]
    # When they are listed 3 at a time (with and without a filter that matches them all)
    for query in ({}, {"status": "ACTIVE"}, {"name": "job-"}):
        pages = all_pages(invoke, limit=3, **query)
        # Then the pages are 3, 3 and 1 jobs, newest first, each job exactly once
        assert [len(page) for page in pages] == [3, 3, 1], query
        assert [job_id for page in pages for job_id in page] == ids[::-1], query


def test_paging_a_sparse_filter(invoke: Invoke) -> None:
    # Given jobs whose names alternate between two prefixes
    ids = [created(invoke, {**JOB, "name": f"{'ab'[i % 2]}-{i}"})["job_id"] for i in range(9)]
    # When one prefix is listed 2 at a time
    pages = all_pages(invoke, limit=2, name="a-")
    # Then every match comes once, in order
    assert [job_id for page in pages for job_id in page] == ids[::-2]


def first_token(invoke: Invoke, **query: Any) -> str:
    token = listed(invoke, limit=1, **query)["next_token"]
    assert token
    return str(token)


def test_forged_foreign_and_other_filter_tokens_are_400(invoke: Invoke) -> None:
    for i in range(3):
        created(invoke, {**JOB, "name": f"job-{i}"})
    created(invoke, {**JOB, "name": "job-0"}, user="bob")
    token = first_token(invoke)

    # A token whose position was edited (its signature kept)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    content = json.loads(raw[16:])
    content["p"]["created_key"] = "9999" + content["p"]["created_key"][4:]
    edited = base64.urlsafe_b64encode(raw[:16] + json.dumps(content).encode()).decode()
    assert_error(list_jobs(invoke, limit=1, next_token=edited), 400, "invalid_page_token")

    # Garbage
    for garbage in ("garbage", "AAAA", token[:-4]):
        error = assert_error(list_jobs(invoke, limit=1, next_token=garbage), 400)
        assert error["code"] in {"invalid_page_token", "validation_error"}

    # Alice's token, used by bob
    assert_error(
        list_jobs(invoke, user="bob", limit=1, next_token=token), 400, "invalid_page_token"
    )

    # A token issued for other filters
    active = first_token(invoke, status="ACTIVE")
    assert_error(
        list_jobs(invoke, limit=1, next_token=active, name="job-"), 400, "invalid_page_token"
    )
    assert_error(list_jobs(invoke, limit=1, next_token=active), 400, "invalid_page_token")
    assert_error(list_jobs(invoke, limit=1, next_token=token, status="ACTIVE"), 400)

    # While the genuine tokens still work
    assert len(listed(invoke, limit=1, next_token=token)["items"]) == 1
    assert len(listed(invoke, limit=1, next_token=active, status="ACTIVE")["items"]) == 1


# ------------------------------------------------------------------------------ AWS failures


def test_a_failed_transaction_leaves_no_half_created_job(
    invoke: Invoke, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a transaction that DynamoDB cancels
    with failing("dynamodb", "TransactWriteItems", "TransactionCanceledException"):
        cancelled = create(invoke, JOB, key="key-1")
    assert not 200 <= cancelled["statusCode"] < 300
    assert_error(cancelled, cancelled["statusCode"])
    assert scan(stack, "JobsTable") == []
    assert scan(stack, "ScheduleTable") == []

    # Given a schedule table that does not exist, so the create transaction's last write fails
    real_name = stack.physical_names["ScheduleTable"]
    monkeypatch.setitem(stack.physical_names, "ScheduleTable", "it-MissingScheduleTable")
    wiring.reset()
    # When a job is created (with an Idempotency-Key)
    response = create(invoke, JOB, key="key-1")
    # Then the answer is an error, and no job, name guard or schedule item exists
    assert not 200 <= response["statusCode"] < 300
    assert_error(response, response["statusCode"])
    assert "Location" not in response["headers"]
    monkeypatch.setitem(stack.physical_names, "ScheduleTable", real_name)
    assert scan(stack, "JobsTable") == []
    assert scan(stack, "ScheduleTable") == []
    # And once the table is back, the retry (same key) creates the job, once
    wiring.reset()
    retried = create(invoke, JOB, key="key-1")
    assert retried["statusCode"] == 201, retried["body"]
    assert [item["job_id"] for item in job_items(stack)] == [body_of(retried)["job_id"]]
    assert len(scan(stack, "ScheduleTable")) == 1


THROTTLED = [
    ("dynamodb", "TransactWriteItems", "ProvisionedThroughputExceededException"),
    ("dynamodb", "TransactWriteItems", "ThrottlingException"),
    ("s3", "PutObject", "SlowDown"),
]


def test_throttling_is_503_and_a_throttled_create_writes_no_job(
    invoke: Invoke, stack: Stack, subtests: Any
) -> None:
    for service, operation, code in THROTTLED:
        with subtests.test(msg=f"{operation} {code}"):
            with failing(service, operation, code):
                response = create(invoke, JOB)
            assert_error(response, 503, "service_unavailable")
            assert scan(stack, "JobsTable") == []
            assert scan(stack, "ScheduleTable") == []
    # And once AWS answers again, the job is created
    job_id = created(invoke, JOB)["job_id"]
    # And reads are throttled the same way
    with failing("dynamodb", "GetItem", "ProvisionedThroughputExceededException"):
        assert_error(get(invoke, job_id), 503, "service_unavailable")
    with failing("dynamodb", "Query", "ProvisionedThroughputExceededException"):
        assert_error(list_jobs(invoke), 503, "service_unavailable")
    assert get(invoke, job_id)["statusCode"] == 200


# ------------------------------------------------------------------------------ docs


def docs_event(path: str) -> dict[str, Any]:
    event = api_event("list_jobs", user=None, path=path, query={})
    event["routeKey"] = event["requestContext"]["routeKey"] = f"GET {path}"
    return event


def schema_ref(response: dict[str, Any]) -> str:
    """The schema the answer refers to (for a 401, the function's own of the two it may be)."""
    schema = response["content"]["application/json"]["schema"]
    ref: str = schema["$ref"] if "$ref" in schema else schema["anyOf"][0]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_openapi_documents_the_routes_their_answers_and_the_error_shape(invoke: Invoke) -> None:
    # When the (public) document is fetched without a token
    response = invoke("ApiDocsFunction", docs_event("/openapi.json"))
    assert response["statusCode"] == 200, response["body"]
    assert response["headers"]["Content-Type"] == "application/json"
    openapi = body_of(response)

    # Then it lists the routes
    assert openapi["openapi"].startswith("3.")
    paths = openapi["paths"]
    assert set(paths) >= {"/jobs", "/jobs/{job_id}"}
    assert set(paths["/jobs"]) >= {"get", "post"}
    assert "get" in paths["/jobs/{job_id}"]

    # And the models, the error shape first
    schemas = openapi["components"]["schemas"]
    assert schemas["ErrorResponse"]["properties"]["error"]["$ref"].endswith("/ErrorBody")
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert set(schemas["ErrorBody"]["required"]) >= {"code", "message"}
    assert set(schemas["ErrorBody"]["properties"]) == {"code", "message", "details"}
    assert set(schemas["Job"]["properties"]) == JOB_FIELDS
    assert set(schemas["JobCreate"]["required"]) == {"name", "schedule", "script"}

    # And each route's success and errors
    operations = {
        ("post", "/jobs"): ("201", "Job", {"400", "401", "409", "422", "503"}),
        ("get", "/jobs/{job_id}"): ("200", "Job", {"400", "401", "404", "503"}),
        ("get", "/jobs"): ("200", "JobPage", {"400", "401", "503"}),
    }
    for (method, path), (success, model, errors) in operations.items():
        answers = paths[path][method]["responses"]
        assert schema_ref(answers[success]) == model, (method, path)
        for status in errors:
            assert schema_ref(answers[status]) == "ErrorResponse", (method, path, status)

    # And a 401 may also be API Gateway's authorizer, and powertools' 422 is not claimed
    unauthorized = paths["/jobs"]["get"]["responses"]["401"]["content"]["application/json"]
    assert unauthorized["schema"]["anyOf"][1]["$ref"].endswith("/GatewayMessage")
    assert "422" not in paths["/jobs"]["get"]["responses"]
    assert "HTTPValidationError" not in schemas

    # And the bearer token they need
    schemes = openapi["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["bearer"].items()
    assert openapi["security"] == [{"bearer": []}]


def test_docs_serves_swagger_ui_without_a_token(invoke: Invoke) -> None:
    response = invoke("ApiDocsFunction", docs_event("/docs"))
    assert response["statusCode"] == 200, response["body"][:500]
    assert response["headers"]["Content-Type"].startswith("text/html")
    assert "<html" in response["body"].lower()
    assert "swagger-ui" in response["body"]
    assert "/jobs/{job_id}" in response["body"]
