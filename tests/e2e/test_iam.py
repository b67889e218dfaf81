"""IAM enforced in the local stack (local/devstack/iam.py): each function calls moto as a role
with only its policies from template.yaml, and a grant taken away fails the call that needs it.

The session's stack runs with enforcement on (the default); a second stack here runs with one
action taken out of one function's policies (`--iam-revoke`), as a template missing it would."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from devstack import iam
from e2e.conftest import PIPELINE_PACE, LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

SCRIPT = "print('hi')\n"
REVOKED = "CreateJobFunction=s3:PutObject"  # the script's upload, scripts/<owner>/<sha>.py


def create(stack: LocalStack) -> requests.Response:
    body = {"name": f"iam-{uuid.uuid4().hex[:8]}", "schedule": "*/5 * * * *", "script": SCRIPT}
    return requests.post(f"{stack.url}/jobs", json=body, headers=stack.headers("alice"), timeout=30)


def client(stack: LocalStack, service: str, keys: iam.Keys | None) -> Any:
    """A client of the stack's moto with these keys (None: the fake keys of old)."""
    return boto3.session.Session(
        aws_access_key_id=keys.access_key_id if keys else "testing",
        aws_secret_access_key=keys.secret_access_key if keys else "testing",
        aws_session_token=keys.session_token if keys else None,
        region_name="us-east-1",
    ).client(service, endpoint_url=stack.state()["aws_endpoint"])  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def revoked_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("devstack-iam-revoked")
    stack = start_stack(state_dir, PIPELINE_PACE, "--iam-revoke", REVOKED)
    yield stack
    assert stop_stack(stack, signal.SIGINT) == 0, stack.log()


def test_a_function_missing_a_grant_fails_the_route_that_needs_it(
    revoked_stack: LocalStack,
) -> None:
    answer = create(revoked_stack)

    assert answer.status_code == 500, answer.text
    assert answer.json()["error"]["code"] == "internal_error"
    log = revoked_stack.log()
    assert f"revoked {REVOKED}" in log
    assert "AccessDenied" in log, log[-4000:]
    # The other functions keep their grants: listing (another role) still answers.
    listed = requests.get(
        f"{revoked_stack.url}/jobs", headers=revoked_stack.headers("alice"), timeout=30
    )
    assert listed.status_code == 200, listed.text


def test_the_same_route_succeeds_with_the_templates_grants(local_stack: LocalStack) -> None:
    assert local_stack.state()["iam"] is True
    answer = create(local_stack)
    assert answer.status_code == 201, answer.text


def test_moto_refuses_keys_it_does_not_know_and_a_role_past_its_policies(
    local_stack: LocalStack,
) -> None:
    principals = iam.load_credentials(local_stack.state_dir)
    assert principals is not None
    with pytest.raises(ClientError, match="InvalidClientTokenId"):
        client(local_stack, "dynamodb", None).list_tables()
    tables = client(local_stack, "dynamodb", principals.admin).list_tables()["TableNames"]
    jobs_table = next(name for name in tables if name.endswith("-JobsTable"))
    get_job = principals.functions["GetJobFunction"]
    # get_job may read a job, never write one.
    reader = client(local_stack, "dynamodb", get_job)
    reader.get_item(TableName=jobs_table, Key={"pk": {"S": "nothing"}})
    with pytest.raises(ClientError, match="AccessDenied"):
        reader.put_item(TableName=jobs_table, Item={"pk": {"S": "forged"}})
    # S3 grants are checked down to the key prefix: get_job reads no reports.
    bucket = next(
        b["Name"]
        for b in client(local_stack, "s3", principals.admin).list_buckets()["Buckets"]
        if b["Name"].endswith("scriptsbucket")
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        client(local_stack, "s3", get_job).put_object(Bucket=bucket, Key="reports/x", Body=b"")
