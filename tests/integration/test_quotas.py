"""Per-owner quotas through the handlers against moto, with the limits set as the template's
Quota* parameters set them (each function's environment), and a clock we control: each quota
answers 429 at its limit (Retry-After for the per-minute ones) and has room again after its
window; scheduled runs past runs_per_minute are deferred to the next minute, not dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from devstack.template import Stack
from integration.conftest import api_event, body_of, load_event, runs_of
from scheduler import wiring
from scheduler.times import epoch

SCRIPT = "print('hi')\n"
LIMITS = {
    "QUOTA_JOBS_PER_OWNER": "2",
    "QUOTA_RUN_NOW_PER_MINUTE": "2",
    "QUOTA_RUNS_PER_MINUTE": "3",
    "LOOKAHEAD_SECONDS": "90",
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(stack: Stack) -> Clock:
    stack.overrides = {function: dict(LIMITS) for function in stack.functions}
    stack.overrides["CreateJobFunction"]["LOOKAHEAD_SECONDS"] = "0"  # the watcher takes them
    fake = Clock(datetime(2026, 11, 30, 11, 59, 10, tzinfo=UTC))
    wiring.use_clock(fake)  # the stack fixture puts the real clock back
    return fake


def create(invoke, name: str, user: str = "alice", schedule: str = "0 3 * * *") -> dict[str, Any]:
    body = {"name": name, "schedule": schedule, "script": SCRIPT}
    event = api_event("create_job", user=user, body=body)
    event["headers"].pop("idempotency-key", None)
    return invoke("CreateJobFunction", event)


def run_now(invoke, job_id: str) -> dict[str, Any]:
    return invoke(
        "RunJobFunction",
        api_event("run_job", path=f"/jobs/{job_id}/run", path_parameters={"job_id": job_id}),
    )


def test_jobs_per_owner_is_429_at_its_limit_and_a_delete_frees_a_place(invoke, clock) -> None:
    first = body_of(create(invoke, "a"))
    assert create(invoke, "b")["statusCode"] == 201

    refused = create(invoke, "c")
    assert refused["statusCode"] == 429, refused
    error = body_of(refused)["error"]
    assert error["code"] == "quota_exceeded"
    assert "jobs_per_owner" in error["message"]
    assert "at most 2 jobs" in error["message"]
    assert "Retry-After" not in (refused.get("headers") or {})  # a delete frees one, not time
    assert create(invoke, "c", user="bob")["statusCode"] == 201  # bob's quota is his own

    job_id = first["job_id"]
    deleted = invoke(
        "DeleteJobFunction",
        api_event("delete_job", path=f"/jobs/{job_id}", path_parameters={"job_id": job_id}),
    )
    assert deleted["statusCode"] == 204
    assert create(invoke, "c")["statusCode"] == 201


def test_run_now_per_minute_is_429_with_retry_after_and_resets_next_minute(invoke, clock) -> None:
    job_id = body_of(create(invoke, "nightly"))["job_id"]
    assert [run_now(invoke, job_id)["statusCode"] for _ in range(2)] == [202, 202]

    refused = run_now(invoke, job_id)
    assert refused["statusCode"] == 429, refused
    assert refused["headers"]["Retry-After"] == "50"  # 11:59:10 -> 12:00:00
    error = body_of(refused)["error"]
    assert error["code"] == "quota_exceeded"
    assert "run_now_per_minute" in error["message"]
    assert "at most 2" in error["message"]

    clock.now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert run_now(invoke, job_id)["statusCode"] == 202


def test_scheduled_runs_past_runs_per_minute_are_deferred_not_dropped(stack, invoke, clock) -> None:
    # One watcher thread: the tick creates its runs from a thread pool, and moto (unlike
    # DynamoDB) does not make two threads' conditional writes of one item atomic, so under load
    # both could pass the counter's condition (the unit test's fake holds a lock, as DynamoDB).
    limits = {"QUOTA_JOBS_PER_OWNER": "10", "QUOTA_RUNS_PER_MINUTE": "2", "WATCHER_WORKERS": "1"}
    for function in stack.functions:
        stack.overrides[function] |= limits
    noon = datetime(2026, 11, 30, 12, tzinfo=UTC)
    carol = [
        body_of(create(invoke, f"c{i}", user="carol", schedule="0 12 * * *")) for i in range(3)
    ]
    dave = body_of(create(invoke, "d", user="dave", schedule="0 12 * * *"))

    # The 11:59:10 tick (window to 12:00:40): two of carol's runs start at 12:00, the third
    # is deferred to 12:01 and recorded so; dave's is untouched by carol's quota
    invoke("WatcherFunction", load_event("watcher"))
    runs = [run for job in carol for run in runs_of(stack, job["job_id"])]
    assert len(runs) == 3
    on_time = [r for r in runs if r["not_before"] == epoch(noon)]
    deferred = [r for r in runs if r["not_before"] == epoch(noon) + 60]
    assert [r["status"] for r in on_time] == ["QUEUED", "QUEUED"]
    assert [r["status"] for r in deferred] == ["PENDING"]
    assert "runs_per_minute quota (2)" in deferred[0]["deferred"]
    assert [r["status"] for r in runs_of(stack, dave["job_id"])] == ["QUEUED"]

    # The API shows why
    job_id, key = deferred[0]["job_id"], deferred[0]["key"]
    shown = invoke(
        "GetRunFunction",
        api_event(
            "get_run",
            user="carol",
            path=f"/jobs/{job_id}/runs/{key}",
            path_parameters={"job_id": job_id, "key": key},
        ),
    )
    assert "runs_per_minute" in body_of(shown)["deferred"]

    # The next minute has room: the 12:00:10 tick sends it, to start at 12:01
    clock.now = datetime(2026, 11, 30, 12, 0, 10, tzinfo=UTC)
    invoke("WatcherFunction", load_event("watcher"))
    again = [r for job in carol for r in runs_of(stack, job["job_id"]) if r["key"] == key]
    assert [(r["status"], r["not_before"]) for r in again] == [("QUEUED", epoch(noon) + 60)]


def dispatch_messages(stack) -> dict[str, Any]:
    """What is on the dispatch queue, as the executor's SQS event."""
    sqs = boto3.client("sqs")
    url = str(stack.resolve({"Ref": "DispatchQueue"}))
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    template = load_event("executor")["Records"][0]
    records = [
        dict(template)
        | {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "eventSourceARN": arn,
        }
        for m in messages
    ]
    return {"Records": records}


def owner_item(stack, user: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(stack.physical_names["JobsTable"])
    item: dict[str, Any] = table.get_item(Key={"pk": f"OWNER#{user}"})["Item"]
    return item


def finish(stack, invoke, run: dict[str, Any]) -> None:
    """The runner's finished report, through S3's notification to run_reports."""
    key = f"reports/{run['job_id']}/{run['key']}/{run['attempt']}/finished.json"
    report = {
        "job_id": run["job_id"],
        "run_key": run["key"],
        "attempt": int(run["attempt"]),
        "status": "SUCCEEDED",
        "exit_code": 0,
        "finished_at": "2026-11-30T12:00:01.000Z",
        "output_tail": "hi\n",
        "output_bytes": 3,
        "output_truncated": False,
        "output_uploaded": False,
    }
    bucket = stack.physical_names["ScriptsBucket"]
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(report).encode())
    sqs = boto3.client("sqs")
    url = str(stack.resolve({"Ref": "ReportsQueue"}))
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['ReportsQueue']}"
    template = load_event("executor")["Records"][0]
    event = {
        "Records": [
            dict(template)
            | {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "eventSourceARN": arn,
            }
            for m in messages
        ]
    }
    assert invoke("RunReportsFunction", event) == {"batchItemFailures": []}


def stop_tasks(stack: Stack, invoke) -> None:
    """ECS's task-stopped event for every task the executor started, with the container
    overrides its RunTask call gave (RUN_REFS, and PLACE: the pack's place item)."""
    ecs = boto3.client("ecs")
    cluster = stack.physical_names["RunnerCluster"]
    arns = ecs.list_tasks(cluster=cluster)["taskArns"]
    for task in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []:
        event = load_event("task_stopped")
        event["detail"]["taskArn"] = task["taskArn"]
        event["detail"]["overrides"] = task["overrides"]
        invoke("TaskEventsFunction", event)


def test_concurrent_runs_past_the_quota_wait_and_start_when_a_place_is_given_back(
    stack, invoke, clock
) -> None:
    for function in stack.functions:
        stack.overrides[function] |= {"QUOTA_CONCURRENT_RUNS": "1"}
    noon = datetime(2026, 11, 30, 12, tzinfo=UTC)
    jobs = [body_of(create(invoke, f"c{i}", schedule="0 12 * * *")) for i in range(2)]

    # The tick queues both (one pack); the executor starts one, the other waits for a place
    invoke("WatcherFunction", load_event("watcher"))
    assert invoke("ExecutorFunction", dispatch_messages(stack)) == {"batchItemFailures": []}
    runs = sorted((r for job in jobs for r in runs_of(stack, job["job_id"])), key=str)
    assert sorted(r["status"] for r in runs) == ["DISPATCHED", "PENDING"]
    [started] = [r for r in runs if r["status"] == "DISPATCHED"]
    [waiting] = [r for r in runs if r["status"] == "PENDING"]
    assert "concurrent_runs quota (1)" in waiting["deferred"]
    assert waiting["not_before"] == epoch(noon)
    # its first claim's pack and second stay with it: a later task shares that pack claim
    assert waiting["claim_pack"] == started["claim_pack"]
    assert waiting["claim_second"] == epoch(noon)
    assert owner_item(stack, "alice")["running"] == 1

    # The first run ends: its task still holds the pack's place
    finish(stack, invoke, started)
    assert [r["status"] for r in runs_of(stack, started["job_id"])] == ["SUCCEEDED"]
    assert owner_item(stack, "alice")["running"] == 1

    # Its task stops (the event carries what RunTask was given): the place is given back, once
    stop_tasks(stack, invoke)
    stop_tasks(stack, invoke)
    assert owner_item(stack, "alice")["running"] == 0

    # The next tick sends the waiting run again (its schedule item), and it starts
    clock.now = datetime(2026, 11, 30, 11, 59, 30, tzinfo=UTC)
    invoke("WatcherFunction", load_event("watcher"))
    assert invoke("ExecutorFunction", dispatch_messages(stack)) == {"batchItemFailures": []}
    assert [r["status"] for r in runs_of(stack, waiting["job_id"])] == ["DISPATCHED"]
    assert owner_item(stack, "alice")["running"] == 1


def test_a_counter_takes_what_is_left_of_its_limit_and_takes_back_what_was_not_created(
    stack: Stack,
) -> None:
    # The watcher counts an owner's runs of a minute in one conditional ADD; refused, the
    # refusal carries the count (ReturnValuesOnConditionCheckFailure, which moto honours as
    # DynamoDB does), and what is left of the limit is counted instead
    from scheduler.quotas.quota_models import RUNS_PER_MINUTE, MinuteCounter
    from scheduler.quotas.quota_repository import QuotaRepository

    counters = QuotaRepository(boto3.client("dynamodb"), table=stack.physical_names["JobsTable"])
    counter = MinuteCounter(
        "erin", RUNS_PER_MINUTE, epoch(datetime(2026, 11, 30, 12, tzinfo=UTC)), 10
    )
    assert counters.take_up_to(counter, 8) == 8
    assert counters.take_up_to(counter, 5) == 2
    assert counters.take_up_to(counter, 5) == 0
    assert counters.take_up_to(counter.next(), 50) == 10  # never more than the limit
    counters.uncount(counter, 3)  # runs a second taker found already created
    assert counters.take_up_to(counter, 5) == 3
    assert not counters.take(counter)
