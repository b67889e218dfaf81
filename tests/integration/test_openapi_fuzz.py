"""The API against its own OpenAPI document, fuzzed by schemathesis: requests generated from
the spec (valid and invalid ones) go through the local stack's API Gateway (routes, JWT
authorizer, payload 2.0 events) into the handlers, in-process against moto; every answer must
be documented, conform to its schema, and none may be a 5xx.

Bounded (a fixed number of examples per route, derandomized) so that it runs in `make test`
in well under a minute. tests/e2e/test_openapi_fuzz_live.py runs schemathesis' CLI against a
running stack; both share tests/openapi_fuzzing.py (our formats' values, the refusals a
spec-valid request may get)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import boto3
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies
from moto import mock_aws
from openapi_fuzzing import refusal_of_valid_input  # also: values for our formats
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from devstack import resources
from devstack.auth import AUDIENCE, JwtAuthorizer, KeyPair
from devstack.gateway import ApiGateway
from devstack.stack import Functions
from devstack.template import local_stack
from scheduler import times, wiring
from scheduler.api.docs import openapi_document

ISSUER = "https://issuer.test"
EXAMPLES_PER_OPERATION = 25
SCRIPT = "print('fuzzed')\n"


class Api:
    """The local API Gateway as a WSGI application, for schemathesis' WSGI transport."""

    def __init__(self, gateway: ApiGateway) -> None:
        self.gateway = gateway

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # The raw target, as API Gateway sees it (PATH_INFO is already percent-decoded)
        target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ["PATH_INFO"]
        if "?" not in target and environ.get("QUERY_STRING"):
            target = f"{target}?{environ['QUERY_STRING']}"
        headers = [
            (name[5:].replace("_", "-").lower(), str(value))
            for name, value in environ.items()
            if name.startswith("HTTP_")
        ]
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers.append((name.replace("_", "-").lower(), str(environ[name])))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        reply, _ = self.gateway.handle(
            environ["REQUEST_METHOD"], target, headers, body, "127.0.0.1", "HTTP/1.1"
        )
        status = f"{reply.status} {HTTPStatus(reply.status).phrase}"
        start_response(status, list(reply.headers.items()))
        return [reply.body]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str]]:
    """The API over a fresh stack in moto, and a token of alice's: (app, token)."""
    environment = dict(os.environ)
    os.environ.update(  # as tests/conftest.py sets them for each test (this fixture outlives one)
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_METRICS_NAMESPACE="Scheduler",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    with mock_aws():
        ec2 = boto3.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="runner", Description="runner", VpcId=vpc)
        stack = local_stack(
            "fz",
            {
                "JwtIssuer": ISSUER,
                "JwtAudience": AUDIENCE,
                "RunnerSubnets": subnet,
                "RunnerSecurityGroups": group["GroupId"],
                # One owner sends every request: quotas out of its way (tests/*/test_quotas.py
                # hold them; a 429 is documented on the routes that can answer it).
                "QuotaJobsPerOwner": "1000000",
                "QuotaRunsPerMinute": "1000000",
                "QuotaRunNowPerMinute": "1000000",
            },
            {"PageTokenSecret": "fuzz-page-token-secret"},
        )
        resources.create_all(stack)
        wiring.use_clock(times.utc_now)
        keys = KeyPair.load_or_create(Path(tmp_path_factory.mktemp("jwt")))
        authorizer = JwtAuthorizer(issuer=ISSUER, audiences=[AUDIENCE], jwks=keys.jwks())
        gateway = ApiGateway(
            stack, Functions(stack), authorizer=authorizer, host="127.0.0.1", port=0
        )
        token = keys.mint("alice", issuer=ISSUER)
        yield Api(gateway), token
        wiring.use_clock(times.utc_now)
    os.environ.clear()
    os.environ.update(environment)


@pytest.fixture
def target(api: tuple[Api, str]) -> dict[str, str]:
    """A job of alice's and a run of it, for half the generated requests to aim at (random ids
    only ever meet a 404): {"job_id": ..., "key": ...}."""
    app, token = api
    headers = [("authorization", f"Bearer {token}"), ("content-type", "application/json")]
    body = {"name": f"fuzz-{uuid.uuid4().hex[:8]}", "schedule": "0 3 * * *", "script": SCRIPT}
    reply, _ = app.gateway.handle(
        "POST", "/jobs", headers, json.dumps(body).encode(), "127.0.0.1", "HTTP/1.1"
    )
    assert reply.status == 201, reply.body
    job_id = json.loads(reply.body)["job_id"]
    reply, _ = app.gateway.handle(
        "POST", f"/jobs/{job_id}/run", headers[:1], b"", "127.0.0.1", "HTTP/1.1"
    )
    assert reply.status == 202, reply.body
    return {"job_id": job_id, "key": json.loads(reply.body)["key"]}


# The document the docs function serves (checked below to be the same), loaded once: each
# operation is a test of its own, in both of schemathesis' modes.
SCHEMA = schemathesis.openapi.from_dict(json.loads(openapi_document()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def test_the_fuzzed_document_is_the_one_the_api_serves(api: tuple[Api, str]) -> None:
    app, _ = api
    served = schemathesis.openapi.from_wsgi("/openapi.json", app)
    assert served.raw_schema == SCHEMA.raw_schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_no_answer_is_a_5xx_or_off_the_spec(
    operation: Any, mode: GenerationMode, api: tuple[Api, str], target: dict[str, str]
) -> None:
    app, token = api
    SCHEMA.app = operation.app = app  # for checks that send requests of their own

    @given(case=operation.as_strategy(generation_mode=mode), aim=strategies.booleans())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any, aim: bool) -> None:
        if aim and mode is GenerationMode.POSITIVE and case.path_parameters:
            case.path_parameters.update(
                {name: value for name, value in target.items() if name in case.path_parameters}
            )
        response = case.call_and_validate(
            app=app,
            headers={"Authorization": f"Bearer {token}"},
            # Instead, the check both fuzz tests share (tests/openapi_fuzzing.py), below.
            excluded_checks=[positive_data_acceptance],
        )
        if mode is GenerationMode.POSITIVE:
            problem = refusal_of_valid_input(response.status_code, response.content)
            assert problem is None, problem

    check()
