"""The job API over real HTTP, through the local stack's gateway, authorizer and moto."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack import auth
from devstack.gateway import build_event
from devstack.template import Route
from e2e.conftest import ROOT, LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

SCRIPT = "import json, os\nprint(json.loads(os.environ['JOB_PARAMETERS']))\n"
TIMEOUT = 30


def unique(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(
    stack: LocalStack, user: str = "alice", headers: dict[str, str] | None = None, **fields: Any
) -> requests.Response:
    body = {"name": unique(), "schedule": "*/5 * * * *", "script": SCRIPT} | fields
    return requests.post(
        f"{stack.url}/jobs",
        json=body,
        headers=stack.headers(user, **(headers or {})),
        timeout=TIMEOUT,
    )


def list_jobs(stack: LocalStack, user: str = "alice", **query: Any) -> requests.Response:
    return requests.get(
        f"{stack.url}/jobs", params=query, headers=stack.headers(user), timeout=TIMEOUT
    )


def all_jobs(stack: LocalStack, user: str = "alice", **query: Any) -> list[dict[str, Any]]:
    """Every job the filters match, following next_token to the last page."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page_query = dict(query, limit=query.get("limit", 100))
        if token:
            page_query["next_token"] = token
        response = list_jobs(stack, user, **page_query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        token = page.get("next_token")
        if not token:
            return items


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


def iso(moment: datetime) -> str:
    return moment.isoformat()


# -- create, get, list ------------------------------------------------------------------------


def test_create_then_get(local_stack: LocalStack) -> None:
    before = datetime.now(UTC)
    name = unique("report")
    response = create(
        local_stack,
        name=name,
        schedule="30 2 * * *",
        timezone="America/New_York",
        parameters={"region": "eu", "n": 3},
        description="nightly report",
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["Location"] == f"/jobs/{job['job_id']}"
    assert response.headers["content-type"].startswith("application/json")
    assert job["name"] == name
    assert job["schedule"] == "30 2 * * *"
    assert job["timezone"] == "America/New_York"
    assert job["parameters"] == {"region": "eu", "n": 3}
    assert job["description"] == "nightly report"
    assert job["status"] == "ACTIVE"
    assert job["user_id"] == "alice"
    assert job["script_sha256"] == hashlib.sha256(SCRIPT.encode()).hexdigest()
    next_run = datetime.fromisoformat(job["next_run_at"])
    offset = next_run.utcoffset()
    assert offset in (timedelta(hours=-5), timedelta(hours=-4)), job["next_run_at"]
    assert (next_run.hour, next_run.minute) == (2, 30)
    assert before < next_run <= before + timedelta(days=1, hours=1)
    created = datetime.fromisoformat(job["created_at"])
    assert before - timedelta(seconds=5) <= created <= datetime.now(UTC) + timedelta(seconds=5)
    assert job["updated_at"] == job["created_at"]

    got = requests.get(
        f"{local_stack.url}/jobs/{job['job_id']}",
        headers=local_stack.headers("alice"),
        timeout=TIMEOUT,
    )
    assert got.status_code == 200, got.text
    assert got.json() == job


def test_list_filters_and_pagination(local_stack: LocalStack) -> None:
    prefix = unique("filters")
    # Oldest first: 0, 2, 4 run every minute; 1, 3 once a year.
    schedules = ["* * * * *", "0 0 1 1 *", "* * * * *", "0 0 1 1 *", "* * * * *"]
    jobs = []
    for index, schedule in enumerate(schedules):
        response = create(local_stack, name=f"{prefix}-{index}", schedule=schedule)
        assert response.status_code == 201, response.text
        jobs.append(response.json())
    newest_first = [job["name"] for job in reversed(jobs)]

    assert names(all_jobs(local_stack, name=prefix)) == newest_first
    assert names(all_jobs(local_stack, name=f"{prefix}-3")) == [f"{prefix}-3"]
    assert names(all_jobs(local_stack, name=prefix, status="ACTIVE")) == newest_first
    assert all_jobs(local_stack, name=prefix, status="PAUSED") == []

    after_1, before_3 = jobs[1]["created_at"], jobs[3]["created_at"]
    assert names(all_jobs(local_stack, name=prefix, created_after=after_1)) == newest_first[:3]
    assert names(all_jobs(local_stack, name=prefix, created_before=before_3)) == newest_first[2:]
    assert names(
        all_jobs(local_stack, name=prefix, created_after=after_1, created_before=before_3)
    ) == [f"{prefix}-2"]

    now = datetime.now(UTC)
    soon = all_jobs(local_stack, name=prefix, next_run_before=iso(now + timedelta(minutes=5)))
    assert names(soon) == [f"{prefix}-4", f"{prefix}-2", f"{prefix}-0"]
    late = all_jobs(local_stack, name=prefix, next_run_after=iso(now + timedelta(days=1)))
    assert names(late) == [f"{prefix}-3", f"{prefix}-1"]

    # Pages of two, following next_token: every job exactly once, newest first.
    pages: list[list[str]] = []
    token = None
    while True:
        query: dict[str, Any] = {"name": prefix, "limit": 2}
        if token:
            query["next_token"] = token
        response = list_jobs(local_stack, **query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(names(page["items"]))
        token = page.get("next_token")
        if not token:
            break
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]

    # A token only continues the query it came from.
    first = list_jobs(local_stack, name=prefix, limit=2).json()
    other = list_jobs(local_stack, name=f"{prefix}-1", limit=2, next_token=first["next_token"])
    assert other.status_code == 400, other.text
    assert "next_token" in other.json()["error"]["message"]
    as_bob = list_jobs(local_stack, "bob", name=prefix, limit=2, next_token=first["next_token"])
    assert as_bob.status_code == 400, as_bob.text


def test_another_user_sees_nothing(local_stack: LocalStack) -> None:
    job = create(local_stack).json()
    bob = local_stack.headers("bob")
    response = requests.get(f"{local_stack.url}/jobs/{job['job_id']}", headers=bob, timeout=TIMEOUT)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "job_not_found"
    listed = requests.get(f"{local_stack.url}/jobs", headers=bob, timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []


def test_duplicate_name_conflicts(local_stack: LocalStack) -> None:
    name = unique("dup")
    assert create(local_stack, name=name).status_code == 201
    again = create(local_stack, name=name, schedule="0 * * * *")
    assert again.status_code == 409, again.text
    assert name in again.json()["error"]["message"]
    assert len(all_jobs(local_stack, name=name)) == 1
    # Names are per owner: bob may use it.
    assert create(local_stack, "bob", name=name).status_code == 201


def test_idempotency_key_returns_the_first_job(local_stack: LocalStack) -> None:
    name = unique("idem")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = create(local_stack, headers=key, name=name)
    second = create(local_stack, headers=key, name=name)
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert second.json()["job_id"] == first.json()["job_id"]
    assert len(all_jobs(local_stack, name=name)) == 1
    # The same key with another body is refused rather than silently answered.
    other = create(local_stack, headers=key, name=name, description="changed")
    assert 400 <= other.status_code < 500, other.text
    assert len(all_jobs(local_stack, name=name)) == 1


# -- rejected requests write nothing -----------------------------------------------------------


def _post(stack: LocalStack, body: Any, headers: dict[str, str] | None = None) -> Any:
    if headers is None:
        headers = stack.headers("alice")
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(
        f"{stack.url}/jobs",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=TIMEOUT,
    )


def _job(**fields: Any) -> dict[str, Any]:
    return {"name": unique("bad"), "schedule": "*/5 * * * *", "script": SCRIPT} | fields


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _forged_signature(stack: LocalStack) -> dict[str, str]:
    """A token with the stack's key id, signed by another key."""
    other = auth.KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    token = other.mint("alice", issuer=stack.issuer)
    _header, payload, signature = token.split(".")
    real_kid = auth.KeyPair.load_or_create(stack.state_dir).kid
    forged_header = base64.urlsafe_b64encode(
        json.dumps({"alg": "RS256", "kid": real_kid, "typ": "JWT"}).encode()
    )
    return _bearer(f"{forged_header.decode().rstrip('=')}.{payload}.{signature}")


REJECTED = {
    "invalid cron": (lambda s: _post(s, _job(schedule="61 * * * *")), 400, "schedule"),
    "unknown time zone": (lambda s: _post(s, _job(timezone="Mars/Olympus")), 400, "timezone"),
    "script syntax error": (lambda s: _post(s, _job(script="def broken(:\n")), 400, "compile"),
    "300 KB script": (
        lambda s: _post(s, _job(script="x = 1\n" * 50_000)),
        400,
        "at most",
    ),
    "unknown body field": (lambda s: _post(s, _job(owner="mallory")), 400, "owner"),
    "malformed JSON": (lambda s: _post(s, '{"name": "x", "schedule": '), 400, "json"),
    "missing token": (lambda s: _post(s, _job(), headers={}), 401, "missing"),
    "expired token": (
        lambda s: _post(s, _job(), _bearer(s.token("alice", lifetime_seconds=-60))),
        401,
        "expired",
    ),
    "bad signature": (lambda s: _post(s, _job(), _forged_signature(s)), 401, "signature"),
    "wrong issuer": (
        lambda s: _post(s, _job(), _bearer(s.token("alice", issuer="https://evil.example"))),
        401,
        "issuer",
    ),
    "wrong audience": (
        lambda s: _post(s, _job(), _bearer(s.token("alice", audience="another-app"))),
        401,
        "audience",
    ),
    "not a JWT": (lambda s: _post(s, _job(), _bearer("not-a-token")), 401, "well-formed"),
    "forged next_token": (
        lambda s: requests.get(
            f"{s.url}/jobs",
            params={"next_token": "eyJmb3JnZWQiOnRydWV9"},
            headers=s.headers("alice"),
            timeout=TIMEOUT,
        ),
        400,
        "next_token",
    ),
    "unknown query parameter": (
        lambda s: requests.get(
            f"{s.url}/jobs", params={"owner": "bob"}, headers=s.headers("alice"), timeout=TIMEOUT
        ),
        400,
        "owner",
    ),
    "limit out of range": (lambda s: list_jobs(s, limit=1000), 400, "limit"),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_request_writes_nothing(local_stack: LocalStack, case: str) -> None:
    send, status, hint = REJECTED[case]
    before = len(all_jobs(local_stack))
    response = send(local_stack)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json() == {"message": "Unauthorized"}
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer scope="" error="invalid_token" error_description="')
        assert hint in challenge.lower(), challenge
    else:
        error = response.json()["error"]
        assert hint in error["message"].lower() or hint in json.dumps(error).lower(), error
    assert len(all_jobs(local_stack)) == before


# -- the gateway itself -----------------------------------------------------------------------


def test_openapi_and_docs_need_no_token(local_stack: LocalStack) -> None:
    document = requests.get(f"{local_stack.url}/openapi.json", timeout=TIMEOUT)
    assert document.status_code == 200, document.text
    assert document.headers["content-type"].startswith("application/json")
    paths = document.json()["paths"]
    assert {"post", "get"} <= set(paths["/jobs"])
    assert "get" in paths["/jobs/{job_id}"]

    docs = requests.get(f"{local_stack.url}/docs", timeout=TIMEOUT)
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert 'id="swagger-ui"' in docs.text


def test_unknown_route_is_404_like_api_gateway(local_stack: LocalStack) -> None:
    for method, path in (("GET", "/nothing"), ("DELETE", "/jobs"), ("GET", "/jobs/a/b")):
        response = requests.request(method, f"{local_stack.url}{path}", timeout=TIMEOUT)
        assert response.status_code == 404, (method, path)
        assert response.json() == {"message": "Not Found"}


def test_token_command_prints_a_working_token(local_stack: LocalStack) -> None:
    token = local_stack.token_from_cli("carol")
    response = requests.get(f"{local_stack.url}/jobs", headers=_bearer(token), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
    created = requests.post(
        f"{local_stack.url}/jobs",
        json=_job(),
        headers=_bearer(token),
        timeout=TIMEOUT,
    )
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == "carol"


def test_issuer_publishes_its_keys(local_stack: LocalStack) -> None:
    discovery = requests.get(
        f"{local_stack.issuer}/.well-known/openid-configuration", timeout=TIMEOUT
    ).json()
    assert discovery["issuer"] == local_stack.issuer
    keys = requests.get(discovery["jwks_uri"], timeout=TIMEOUT).json()["keys"]
    assert [key["kid"] for key in keys] == [auth.KeyPair.load_or_create(local_stack.state_dir).kid]


def test_gateway_event_has_the_sample_event_shape() -> None:
    """build_event gives the keys of events/create_job.json (AWS's payload format 2.0)."""
    sample = json.loads((ROOT / "events" / "create_job.json").read_text())
    keys = auth.KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    authorizer = auth.JwtAuthorizer("https://issuer.test", ["scheduler"], keys.jwks())
    claims = authorizer.authorize(
        "Bearer " + keys.mint("alice", issuer="https://issuer.test", extra_claims={"n": [1, 2]})
    )
    assert all(isinstance(value, str) for value in claims.values())
    assert claims["n"] == "[1 2]"
    event = build_event(
        route=Route("POST", "/jobs", "CreateJobFunction", True),
        path_parameters={},
        method="POST",
        target="/jobs?a=1&a=2&b=x%20y",
        headers=[
            ("Host", "127.0.0.1:3000"),
            ("Content-Type", "application/json"),
            ("X-Multi", "1"),
            ("X-Multi", "2"),
            ("Cookie", "c1=v1; c2=v2"),
        ],
        body=b'{"name": "x"}',
        source_ip="127.0.0.1",
        protocol="HTTP/1.1",
        claims=claims,
        request_id="r-1",
        now=datetime(2026, 11, 27, 17, 0, tzinfo=UTC),
    )
    assert set(sample) <= set(event)
    assert set(sample["requestContext"]) <= set(event["requestContext"])
    assert set(sample["requestContext"]["http"]) == set(event["requestContext"]["http"])
    assert event["requestContext"]["time"] == sample["requestContext"]["time"]
    assert event["requestContext"]["timeEpoch"] == sample["requestContext"]["timeEpoch"]
    assert event["routeKey"] == "POST /jobs"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["headers"]["x-multi"] == "1,2"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "alice"
    assert event["body"] == '{"name": "x"}'
    assert event["isBase64Encoded"] is False


def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    """A second, short-lived stack: SIGTERM (what a supervisor sends) stops it and its moto."""
    stack = start_stack(tmp_path / "state")
    moto_pid = stack.state()["moto_pid"]
    assert stop_stack(stack, signal.SIGTERM) == 0
    assert moto_pid
    assert "stopped" in stack.log()
