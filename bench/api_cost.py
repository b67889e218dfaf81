"""Own cost per API request: the get, list and create handlers invoked in-process (as the local
stack and Lambda do) with events shaped like events/*.json, against moto server.

Per request: our CPU time (time.thread_time of the invoking thread: waiting on moto's answer
is not CPU, so AWS wait is excluded by construction), wall time (moto-bound, for reference),
and the AWS calls made, counted with botocore event hooks.
"""

from __future__ import annotations

import copy
import json
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from bench.common import (
    ROOT,
    MeteredFunctions,
    Mode,
    build_stack,
    fmt,
    function_logs,
    mean_item_sizes,
    meter_for,
    moto_server,
    say,
    summary,
    table,
    write_result,
)

EVENTS = ROOT / "events"
SCRIPT = "import json, os\nprint(json.loads(os.environ['JOB_PARAMETERS']))\n"
FAR_FUTURE = "0 0 1 1 *"


def api_event(
    name: str,
    user: str,
    *,
    body: Any = None,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = user
    event["headers"].pop("idempotency-key", None)
    if idempotency_key:
        event["headers"]["idempotency-key"] = idempotency_key
    if body is not None:
        event["body"] = json.dumps(body)
    if path_parameters is not None:
        event["pathParameters"] = path_parameters
        event["rawPath"] = event["requestContext"]["http"]["path"] = "/jobs/" + "/".join(
            path_parameters.values()
        )
    if query is not None:
        event["queryStringParameters"] = query or None
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    return event


def job_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": FAR_FUTURE,
        "timezone": "Europe/Paris",
        "parameters": {"region": "eu", "size": 3},
        "script": SCRIPT,
    }


def run(mode: Mode) -> dict[str, Any]:
    iterations = mode.pick(200, 25)
    users = [f"user{i:03d}" for i in range(mode.pick(12, 3))]
    jobs_per_user = mode.pick(25, 21)
    work = mode.results_dir / "work"
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    with moto_server(work / "api_cost-moto.log"), function_logs(work / "api_cost-functions.log"):
        stack = build_stack("cost", shards=16)
        meter = meter_for(stack)
        meter.install()
        functions = MeteredFunctions(stack)
        functions.preload("CreateJobFunction", "GetJobFunction", "ListJobsFunction")

        say(f"api_cost: seeding {len(users) * jobs_per_user} jobs through the create handler")
        owned: dict[str, list[str]] = {user: [] for user in users}
        for user in users:
            for _ in range(jobs_per_user):
                event = api_event("create_job", user, body=job_body(f"seed-{uuid.uuid4().hex}"))
                response = functions.invoke("CreateJobFunction", event)
                owned[user].append(json.loads(response["body"])["job_id"])

        def get(i: int) -> tuple[str, dict[str, Any]]:
            user = users[i % len(users)]
            job = owned[user][i % jobs_per_user]
            return "GetJobFunction", api_event(
                "get_job", user, path_parameters={"job_id": job}, query={}
            )

        def list_jobs(i: int) -> tuple[str, dict[str, Any]]:
            return "ListJobsFunction", api_event("list_jobs", users[i % len(users)], query={})

        def create(i: int) -> tuple[str, dict[str, Any]]:
            body = job_body(f"cost-{uuid.uuid4().hex}")
            return "CreateJobFunction", api_event("create_job", users[i % len(users)], body=body)

        def create_keyed(i: int) -> tuple[str, dict[str, Any]]:
            body = job_body(f"cost-{uuid.uuid4().hex}")
            return "CreateJobFunction", api_event(
                "create_job", users[i % len(users)], body=body, idempotency_key=uuid.uuid4().hex
            )

        operations: dict[str, Callable[[int], tuple[str, dict[str, Any]]]] = {
            "get": get,
            "list": list_jobs,
            "create": create,
            "create_with_idempotency_key": create_keyed,
        }
        figures: dict[str, Any] = {}
        for name, make in operations.items():
            meter.reset()
            functions.stats.clear()
            statuses: dict[int, int] = {}
            for i in range(iterations):
                function, event = make(i)
                status = functions.invoke(function, event)["statusCode"]
                statuses[status] = statuses.get(status, 0) + 1
            stats = functions.stats[function]
            sizes = mean_item_sizes(stack)
            dynamo = meter.finalize(sizes).get(function, {})
            calls = meter.calls_by().get(function, {})
            figures[name] = {
                "requests": iterations,
                "statuses": statuses,
                "cpu_ms": summary(stats.samples_ms),
                "wall_ms_mean": stats.wall_seconds / stats.invocations * 1000,
                "aws_calls_per_request": {
                    op: count / iterations for op, count in sorted(calls.items())
                },
                "aws_calls_total_per_request": sum(calls.values()) / iterations,
                "dynamodb_rru_per_request": dynamo.get("rru", 0) / iterations,
                "dynamodb_wru_per_request": dynamo.get("wru", 0) / iterations,
            }
            say(f"api_cost: {name}: cpu p50 {figures[name]['cpu_ms']['p50']:.2f} ms")

    rows = [
        (
            name,
            fmt(f["cpu_ms"]["p50"], 2),
            fmt(f["cpu_ms"]["p99"], 2),
            fmt(f["cpu_ms"]["mean"], 2),
            fmt(f["wall_ms_mean"], 1),
            fmt(f["aws_calls_total_per_request"], 2),
            ", ".join(f"{op} {n:g}" for op, n in f["aws_calls_per_request"].items()),
            fmt(f["dynamodb_rru_per_request"], 2),
            fmt(f["dynamodb_wru_per_request"], 2),
        )
        for name, f in figures.items()
    ]
    markdown = "\n\n".join(
        [
            "## Own cost per API request (handlers in-process, warm, against moto server)",
            f"{iterations} requests per operation; {len(users)} users with {jobs_per_user} jobs "
            "each. CPU = the invoking thread's CPU time (AWS wait excluded); wall time is "
            "moto-bound.",
            table(
                [
                    "operation",
                    "CPU p50 ms",
                    "CPU p99 ms",
                    "CPU mean ms",
                    "wall mean ms (moto)",
                    "AWS calls",
                    "calls by operation",
                    "RRU",
                    "WRU",
                ],
                rows,
            ),
        ]
    )
    data = {"iterations": iterations, "users": len(users), "operations": figures}
    write_result(mode, "api_cost", data, markdown)
    return data
