"""The page-token key lives in Secrets Manager only: the list functions get the secret's id in
their environment, read the key at cold start (powertools' parameters, cached) and read it
again after its max age, so that a rotated key takes effect without a redeploy."""

from __future__ import annotations

from typing import Any

import boto3

from devstack.template import Stack
from integration.conftest import PAGE_TOKEN_SECRET, Invoke, api_event, body_of

SCRIPT = "print('hi')\n"


def create(invoke: Invoke, name: str) -> None:
    body = {"name": name, "schedule": "0 3 * * *", "script": SCRIPT}
    event = api_event("create_job", body=body)
    event["headers"].pop("idempotency-key", None)
    assert invoke("CreateJobFunction", event)["statusCode"] == 201


def list_jobs(invoke: Invoke, **query: str) -> dict[str, Any]:
    answer: dict[str, Any] = invoke("ListJobsFunction", api_event("list_jobs", query=query))
    return answer


def test_no_function_has_the_key_in_its_environment(stack: Stack) -> None:
    for function in stack.functions:
        assert PAGE_TOKEN_SECRET not in stack.environment(function).values(), function
    secret = stack.physical_names["PageTokenSecret"]
    for function in ("ListJobsFunction", "ListRunsFunction"):
        assert stack.environment(function)["PAGE_TOKEN_SECRET_ID"] == secret


def test_a_rotated_key_is_read_again_and_old_tokens_are_refused(
    stack: Stack, invoke: Invoke
) -> None:
    # Given a list function that re-reads the key every time (max age 0), and a token from it
    stack.overrides = {"ListJobsFunction": {"PAGE_TOKEN_SECRET_MAX_AGE": "0"}}
    for name in ("a", "b", "c"):
        create(invoke, name)
    first = body_of(list_jobs(invoke, limit="1"))
    token = first["next_token"]
    assert body_of(list_jobs(invoke, limit="1", next_token=token))["items"]

    # When the key is rotated in Secrets Manager
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.physical_names["PageTokenSecret"],
        SecretString="a-new-page-token-key-after-rotation",
    )

    # Then the old token is refused, and new ones work
    refused = list_jobs(invoke, limit="1", next_token=token)
    assert (refused["statusCode"], body_of(refused)["error"]["code"]) == (
        400,
        "invalid_page_token",
    )
    fresh = body_of(list_jobs(invoke, limit="1"))["next_token"]
    assert list_jobs(invoke, limit="1", next_token=fresh)["statusCode"] == 200
