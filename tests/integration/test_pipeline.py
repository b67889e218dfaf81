"""The scheduling pipeline through its real handlers against moto: watcher -> SQS FIFO ->
executor (ecs backend: moto records the RunTask) -> runner reports in S3 -> S3 notification ->
run status, and the ECS task-stopped safety net."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from integration.conftest import (
    api_event,
    body_of,
    load_event,
    runs_of,
    sqs_event,
    stored_runs_of,
    stores_of,
    use_function_environment,
)
from scheduler import keys, wiring

SCRIPT = "import os\nprint(os.environ['JOB_PARAMETERS'])\n"

pytestmark = pytest.mark.usefixtures("one_run_per_tick")


def _create_job(invoke, **overrides: Any) -> dict[str, Any]:
    job = {"name": "every-minute", "schedule": "* * * * *", "script": SCRIPT} | overrides
    response = invoke("CreateJobFunction", api_event("create_job", body=job))
    assert response["statusCode"] == 201, response
    return body_of(response)


def _queue_url(stack, logical: str) -> str:
    return str(stack.resolve({"Ref": logical}))


def _receive(stack, logical: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    response = sqs.receive_message(
        QueueUrl=_queue_url(stack, logical),
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
    )
    return response.get("Messages", [])


def _put_report(stack, run: dict[str, Any], kind: str, report: dict[str, Any]) -> None:
    key = f"reports/{run['job_id']}/{run['key']}/{run['attempt']}/{kind}.json"
    body = {"job_id": run["job_id"], "run_key": run["key"], "attempt": int(run["attempt"])}
    boto3.client("s3").put_object(
        Bucket=stack.physical_names["ScriptsBucket"],
        Key=key,
        Body=json.dumps(body | report).encode(),
    )


def _put_claim(stack, job_id: str, run_key: str, attempt: int) -> None:
    """A run's own claim, as its runner PUTs it just before the script starts."""
    boto3.client("s3").put_object(
        Bucket=stack.physical_names["ScriptsBucket"],
        Key=keys.claim_key(job_id, run_key, attempt),
        Body=json.dumps({"job_id": job_id, "run_key": run_key}).encode(),
    )


def _dispatched_run(stack, invoke, **job_fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job due within the look-ahead, and its run as the executor leaves it (in a task)."""
    job = _create_job(invoke, **job_fields)
    invoke("WatcherFunction", load_event("watcher"))
    messages = _receive(stack, "DispatchQueue")
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    invoke("ExecutorFunction", sqs_event(messages, arn))
    (run,) = runs_of(stack, job["job_id"])
    return job, run


def _stop_task(invoke, job_id: str, run_key: str, attempt: int) -> None:
    """ECS's event for the stop of the task holding the run's `attempt` (events/task_stopped)."""
    stopped = load_event("task_stopped")
    refs = f"{job_id}/{run_key}/{attempt}"
    stopped["detail"]["overrides"]["containerOverrides"][0]["environment"][0]["value"] = refs
    invoke("TaskEventsFunction", stopped)


def _deliver_reports(stack, invoke) -> None:
    messages = _receive(stack, "ReportsQueue")
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['ReportsQueue']}"
    result = invoke("RunReportsFunction", sqs_event(messages, arn))
    assert result == {"batchItemFailures": []}


def test_a_due_run_flows_from_schedule_to_succeeded(stack, invoke) -> None:
    # Given a job due within the watcher's look-ahead
    job = _create_job(invoke, parameters={"greeting": "hello"})

    # When the watcher ticks
    invoke("WatcherFunction", load_event("watcher"))

    # Then one PENDING->QUEUED run exists and one message is on the FIFO queue
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "QUEUED"
    assert run["attempt"] == 1
    assert run["key"] == f"{int(run['execution_time']):010d}-{job['job_id']}"
    messages = _receive(stack, "DispatchQueue")
    assert len(messages) == 1
    # (a group of its own: it waits behind no other pack, held back or failing)
    body = json.loads(messages[0]["Body"])
    assert messages[0]["Attributes"]["MessageGroupId"] == body["pack_id"]

    # And the job's schedule moved to its next occurrence (the taken item is left to expire)
    schedule = boto3.resource("dynamodb").Table(stack.physical_names["ScheduleTable"])
    slots = [i for i in schedule.scan()["Items"] if i.get("job_id") == job["job_id"]]
    at = int(run["execution_time"])
    assert sorted(int(s["scheduled_at"]) for s in slots) == [at, at + 60]

    # When the executor receives the message (twice: a redelivery)
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    event = sqs_event(messages, arn)
    assert invoke("ExecutorFunction", event) == {"batchItemFailures": []}
    assert invoke("ExecutorFunction", event) == {"batchItemFailures": []}

    # Then exactly one Fargate task was started for it
    ecs = boto3.client("ecs")
    tasks = ecs.list_tasks(cluster=stack.physical_names["RunnerCluster"])["taskArns"]
    assert len(tasks) == 1
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "DISPATCHED"
    assert run["task_id"] == tasks[0]

    # When the runner reports its start and its end through S3
    _put_report(
        stack, run, "started", {"started_at": "2026-11-27T17:01:00.120Z", "start_lag_ms": 120}
    )
    _deliver_reports(stack, invoke)
    assert runs_of(stack, job["job_id"])[0]["status"] == "RUNNING"
    _put_report(
        stack,
        run,
        "finished",
        {
            "status": "SUCCEEDED",
            "exit_code": 0,
            "finished_at": "2026-11-27T17:01:01.000Z",
            "output_tail": '{"greeting": "hello"}\n',
            "output_bytes": 22,
            "output_truncated": False,
            "output_uploaded": False,
        },
    )
    _deliver_reports(stack, invoke)

    # Then the run SUCCEEDED with its output tail
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "SUCCEEDED"
    assert run["exit_code"] == 0
    assert "hello" in run["output_tail"]
    assert "output_key" not in run  # the tail is the whole output: no object to point at
    assert run["start_lag_ms"] == 120
    # And it will expire after the retention period (the runs table's TTL)
    retention = int(run["expires_at"]) - int(datetime.now(UTC).timestamp())
    assert 89 * 86400 < retention <= 90 * 86400


def test_a_task_that_dies_unreported_is_retried_then_fails(stack, invoke) -> None:
    job, run = _dispatched_run(stack, invoke, max_attempts=2)

    # When its runner claims it (its script starts), then ECS says the task stopped and no
    # report exists
    _put_claim(stack, job["job_id"], run["key"], 1)
    _stop_task(invoke, job["job_id"], run["key"], 1)

    # Then the attempt failed and attempt 2 is pending with a retry schedule item
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "PENDING"
    assert run["attempt"] == 2
    assert run["attempts"][0]["status"] == "FAILED"
    assert run["attempts"][0]["exit_code"] == 137

    # When attempt 2 also dies, the run ends FAILED (max_attempts = 2)
    table = boto3.resource("dynamodb").Table(stack.physical_names["RunsTable"])
    table.update_item(
        Key={"job_id": job["job_id"], "key": run["key"]},
        UpdateExpression="SET #s = :d",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":d": "DISPATCHED"},
    )
    _put_claim(stack, job["job_id"], run["key"], 2)
    _stop_task(invoke, job["job_id"], run["key"], 2)
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "FAILED"
    assert run["attempt"] == 2


def test_a_task_that_stops_before_its_runner_claims_the_run_does_not_spend_an_attempt(
    stack, invoke
) -> None:
    # Given the only attempt of a run, dispatched, that no runner has claimed yet
    job, run = _dispatched_run(stack, invoke, max_attempts=1)

    # When ECS says its task stopped (killed before the run's second, say)
    _stop_task(invoke, job["job_id"], run["key"], 1)

    # Then the run is not failed: its script never started, so it runs again (attempt 2, at
    # once) and the attempt that never started is not counted against max_attempts
    (run,) = runs_of(stack, job["job_id"])
    assert (run["status"], run["attempt"]) == ("PENDING", 2)
    (unstarted,) = run["attempts"]
    assert unstarted["script_started"] is False
    assert unstarted["error"].startswith("the script never started: task stopped")


def test_run_now_queues_immediately_and_shows_in_history(stack, invoke) -> None:
    # Given a job that is not due for months
    job = _create_job(invoke, schedule="0 0 1 1 *")
    path = {"job_id": job["job_id"]}

    # When its owner asks to run it now
    response = invoke(
        "RunJobFunction",
        api_event("run_job", path=f"/jobs/{job['job_id']}/run", path_parameters=path),
    )

    # Then the run is queued at once, on the same queue as scheduled runs
    assert response["statusCode"] == 202, response
    run = body_of(response)
    assert run["status"] == "QUEUED"
    assert run["queued_at"] is not None
    assert run["trigger"] == "MANUAL"
    assert response["headers"]["Location"] == f"/jobs/{job['job_id']}/runs/{run['key']}"
    (message,) = _receive(stack, "DispatchQueue")
    assert json.loads(message["Body"])["runs"][0]["key"] == run["key"]

    # And it is in the job's history, for its owner only
    history = invoke(
        "ListRunsFunction",
        api_event("list_runs", path=f"/jobs/{job['job_id']}/runs", path_parameters=path),
    )
    assert [r["key"] for r in body_of(history)["items"]] == [run["key"]]
    one = invoke(
        "GetRunFunction",
        api_event(
            "get_run",
            path=f"/jobs/{job['job_id']}/runs/{run['key']}",
            path_parameters=path | {"key": run["key"]},
        ),
    )
    assert body_of(one)["key"] == run["key"]
    for function, name in (("ListRunsFunction", "list_runs"), ("RunJobFunction", "run_job")):
        foreign = invoke(function, api_event(name, user="bob", path_parameters=path))
        assert foreign["statusCode"] == 404


def test_a_queued_run_cancelled_by_its_owner_is_never_dispatched(stack, invoke) -> None:
    # Given a run started now, queued
    job = _create_job(invoke, schedule="0 0 1 1 *")
    path = {"job_id": job["job_id"]}
    run = body_of(
        invoke(
            "RunJobFunction",
            api_event("run_job", path=f"/jobs/{job['job_id']}/run", path_parameters=path),
        )
    )

    def cancel(user: str = "alice") -> dict[str, Any]:
        event = api_event(
            "cancel_run",
            user=user,
            path=f"/jobs/{job['job_id']}/runs/{run['key']}/cancel",
            path_parameters=path | {"key": run["key"]},
            body={"reason": "wrong input"},
        )
        return invoke("CancelRunFunction", event)

    # When someone else tries to cancel it, then it is not found for them
    assert cancel("bob")["statusCode"] == 404

    # When its owner cancels it
    response = cancel()

    # Then it is CANCELLED with the reason, and the runner's signals are in the bucket
    assert response["statusCode"] == 200, response
    assert body_of(response)["status"] == "CANCELLED"
    (stored,) = runs_of(stack, job["job_id"])
    assert (stored["status"], stored["error"]) == (
        "CANCELLED",
        "cancelled by its owner: wrong input",
    )
    s3 = boto3.client("s3")
    bucket = stack.physical_names["ScriptsBucket"]
    # (the cancel object the runner reads at the second; no claim: the runner's claims are its own)
    s3.head_object(Bucket=bucket, Key=f"cancels/{job['job_id']}/{run['key']}/1.json")

    # And the executor that receives its message starts nothing
    _dispatch(stack, invoke)
    assert (
        boto3.client("ecs").list_tasks(cluster=stack.physical_names["RunnerCluster"])["taskArns"]
        == []
    )

    # And cancelling it again answers it again; the job shows it as its last run
    assert body_of(cancel())["status"] == "CANCELLED"
    shown = body_of(
        invoke(
            "GetJobFunction",
            api_event("get_job", path=f"/jobs/{job['job_id']}", path_parameters=path),
        )
    )
    assert shown["last_run"]["key"] == run["key"]
    assert shown["last_run"]["status"] == "CANCELLED"


def test_a_dispatched_run_cancelled_marks_its_pack_claim_for_the_runner(
    stack, invoke, monkeypatch
) -> None:
    # Given a run dispatched to a task, and the same run as read before its claim
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    runs = stores_of(stack, "CancelRunFunction", monkeypatch).runs
    (queued,) = runs_of(stack, job["job_id"])
    before_claim = runs.get(job["job_id"], queued["key"])
    assert before_claim is not None
    assert before_claim.claim_pack is None
    _dispatch(stack, invoke)
    (run,) = runs_of(stack, job["job_id"])

    # When a cancel goes on with the run as read before its claim, then its write is refused
    # (it would leave the claim's runner unaware: it reads the run's own cancel object only
    # under its claim's mark)
    assert not runs.cancel(before_claim, "cancelled by its owner", datetime.now(UTC))

    # When its owner cancels it through the API
    path = {"job_id": job["job_id"], "key": run["key"]}
    event = api_event(
        "cancel_run", path=f"/jobs/{job['job_id']}/runs/{run['key']}/cancel", path_parameters=path
    )
    assert body_of(invoke("CancelRunFunction", event))["status"] == "CANCELLED"

    # Then the run's own cancel object and its pack claim's mark are both in the bucket
    s3 = boto3.client("s3")
    bucket = stack.physical_names["ScriptsBucket"]
    s3.head_object(Bucket=bucket, Key=keys.cancel_key(job["job_id"], run["key"], 1))
    s3.head_object(
        Bucket=bucket, Key=keys.pack_cancel_key(run["claim_pack"], int(run["claim_second"]))
    )


def test_a_run_that_ended_cannot_be_cancelled(stack, invoke) -> None:
    # Given a run that ended SUCCEEDED
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    _dispatch(stack, invoke)
    (run,) = runs_of(stack, job["job_id"])
    _put_report(stack, run, "finished", {"status": "SUCCEEDED", "exit_code": 0})
    _deliver_reports(stack, invoke)

    # When its owner tries to cancel it, then the answer is 409, saying how it ended
    event = api_event(
        "cancel_run",
        path=f"/jobs/{job['job_id']}/runs/{run['key']}/cancel",
        path_parameters={"job_id": job["job_id"], "key": run["key"]},
    )
    response = invoke("CancelRunFunction", event)
    assert response["statusCode"] == 409, response
    assert "SUCCEEDED" in body_of(response)["error"]["message"]
    assert runs_of(stack, job["job_id"])[0]["status"] == "SUCCEEDED"


def test_a_watcher_that_dies_before_sending_loses_nothing(stack, invoke, monkeypatch) -> None:
    # Given a due job, and a tick that crashes after writing the run record, before the send
    job = _create_job(invoke)
    use_function_environment(stack, "WatcherFunction", monkeypatch)

    def crash(**_: Any) -> None:
        raise RuntimeError("killed mid-tick")

    boto3.setup_default_session()  # the watcher's clients are built from it, after this hook
    boto3.DEFAULT_SESSION.events.register("before-call.sqs.SendMessageBatch", crash)
    with pytest.raises(RuntimeError):
        wiring.watcher().tick()
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "QUEUED"  # created QUEUED, never sent: its item is still there
    created_deadline = run["deadline"]
    assert _receive(stack, "DispatchQueue") == []

    # When the next tick runs normally
    boto3.DEFAULT_SESSION.events.unregister("before-call.sqs.SendMessageBatch", crash)
    wiring.reset()
    invoke("WatcherFunction", load_event("watcher"))

    # Then the same run (no duplicate) is queued exactly once, its deadline from this send
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "QUEUED"
    assert run["deadline"] >= created_deadline
    assert len(_receive(stack, "DispatchQueue")) == 1


def test_a_watcher_that_dies_between_the_next_item_and_the_job_loses_nothing(
    stack, invoke, monkeypatch
) -> None:
    # Given a due every-minute job, and a tick that crashes after putting the next occurrence's
    # item, before moving the job's next run to it (two plain writes, in that order)
    job = _create_job(invoke)
    use_function_environment(stack, "WatcherFunction", monkeypatch)
    schedule = boto3.resource("dynamodb").Table(stack.physical_names["ScheduleTable"])

    def items() -> dict[int, dict[str, Any]]:
        found = [i for i in schedule.scan()["Items"] if i["bucket"] != "watcher"]
        return {int(i["slot"].split("#")[0]): i for i in found}

    (taken,) = items()

    def crash(params: dict[str, Any], **_: Any) -> None:
        body = params.get("body", b"")
        body = body.decode() if isinstance(body, bytes) else str(body)
        if "next_run_utc" in body:
            raise RuntimeError("killed between the next item and the job")

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-call.dynamodb.UpdateItem", crash)
    with pytest.raises(RuntimeError):
        wiring.watcher().tick()
    jobs = stores_of(stack, "WatcherFunction", monkeypatch).jobs
    unmoved = jobs.get(job["job_id"])
    assert unmoved is not None
    assert unmoved.next_run_at is not None
    assert int(unmoved.next_run_at.timestamp()) == taken  # the job still shows it
    assert len(items()) == 2  # the taken item, and the next one put first

    # When the next tick runs normally
    boto3.DEFAULT_SESSION.events.unregister("before-call.dynamodb.UpdateItem", crash)
    wiring.reset()
    invoke("WatcherFunction", load_event("watcher"))

    # Then the job shows a later occurrence whose item exists, with a run for every
    # occurrence before it (the taken item's queued once, sent again), and the taken items
    # are still there, left to expire (the table's TTL attribute, 30 days after due)
    shown = jobs.get(job["job_id"])
    assert shown is not None
    assert shown.next_run_at is not None
    following = int(shown.next_run_at.timestamp())
    assert following > taken
    left = items()
    assert following in left
    runs = {int(r["execution_time"]): r for r in runs_of(stack, job["job_id"])}
    assert sorted(runs) == sorted(at for at in left if at < following)
    assert runs[taken]["status"] == "QUEUED"
    assert {int(i["expires_at"]) - at for at, i in left.items()} == {30 * 86400}


def test_a_taken_occurrence_item_is_passed_over_without_a_write(stack, invoke, monkeypatch) -> None:
    # Given a tick that took a due every-minute job's occurrence: its item is still there
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    use_function_environment(stack, "WatcherFunction", monkeypatch)
    (run,) = runs_of(stack, job["job_id"])
    at = int(run["execution_time"])
    schedule = boto3.resource("dynamodb").Table(stack.physical_names["ScheduleTable"])
    slots = [i["slot"] for i in schedule.scan()["Items"] if i["bucket"] != "watcher"]
    assert f"{at:010d}#{job['job_id']}" in slots

    # When the next tick re-reads it in its overlap, its DynamoDB writes recorded
    writes: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        body = params.get("body", b"")
        writes.append(body.decode() if isinstance(body, bytes) else str(body))

    operations = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems")
    boto3.setup_default_session()
    for operation in operations:
        boto3.DEFAULT_SESSION.events.register(f"before-call.dynamodb.{operation}", record)
    wiring.reset()
    try:
        wiring.watcher().tick()
    finally:
        for operation in operations:
            boto3.DEFAULT_SESSION.events.unregister(f"before-call.dynamodb.{operation}", record)

    # Then nothing is written for it (no run put, no send again, no delete): its job shows a
    # later occurrence, read consistently, so the item is known taken
    assert writes, "the tick wrote nothing at all (not even its cursor)"
    assert not [w for w in writes if f"{at:010d}#" in w or run["key"] in w]
    ((again,),) = [[r for r in runs_of(stack, job["job_id"]) if r["key"] == run["key"]]]
    assert again == run


def test_a_failed_dispatch_holds_back_only_its_own_jobs_records(stack, invoke) -> None:
    # Given two owners' jobs due together: two packs, two messages, two message groups (at a
    # fixed moment: on the wall clock a tick may take a second occurrence of each job)
    wiring.use_clock(lambda: datetime(2026, 12, 1, 10, 0, 20, tzinfo=UTC))  # stack restores it
    first = _create_job(invoke)
    second_event = api_event(
        "create_job", user="bob", body={"name": "b", "schedule": "* * * * *", "script": SCRIPT}
    )
    second = body_of(invoke("CreateJobFunction", second_event))
    invoke("WatcherFunction", load_event("watcher"))
    messages = _receive(stack, "DispatchQueue")
    assert len(messages) == 2

    # When the executor takes both and the first RunTask fails (retries exhausted)
    calls = []

    def refuse_first(**_: Any) -> tuple[Any, dict[str, Any]] | None:
        calls.append(1)
        if len(calls) > 1:
            return None
        error = {"Code": "AccessDeniedException", "Message": "injected by the test"}
        return SimpleNamespace(status_code=400, headers={}), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    boto3.setup_default_session()  # the executor's clients are built from it, hook included
    boto3.DEFAULT_SESSION.events.register("before-call.ecs.RunTask", refuse_first)
    wiring.reset()
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    try:
        result = invoke("ExecutorFunction", sqs_event(messages, arn))
    finally:
        boto3.DEFAULT_SESSION.events.unregister("before-call.ecs.RunTask", refuse_first)
        wiring.reset()

    # Then only the failed record comes back (its group's order kept); the other job's pack,
    # in another message group, is dispatched now rather than after the visibility timeout
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    statuses = {
        job["job_id"]: runs_of(stack, job["job_id"])[0]["status"] for job in (first, second)
    }
    failed_job = json.loads(messages[0]["Body"])["runs"][0]["job_id"]
    assert statuses[failed_job] == "QUEUED"  # its claim released, for the redelivery
    assert [s for j, s in statuses.items() if j != failed_job] == ["DISPATCHED"]


def test_a_pack_is_dispatched_with_one_write_and_a_lapsed_claim_is_not_dispatched_again(
    stack, invoke
) -> None:
    # Given two of one owner's every-minute jobs: one pack, one message (at a fixed moment)
    noon = datetime(2026, 12, 1, 12, 0, 20, tzinfo=UTC)
    wiring.use_clock(lambda: noon)  # the stack fixture restores the real clock
    second = {"name": "every-minute-too", "schedule": "* * * * *", "script": SCRIPT}
    headers = {"idempotency-key": "another-create"}  # events/create_job.json carries one
    created = invoke("CreateJobFunction", api_event("create_job", body=second, headers=headers))
    jobs = [_create_job(invoke), body_of(created)]
    invoke("WatcherFunction", load_event("watcher"))
    messages = _receive(stack, "DispatchQueue")
    assert len(messages) == 1
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    message_event = sqs_event(messages, arn)

    # When the executor dispatches it
    assert invoke("ExecutorFunction", message_event) == {"batchItemFailures": []}

    # Then one task holds both runs, and one record says so: the run items keep their claim
    # (no write to each), and the API shows each run DISPATCHED in that task
    ecs = boto3.client("ecs")
    (task,) = ecs.list_tasks(cluster=stack.physical_names["RunnerCluster"])["taskArns"]
    stored = [item for job in jobs for item in stored_runs_of(stack, job["job_id"])]
    assert [item["status"] for item in stored] == ["DISPATCHING", "DISPATCHING"]
    table = boto3.resource("dynamodb").Table(stack.physical_names["RunsTable"])
    records = [i for i in table.scan()["Items"] if i["job_id"].startswith("dispatch#")]
    assert [record["task_id"] for record in records] == [task]
    for item in stored:
        path = {"job_id": item["job_id"], "key": item["key"]}
        url = f"/jobs/{item['job_id']}/runs/{item['key']}"
        event = api_event("get_run", path=url, path_parameters=path)
        shown = body_of(invoke("GetRunFunction", event))
        assert (shown["status"], shown["task_id"]) == ("DISPATCHED", task)

    # When the runner reports one run's start, the status path's DynamoDB reads recorded
    reads: list[str] = []
    runs_table = stack.physical_names["RunsTable"]

    def record(event_name: str, params: dict[str, Any], **_: Any) -> None:
        body = params.get("body", b"")
        if runs_table in (body.decode() if isinstance(body, bytes) else str(body)):
            reads.append(event_name.rsplit(".", 1)[-1])

    started = {"started_at": "2026-12-01T12:01:00.050Z", "start_lag_ms": 50}
    _put_report(stack, runs_of(stack, jobs[0]["job_id"])[0], "started", started)
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-call.dynamodb", record)
    wiring.reset()
    try:
        _deliver_reports(stack, invoke)
    finally:
        boto3.DEFAULT_SESSION.events.unregister("before-call.dynamodb", record)

    # Then it is RUNNING, from one read of the run (not of its pack's dispatch record: the
    # status path's writes take a DISPATCHING run as they take a DISPATCHED one)
    assert runs_of(stack, jobs[0]["job_id"])[0]["status"] == "RUNNING"
    assert [r for r in reads if r in ("GetItem", "Query", "BatchGetItem")] == ["GetItem"]

    # When the message comes again after the claims have lapsed (an executor that died before
    # deleting it: SQS redelivers after the visibility timeout)
    wiring.use_clock(lambda: noon + timedelta(minutes=10))
    assert invoke("ExecutorFunction", message_event) == {"batchItemFailures": []}

    # Then no second task is started
    assert ecs.list_tasks(cluster=stack.physical_names["RunnerCluster"])["taskArns"] == [task]


def _put_batch(stack, item: dict[str, Any], index: int, *runs: dict[str, Any]) -> None:
    """A batch of finished reports of runs of `item`'s pack claim, as their runner PUTs it."""
    key = keys.batch_report_key(item["claim_pack"], int(item["claim_second"]), index)
    reports = [
        {"job_id": run["job_id"], "run_key": run["key"], "attempt": 1, "status": "SUCCEEDED"}
        | {"exit_code": 0, "output_tail": f"{run['job_id']} done\n", "output_uploaded": False}
        for run in runs
    ]
    boto3.client("s3").put_object(
        Bucket=stack.physical_names["ScriptsBucket"],
        Key=key,
        Body=json.dumps({"reports": reports}).encode(),
    )


def test_a_batch_of_finished_reports_ends_its_runs_even_when_its_notification_is_lost(
    stack, invoke
) -> None:
    # Given two of one owner's every-minute jobs, dispatched in one pack (at a fixed moment)
    noon = datetime(2026, 12, 1, 12, 0, 20, tzinfo=UTC)
    wiring.use_clock(lambda: noon)  # the stack fixture restores the real clock
    second = {"name": "every-minute-too", "schedule": "* * * * *", "script": SCRIPT}
    headers = {"idempotency-key": "another-create"}
    created = invoke("CreateJobFunction", api_event("create_job", body=second, headers=headers))
    jobs = [_create_job(invoke), body_of(created)]
    invoke("WatcherFunction", load_event("watcher"))
    _dispatch(stack, invoke)
    first, other = (runs_of(stack, job["job_id"])[0] for job in jobs)
    (item,) = stored_runs_of(stack, first["job_id"])
    assert stored_runs_of(stack, other["job_id"])[0]["claim_pack"] == item["claim_pack"]

    # When the runner reports both ends in one batch of their pack claim
    _put_batch(stack, item, 0, first, other)
    _deliver_reports(stack, invoke)

    # Then both runs end as reported, from that one object
    for run in (first, other):
        ended = runs_of(stack, run["job_id"])[0]
        assert (ended["status"], ended["output_tail"]) == ("SUCCEEDED", f"{run['job_id']} done\n")

    # Given a third run of the claim, whose end a second batch carries, but whose notification
    # never reaches the status function (its consumer died)
    third = body_of(
        invoke(
            "CreateJobFunction",
            api_event(
                "create_job",
                body=second | {"name": "late-reporter"},
                headers={"idempotency-key": "third"},
            ),
        )
    )
    invoke("WatcherFunction", load_event("watcher"))
    _dispatch(stack, invoke)
    (late,) = runs_of(stack, third["job_id"])
    (late_item,) = stored_runs_of(stack, third["job_id"])
    _put_batch(stack, late_item, 0, late)
    _receive(stack, "ReportsQueue")  # taken and never deleted

    # When its task stops
    _stop_task(invoke, late["job_id"], late["key"], 1)

    # Then it is concluded from the batch (read by its pack claim's keys), not failed
    assert runs_of(stack, third["job_id"])[0]["status"] == "SUCCEEDED"


def test_an_executor_that_dies_after_claiming_is_redone_after_the_claim_expires(
    stack, invoke, monkeypatch
) -> None:
    # Given a queued run that an executor claimed and then died on (no dispatch, no release)
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    messages = _receive(stack, "DispatchQueue")
    runs = stores_of(stack, "ExecutorFunction", monkeypatch).runs
    (record,) = runs_of(stack, job["job_id"])
    run = runs.get(job["job_id"], record["key"])
    from datetime import UTC, datetime

    long_ago = datetime.now(UTC) - timedelta(hours=1)
    assert runs.claim(run, "dead-executor", long_ago, claim_seconds=60)

    # When SQS redelivers the message (after its visibility timeout)
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    assert invoke("ExecutorFunction", sqs_event(messages, arn)) == {"batchItemFailures": []}

    # Then the run is dispatched, once
    tasks = boto3.client("ecs").list_tasks(cluster=stack.physical_names["RunnerCluster"])
    assert len(tasks["taskArns"]) == 1
    assert runs_of(stack, job["job_id"])[0]["status"] == "DISPATCHED"


def test_a_live_claim_makes_the_message_come_back_later(stack, invoke, monkeypatch) -> None:
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    messages = _receive(stack, "DispatchQueue")
    runs = stores_of(stack, "ExecutorFunction", monkeypatch).runs
    (record,) = runs_of(stack, job["job_id"])
    from datetime import UTC, datetime

    assert runs.claim(runs.get(job["job_id"], record["key"]), "busy", datetime.now(UTC), 600)
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    # The whole batch failed: the handler raises, and SQS redelivers it after its visibility timeout
    with pytest.raises(BatchProcessingError):
        invoke("ExecutorFunction", sqs_event(messages, arn))
    assert (
        boto3.client("ecs").list_tasks(cluster=stack.physical_names["RunnerCluster"])["taskArns"]
        == []
    )


def test_a_missed_tick_is_caught_up_from_the_cursor(stack, invoke, monkeypatch) -> None:
    # Given a job whose run fell due 20 minutes ago, while no tick ran (an outage)
    job = _create_job(invoke)
    stores = stores_of(stack, "WatcherFunction", monkeypatch)
    schedule = stores.schedule
    (item,) = [i for i in schedule.due(*_wide_window()) if i.job_id == job["job_id"]]
    from datetime import UTC, datetime

    past = int(datetime.now(UTC).timestamp()) // 60 * 60 - 1200
    # the job and its item as an outage leaves them (what bench/outage.py does too)
    stored = stores.jobs.get(job["job_id"])
    assert stored is not None
    stores.jobs.advance(stored, item, datetime.fromtimestamp(past, UTC))
    schedule.advance_cursor(past - 60)  # the last tick before the outage

    # When the watcher runs again
    invoke("WatcherFunction", load_event("watcher"))

    # Then every missed minute is queued (late, not lost), and the job is scheduled ahead again
    runs = sorted(runs_of(stack, job["job_id"]), key=lambda r: int(r["execution_time"]))
    times = [int(r["execution_time"]) for r in runs]
    assert times[0] == past
    assert times == list(range(past, past + 60 * len(times), 60))
    assert len(times) >= 20
    assert {r["status"] for r in runs} == {"QUEUED"}
    assert {int(r["attempt"]) for r in runs} == {1}
    shown = stores.jobs.get(job["job_id"])
    assert shown is not None
    assert shown.next_run_at is not None
    (upcoming,) = [
        i
        for i in schedule.due(*_wide_window())
        if i.job_id == job["job_id"] and i.scheduled_at == int(shown.next_run_at.timestamp())
    ]
    assert upcoming.scheduled_at == times[-1] + 60
    assert upcoming.scheduled_at > datetime.now(UTC).timestamp()


def _wide_window() -> tuple[Any, Any]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


def _manifest_of(stack, run_key: str) -> dict[str, Any]:
    """The manifest entry the executor published for a run (its task's RUNS_MANIFEST_URL)."""
    s3 = boto3.client("s3")
    bucket = stack.physical_names["ScriptsBucket"]
    for listed in s3.list_objects_v2(Bucket=bucket, Prefix="manifests/").get("Contents", []):
        body = json.loads(s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read())
        for entry in body["runs"]:
            if entry["run_key"] == run_key:
                return dict(entry)
    raise AssertionError(f"no manifest holds {run_key}")


def _dispatch(stack, invoke) -> None:
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    event = sqs_event(_receive(stack, "DispatchQueue"), arn)
    assert invoke("ExecutorFunction", event) == {"batchItemFailures": []}


@pytest.mark.parametrize("policy", ["FORBID", "BUFFER_ONE", "REPLACE"])
def test_a_run_of_a_job_with_an_overlap_policy_carries_its_lock_to_the_runner(
    stack, invoke, policy: str
) -> None:
    # Given a job with an overlap policy, its run taken and dispatched
    job = _create_job(invoke, concurrency_policy=policy)
    invoke("WatcherFunction", load_event("watcher"))
    (run,) = runs_of(stack, job["job_id"])
    _dispatch(stack, invoke)

    # Then the runner is told the policy, with presigned URLs of the job's lock and waiting
    # slot (the decision is its own, at the run's second), and its cancel object
    entry = _manifest_of(stack, run["key"])
    assert entry["overlap"] == policy
    assert f"/locks/{job['job_id']}.json?" in entry["lock"]["take"]
    assert f"/locks/{job['job_id']}.waiting.json?" in entry["lock"]["wait"]
    assert (
        f"/reports/{job['job_id']}/{run['key']}/1/waiting.json?" in entry["lock"]["waiting_report"]
    )
    assert f"/cancels/{job['job_id']}/{run['key']}/1.json?" in entry["cancel_url"]


def test_a_run_the_runner_skipped_for_its_overlap_policy_ends_skipped(stack, invoke) -> None:
    # Given a FORBID job's dispatched run, whose runner found the previous run holding the lock
    job = _create_job(invoke, concurrency_policy="FORBID")
    invoke("WatcherFunction", load_event("watcher"))
    _dispatch(stack, invoke)
    (run,) = runs_of(stack, job["job_id"])
    error = "skipped: run 1795000000-x was still running (FORBID)"
    _put_report(stack, run, "finished", {"status": "SKIPPED", "error": error})

    # When the report's notification is delivered
    _deliver_reports(stack, invoke)

    # Then the run is SKIPPED for good (attempts left or not), saying why
    (run,) = runs_of(stack, job["job_id"])
    assert (run["status"], run["attempt"], run["error"]) == ("SKIPPED", 1, error)


def test_the_deadline_sweep_concludes_from_a_report_whose_notification_was_lost(
    stack, invoke
) -> None:
    # Given a dispatched run whose runner finished and reported, but whose report
    # notification never reached the run status function (say its invocation died)
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    _dispatch(stack, invoke)
    (run,) = runs_of(stack, job["job_id"])
    _put_report(stack, run, "finished", {"status": "SUCCEEDED", "exit_code": 0})
    _receive(stack, "ReportsQueue")  # taken and never deleted: as if its consumer died

    # When its deadline has passed and the watcher sweeps (a deadline just after the last
    # sweep's cursor: the sweep reads each deadline once, from its cursor)
    boto3.resource("dynamodb").Table(stack.physical_names["RunsTable"]).update_item(
        Key={"job_id": job["job_id"], "key": run["key"]},
        UpdateExpression="SET deadline = :soon",
        ExpressionAttributeValues={":soon": int(time.time()) + 1},
    )
    time.sleep(2.1)
    invoke("WatcherFunction", load_event("watcher"))

    # Then the run is concluded from the report, not failed and run again (the tick may also
    # have queued the job's next minute, when it is within the look-ahead)
    (run,) = [r for r in runs_of(stack, job["job_id"]) if r["key"] == run["key"]]
    assert run["status"] == "SUCCEEDED"
    assert run["attempt"] == 1
    assert "attempts" not in run


def test_an_ended_run_keeps_its_in_flight_entry_and_the_sweep_passes_it_once(
    stack, invoke, monkeypatch
) -> None:
    # Given a dispatched run whose start is recorded late (its report's start an hour back)
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    _dispatch(stack, invoke)
    (run,) = runs_of(stack, job["job_id"])
    stores = stores_of(stack, "WatcherFunction", monkeypatch)
    stored = stores.runs.get(job["job_id"], run["key"])
    assert stored is not None
    now = datetime.now(UTC)
    report = SimpleNamespace(started_at=now - timedelta(hours=1), start_lag_ms=0)
    assert stores.runs.mark_running(stored, report, now, int(now.timestamp()) - 3000)  # type: ignore[arg-type]

    # Then its deadline is at least a minute ahead, never behind the sweep's cursor
    (running,) = runs_of(stack, job["job_id"])
    assert int(running["deadline"]) == int(now.timestamp()) + 60

    # When it ends through its finished report
    _put_report(stack, run, "finished", {"status": "SUCCEEDED", "exit_code": 0})
    _deliver_reports(stack, invoke)

    # Then its in-flight index entry was not removed (no index write at the end)
    (ended,) = runs_of(stack, job["job_id"])
    assert ended["status"] == "SUCCEEDED"
    assert (ended["inflight_shard"], ended["deadline"]) == (
        running["inflight_shard"],
        running["deadline"],
    )

    # And when its deadline passes, the sweep finds it after its cursor, once
    after = datetime.fromtimestamp(int(ended["deadline"]) + 1, UTC)
    found = (job["job_id"], run["key"])
    assert found in stores.runs.overdue(after, stores.schedule.swept())
    assert found not in stores.runs.overdue(after, int(ended["deadline"]))


def test_a_runs_output_is_given_as_text_or_as_a_link(stack, invoke) -> None:
    # Given two finished runs: one whose output fits in its tail, one with an output object
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    _dispatch(stack, invoke)
    (run,) = runs_of(stack, job["job_id"])
    short = {"status": "SUCCEEDED", "exit_code": 0, "output_tail": "all of it\n"}
    _put_report(stack, run, "finished", short | {"output_uploaded": False})
    _deliver_reports(stack, invoke)

    def output_of(run_key: str, user: str = "alice") -> dict[str, Any]:
        path = {"job_id": job["job_id"], "key": run_key}
        return invoke(
            "GetRunOutputFunction",
            api_event(
                "get_run_output",
                user=user,
                path=f"/jobs/{job['job_id']}/runs/{run_key}/output",
                path_parameters=path,
            ),
        )

    # Then the short one answers its text
    response = output_of(run["key"])
    assert response["statusCode"] == 200, response
    assert response["body"] == "all of it\n"
    assert response["headers"]["Content-Type"].startswith("text/plain")
    # And nobody else's
    assert output_of(run["key"], user="bob")["statusCode"] == 404

    # When the output did not fit, the answer is a short-lived link to the object
    table = boto3.resource("dynamodb").Table(stack.physical_names["RunsTable"])
    output_key = f"outputs/{job['job_id']}/{run['key']}/1.log"
    table.update_item(
        Key={"job_id": job["job_id"], "key": run["key"]},
        UpdateExpression="SET output_key = :k",
        ExpressionAttributeValues={":k": output_key},
    )
    response = output_of(run["key"])
    assert response["statusCode"] == 307, response
    location = response["headers"]["Location"]
    assert output_key in location
    assert "Expires=" in location or "X-Amz-Expires=300" in location


def test_run_now_takes_its_own_parameters_and_reason_and_refuses_bad_ones(stack, invoke) -> None:
    job = _create_job(invoke, schedule="0 0 1 1 *", parameters={"region": "eu"})
    path = {"job_id": job["job_id"]}

    def run_now(body: Any) -> dict[str, Any]:
        event = api_event(
            "run_job", path=f"/jobs/{job['job_id']}/run", path_parameters=path, body=body
        )
        return invoke("RunJobFunction", event)

    # When run now is given parameters and a reason
    response = run_now({"parameters": {"region": "us"}, "reason": "backfill for INC-7"})

    # Then the run carries them (the script will see those parameters)
    assert response["statusCode"] == 202, response
    run = body_of(response)
    assert (run["reason"], run["parameters_overridden"]) == ("backfill for INC-7", True)
    (record,) = runs_of(stack, job["job_id"])
    assert json.loads(record["parameters_json"]) == {"region": "us"}

    # And a body it cannot accept is a 400 naming the field, with no run created
    for bad, field in (({"reason": "x" * 300}, "reason"), ({"parameters": [1]}, "parameters")):
        refused = run_now(bad)
        assert refused["statusCode"] == 400, refused
        assert field in {d["field"] for d in body_of(refused)["error"]["details"]}
    assert len(runs_of(stack, job["job_id"])) == 1


def test_a_backfill_queues_the_missing_occurrences_of_a_past_range(stack, invoke) -> None:
    from datetime import UTC, datetime

    job = _create_job(invoke, schedule="*/15 * * * *")
    path = {"job_id": job["job_id"]}
    end = datetime.now(UTC) - timedelta(minutes=1)
    window = {"from": (end - timedelta(hours=1)).isoformat(), "to": end.isoformat()}

    def backfill(body: Any) -> dict[str, Any]:
        event = load_event("backfill_job")
        event["rawPath"] = event["requestContext"]["http"]["path"] = (
            f"/jobs/{job['job_id']}/backfill"
        )
        event["pathParameters"] = path
        event["body"] = json.dumps(body)
        return invoke("BackfillJobFunction", event)

    # A dry run lists the range's four occurrences and creates nothing
    dry = backfill(window | {"dry_run": True})
    assert dry["statusCode"] == 200, dry
    assert [o["result"] for o in body_of(dry)["occurrences"]] == ["would_create"] * 4
    assert runs_of(stack, job["job_id"]) == []

    # The backfill queues them as BACKFILL runs, in one pack
    done = body_of(backfill(window))
    assert [o["result"] for o in done["occurrences"]] == ["created"] * 4
    records = runs_of(stack, job["job_id"])
    assert {(r["trigger"], r["status"]) for r in records} == {("BACKFILL", "QUEUED")}
    (message,) = _receive(stack, "DispatchQueue")
    assert len(json.loads(message["Body"])["runs"]) == 4

    # A range into the future is a 400 naming `to`
    future = backfill({"from": window["from"], "to": (end + timedelta(hours=1)).isoformat()})
    assert future["statusCode"] == 400
    assert {d["field"] for d in body_of(future)["error"]["details"]} == {"to"}


def test_a_run_queued_before_its_job_was_paused_is_skipped_not_started(stack, invoke) -> None:
    # Given a run now, queued, and then its job paused (and a run now of the paused job refused)
    job = _create_job(invoke, schedule="0 0 1 1 *")
    path = {"path": f"/jobs/{job['job_id']}/run", "path_parameters": {"job_id": job["job_id"]}}
    assert invoke("RunJobFunction", api_event("run_job", **path))["statusCode"] == 202
    pause = {"path": f"/jobs/{job['job_id']}/pause", "path_parameters": {"job_id": job["job_id"]}}
    assert invoke("PauseJobFunction", api_event("pause_job", **pause))["statusCode"] == 200
    refused = invoke("RunJobFunction", api_event("run_job", **path))
    assert (refused["statusCode"], body_of(refused)["error"]["code"]) == (409, "job_paused")

    # When the executor receives the queued run
    messages = _receive(stack, "DispatchQueue")
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical_names['DispatchQueue']}"
    assert invoke("ExecutorFunction", sqs_event(messages, arn)) == {"batchItemFailures": []}

    # Then no task starts, and the run is SKIPPED, saying why
    tasks = boto3.client("ecs").list_tasks(cluster=stack.physical_names["RunnerCluster"])
    assert tasks["taskArns"] == []
    (run,) = runs_of(stack, job["job_id"])
    assert run["status"] == "SKIPPED"
    assert run["error"] == "skipped: the job was paused before this run started"


def test_a_list_shows_the_next_run_the_watcher_moved_though_its_index_does_not_project_it(
    stack, invoke
) -> None:
    # Given an every-minute job whose next run the watcher has moved on (a write that, with
    # next_run_utc no longer projected in the by_owner index, leaves the index entry alone)
    job = _create_job(invoke)
    invoke("WatcherFunction", load_event("watcher"))
    jobs_table = boto3.resource("dynamodb").Table(stack.physical_names["JobsTable"])
    stored = jobs_table.get_item(Key={"pk": f"JOB#{job['job_id']}"})["Item"]
    moved = datetime.fromisoformat(str(stored["next_run_utc"]))
    assert moved > datetime.fromisoformat(job["next_run_at"])

    # When the owner lists their jobs, with and without a next-run filter
    def listed(**query: str) -> list[dict[str, Any]]:
        event = api_event("list_jobs", query=query)
        return body_of(invoke("ListJobsFunction", event))["items"]

    # Then the list shows the job's next run as the table has it, and filters on that
    (shown,) = listed()
    assert datetime.fromisoformat(shown["next_run_at"]) == moved
    assert [j["job_id"] for j in listed(next_run_after=job["next_run_at"])] == [job["job_id"]]
    assert listed(next_run_before=job["next_run_at"]) == []
