"""Handlers invoked in-process with events shaped like events/*.json, against moto, with the
tables, buckets and queues created from template.yaml."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack import resources
from devstack.lambda_runtime import context_for, load_handler
from devstack.template import Stack, local_stack
from scheduler import times, wiring
from scheduler.config import JobApiSettings
from scheduler.runs.run_repository import (
    dispatch_record_key,
    undispatched_claim,
    with_dispatch_record,
)

EVENTS = Path(__file__).resolve().parents[2] / "events"
PAGE_TOKEN_SECRET = "integration-test-page-token-secret"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    with mock_aws():
        # The runner tasks' network, which a deployment gets as parameters.
        ec2 = boto3.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="runner", Description="runner", VpcId=vpc)
        built = local_stack(
            "it",
            {
                "JwtIssuer": "https://issuer.test",
                "JwtAudience": "scheduler",
                "RunnerSubnets": subnet,
                "RunnerSecurityGroups": group["GroupId"],
            },
            {"PageTokenSecret": PAGE_TOKEN_SECRET},
        )
        resources.create_all(built)
        wiring.use_clock(times.utc_now)
        yield built
        wiring.use_clock(times.utc_now)


Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


@pytest.fixture
def invoke(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """invoke("CreateJobFunction", event) -> the handler's response, with that function's
    environment exactly as the template sets it."""
    loaded: dict[str, Any] = {}

    def call(function: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in stack.environment(function).items():
            monkeypatch.setenv(key, value)
        if function not in loaded:
            loaded[function] = load_handler(stack, function)
        result: dict[str, Any] = loaded[function](event, context_for(stack, function))
        return result

    return call


def api_event(
    name: str,
    *,
    user: str | None = "alice",
    body: Any = None,
    raw_body: str | None = None,
    path: str | None = None,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """events/<name>.json with the given caller, body, path and query."""
    event: dict[str, Any] = copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))
    if user is None:
        event["requestContext"].pop("authorizer", None)
    else:
        event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = user
    if body is not None:
        event["body"] = json.dumps(body)
    if raw_body is not None:
        event["body"] = raw_body
    if event.get("body"):  # as a client sends JSON (a test may change or remove it)
        event["headers"].setdefault("content-type", "application/json")
    if path is not None:
        event["rawPath"] = path
        event["requestContext"]["http"]["path"] = path
    if path_parameters is not None:
        event["pathParameters"] = path_parameters
    if query is not None:
        event["queryStringParameters"] = query or None
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    if headers:
        event["headers"].update(headers)
    return event


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def load_event(name: str) -> dict[str, Any]:
    """events/<name>.json as it is."""
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


def runs_of(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    """The job's run records from the runs table, as the pipeline reads them: a run claimed by
    an executor that recorded its pack's dispatch is DISPATCHED in that task (the item itself
    still says DISPATCHING; see `stored_runs_of`)."""
    table = boto3.resource("dynamodb").Table(stack.physical_names["RunsTable"])
    items = []
    for item in stored_runs_of(stack, job_id):
        claim = undispatched_claim(item)
        record = table.get_item(Key=dispatch_record_key(claim)).get("Item") if claim else None
        items.append(with_dispatch_record(item, record))
    return items


def stored_runs_of(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    """The job's run items, straight from the runs table."""
    table = boto3.resource("dynamodb").Table(stack.physical_names["RunsTable"])
    items: list[dict[str, Any]] = table.query(
        KeyConditionExpression="job_id = :j", ExpressionAttributeValues={":j": job_id}
    )["Items"]
    return items


def use_function_environment(stack: Stack, function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment of `function`, so that its services can be built here."""
    for key, value in stack.environment(function).items():
        monkeypatch.setenv(key, value)


def stores_of(stack: Stack, function: str, monkeypatch: pytest.MonkeyPatch) -> wiring.Stores:
    """The repositories `function` builds, to set up or inspect state as it sees it."""
    use_function_environment(stack, function, monkeypatch)
    return wiring.Stores(JobApiSettings())  # type: ignore[call-arg]


@pytest.fixture
def one_run_per_tick(stack: Stack) -> None:
    """For tests that follow a run through the watcher: create takes nothing early (its lead is
    0 s), and a tick's window (60 s ahead) holds exactly one occurrence of an every-minute job.
    The early path has tests of its own (test_on_time.py)."""
    stack.overrides = {function: {"LOOKAHEAD_SECONDS": "60"} for function in stack.functions}
    stack.overrides["CreateJobFunction"] = {"LOOKAHEAD_SECONDS": "0"}


def sqs_event(messages: list[dict[str, Any]], arn: str) -> dict[str, Any]:
    """The executor's SQS event (events/executor.json's shape) for received `messages`."""
    template = load_event("executor")["Records"][0]
    records = []
    for message in messages:
        record = dict(template)
        record |= {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "eventSourceARN": arn,
        }
        group = message.get("Attributes", {}).get("MessageGroupId")
        if group is not None:  # as Lambda's event carries the FIFO message's group
            record["attributes"] = record["attributes"] | {"MessageGroupId": group}
        records.append(record)
    return {"Records": records}
