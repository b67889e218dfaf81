"""`sam local invoke` against the resources of a running local stack (issue 11): get_job and
create_job, with the shared layer, run by SAM in containers of a Lambda base built here
(`--invoke-image`; no registry is reachable), with the `--env-vars` file the local stack writes
(`.local/sam-env.json`: its tables, bucket and secret, and the endpoint at which SAM's
containers reach its moto). What one function wrote, the local stack's API reads, and back.

The commands are the README's ("sam local"). Skipped only when Docker cannot be made available.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import iam, images, launcher
from e2e.api_client import HTTP_TIMEOUT, TERMINAL, create_job, run_now, unique, wait_for
from e2e.conftest import ROOT, LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

SAM = Path(sys.executable).parent / "sam"
EVENTS = ROOT / "events"
# The functions are built for this machine, as `make sam-local-build` does.
ARCHITECTURE = "arm64" if platform.machine() in {"aarch64", "arm64"} else "x86_64"
LAYER_ARCH = "aarch64" if ARCHITECTURE == "arm64" else "x86_64"
SAM_TIMEOUT = 300


def sam_environment(keys: iam.Keys | None = None) -> dict[str, str]:
    """sam's own environment, no telemetry, and the credentials sam passes into the functions:
    `keys` (a function's role in the local stack's moto, which enforces IAM), else fake ones
    (sam build calls no AWS)."""
    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    credentials = keys.environment() if keys else fake
    return (
        launcher.environment()
        | credentials
        | {
            "PATH": f"{SAM.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "SAM_CLI_TELEMETRY": "0",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LAYER_ARCH": LAYER_ARCH,
        }
    )


@pytest.fixture(scope="module")
def invoke_image() -> str:
    try:
        return images.ensure_lambda_base_image()
    except images.DockerUnavailable as error:
        pytest.skip(f"Docker cannot be made available here, so no sam local: {error}")


@pytest.fixture(scope="module")
def built_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sam build` of the functions and the layer for this machine's architecture."""
    build = tmp_path_factory.mktemp("sam")
    result = subprocess.run(
        [
            str(SAM),
            "build",
            "--config-env",
            "local",
            "--parameter-overrides",
            f"Architecture={ARCHITECTURE}",
            "--build-dir",
            str(build / "build"),
            "--cache-dir",
            str(build / "cache"),
        ],
        cwd=ROOT,
        env=sam_environment(),
        capture_output=True,
        text=True,
        timeout=SAM_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build / "build" / "template.yaml"


@pytest.fixture(scope="module")
def sam_stack(invoke_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A local stack started once Docker runs (so its relay for SAM's containers is up)."""
    stack = start_stack(tmp_path_factory.mktemp("devstack-sam"))
    yield stack
    assert stop_stack(stack, signal.SIGINT) == 0, stack.log()


def function_keys(stack: LocalStack, function: str) -> iam.Keys:
    """The role session the local stack gave `function` (its template policies, enforced)."""
    principals = iam.load_credentials(stack.state_dir)
    assert principals is not None, "the local stack enforces IAM by default"
    return principals.functions[function]


def sam_invoke(
    stack: LocalStack, template: Path, image: str, function: str, event: dict[str, Any]
) -> Any:
    """`sam local invoke FUNCTION` with this event; the function's answer."""
    event_path = stack.state_dir / f"event-{function}.json"
    event_path.write_text(json.dumps(event))
    result = subprocess.run(
        [
            str(SAM),
            "local",
            "invoke",
            function,
            "--template",
            str(template),
            "--invoke-image",
            image,
            "--skip-pull-image",
            "--env-vars",
            str(stack.state_dir / "sam-env.json"),
            "--parameter-overrides",
            f"Architecture={ARCHITECTURE}",
            "--event",
            str(event_path),
        ],
        cwd=ROOT,
        env=sam_environment(function_keys(stack, function)),
        capture_output=True,
        text=True,
        timeout=SAM_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{function}: {result.stderr[-4000:]}"
    lines = result.stdout.strip().splitlines()
    assert lines, f"{function}: {result.stderr[-4000:]}"
    try:
        answer: Any = json.loads(lines[-1])  # None from a handler that returns nothing
    except ValueError:
        raise AssertionError(f"{function}: {lines[-1]}\n{result.stderr[-3000:]}") from None
    return answer


def event(name: str, user: str, **changes: Any) -> dict[str, Any]:
    """events/<name>.json as `user` (the verified `sub`), with top-level fields replaced."""
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    loaded["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = user
    return loaded | changes


def get_job_event(user: str, job: dict[str, Any]) -> dict[str, Any]:
    path = f"/jobs/{job['job_id']}"
    request = event("get_job", user, pathParameters={"job_id": job["job_id"]}, rawPath=path)
    request["requestContext"]["http"]["path"] = path
    return request


def test_the_env_vars_file_points_the_functions_at_the_local_stack(sam_stack: LocalStack) -> None:
    variables = json.loads((sam_stack.state_dir / "sam-env.json").read_text())
    get_job = variables["GetJobFunction"]
    assert get_job["JOBS_TABLE"] == "local-JobsTable", get_job
    moto_port = sam_stack.state()["aws_endpoint"].rsplit(":", 1)[1]
    assert get_job["AWS_ENDPOINT_URL"].endswith(f":{moto_port}"), get_job
    assert set(variables) >= {"GetJobFunction", "CreateJobFunction", "ListJobsFunction"}
    # In SAM's container the executor dispatches as on AWS (the local backends are the stack's)
    executor = variables["ExecutorFunction"]
    assert executor["DISPATCH_BACKEND"] == "ecs", executor
    assert executor["SUBNETS"].startswith("subnet-"), executor  # moto's default VPC
    assert executor["SECURITY_GROUPS"].startswith("sg-"), executor


def test_get_job_in_sam_local_reads_the_local_stacks_job(
    sam_stack: LocalStack, built_template: Path, invoke_image: str
) -> None:
    user = unique("sam-reader")
    job = create_job(sam_stack, user=user, name=unique("made-over-http"))

    answer = sam_invoke(
        sam_stack, built_template, invoke_image, "GetJobFunction", get_job_event(user, job)
    )
    assert answer["statusCode"] == 200, answer
    got = json.loads(answer["body"])
    assert (got["job_id"], got["name"], got["user_id"]) == (job["job_id"], job["name"], user)


def test_create_job_in_sam_local_is_seen_by_the_local_stack(
    sam_stack: LocalStack, built_template: Path, invoke_image: str
) -> None:
    user = unique("sam-writer")
    body = json.loads(event("create_job", user)["body"]) | {"name": unique("made-in-sam")}
    request = event("create_job", user, body=json.dumps(body))
    request["headers"]["idempotency-key"] = unique("sam")

    answer = sam_invoke(sam_stack, built_template, invoke_image, "CreateJobFunction", request)
    assert answer["statusCode"] == 201, answer
    created = json.loads(answer["body"])
    assert created["name"] == body["name"], created

    seen = requests.get(
        f"{sam_stack.url}/jobs/{created['job_id']}",
        headers=sam_stack.headers(user),
        timeout=HTTP_TIMEOUT,
    )
    assert seen.status_code == 200, seen.text
    assert seen.json()["script_sha256"] == created["script_sha256"]


# --------------------------------------------------------------------- every function (make)

EXAMPLE_JOB = "4f2a7c0e9b5d4e1f8a3c6b2d1e0f9a8b"  # the job id the events/*.json files name
EXAMPLE_RUN = re.compile(rf"\d{{10}}-{EXAMPLE_JOB}")

# Each API function with its event, in an order that leaves the job to be deleted last, and
# the status the function must answer for the job and the ended run the test makes.
API_CASES = [
    ("CreateJobFunction", "create_job", 201),
    ("GetJobFunction", "get_job", 200),
    ("ListJobsFunction", "list_jobs", 200),
    ("PreviewScheduleFunction", "preview_schedule", 200),
    ("UpdateJobFunction", "update_job", 200),
    ("ListRunsFunction", "list_runs", 200),
    ("GetRunFunction", "get_run", 200),
    ("GetRunOutputFunction", "get_run_output", 200),
    ("CancelRunFunction", "cancel_run", 409),  # the run has ended
    ("RunJobFunction", "run_job", 202),
    ("BackfillJobFunction", "backfill_job", 200),  # a dry run
    ("PauseJobFunction", "pause_job", 200),
    ("ResumeJobFunction", "resume_job", 200),
    ("ApiDocsFunction", "api_docs", 200),
    ("DeleteJobFunction", "delete_job", 204),
]
# The pipeline's functions: the watcher ticks the local stack's schedule; the others get the
# ended run's message, report and task stop again (as a redelivery would: each is ignored).
PIPELINE_CASES = [
    ("WatcherFunction", "watcher"),
    ("ExecutorFunction", "executor"),
    ("RunReportsFunction", "run_reports"),
    ("TaskEventsFunction", "task_stopped"),
]


def event_for(name: str, user: str, job_id: str, run_key: str) -> dict[str, Any]:
    """events/<name>.json as `user`, about this job and run instead of the example's."""
    text = EXAMPLE_RUN.sub(run_key, (EVENTS / f"{name}.json").read_text())
    text = text.replace(EXAMPLE_JOB, job_id).replace(
        '\\"user_id\\":\\"alice\\"', f'\\"user_id\\":\\"{user}\\"'
    )
    loaded: dict[str, Any] = json.loads(text)
    authorizer = loaded.get("requestContext", {}).get("authorizer")
    if authorizer:
        authorizer["jwt"]["claims"]["sub"] = user
    if name == "create_job":
        body = json.loads(loaded["body"]) | {"name": unique("made-in-sam")}
        loaded["body"] = json.dumps(body)
        loaded["headers"]["idempotency-key"] = unique("sam")
    return loaded


@pytest.mark.sam_every
def test_every_function_answers_its_event_in_sam_local(
    sam_stack: LocalStack, built_template: Path, invoke_image: str
) -> None:
    """`make sam-local-check`: not in `make test` (SAM rebuilds its image at every invoke,
    ~12 s each here); get_job and create_job above stand for the rest there."""
    user = unique("sam-every")
    job = create_job(sam_stack, user=user, name=unique("every"))
    ran = run_now(sam_stack, job["job_id"], user)
    assert ran.status_code == 202, ran.text
    run_key = ran.json()["key"]

    def ended() -> dict[str, Any] | None:
        run: dict[str, Any] = requests.get(
            f"{sam_stack.url}/jobs/{job['job_id']}/runs/{run_key}",
            headers=sam_stack.headers(user),
            timeout=HTTP_TIMEOUT,
        ).json()
        return run if run["status"] in TERMINAL else None

    wait_for("the run ending", ended, 60, sam_stack)

    answers: dict[str, Any] = {}
    for function, name, _ in API_CASES:
        request = event_for(name, user, job["job_id"], run_key)
        answer = sam_invoke(sam_stack, built_template, invoke_image, function, request)
        answers[function] = answer.get("statusCode", answer)
    for function, name in PIPELINE_CASES:
        request = event_for(name, user, job["job_id"], run_key)
        answers[function] = sam_invoke(sam_stack, built_template, invoke_image, function, request)

    everything = json.dumps(answers, indent=1)
    assert {f: answers[f] for f, _, _ in API_CASES} == {f: s for f, _, s in API_CASES}, everything
    assert set(answers["WatcherFunction"]) == {"queued", "items"}, everything
    for function in ("ExecutorFunction", "RunReportsFunction"):
        assert answers[function] == {"batchItemFailures": []}, everything
    assert answers["TaskEventsFunction"] is None, everything  # returns nothing, raised nothing
    gone = requests.get(
        f"{sam_stack.url}/jobs/{job['job_id']}",
        headers=sam_stack.headers(user),
        timeout=HTTP_TIMEOUT,
    )
    assert gone.status_code == 404, gone.text  # deleted in SAM's container, gone over HTTP
