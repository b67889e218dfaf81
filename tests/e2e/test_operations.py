"""Operating the scheduler, end to end: per-job notifications (a job that asks to hear of
failures and late starts has its owner told, through the deployment's SNS topic — locally
moto's, with a queue subscribed to it, `local-notifications` — once per failed run and once per
late run, not once per retry), and every metric the dashboard shows is one the functions emit
while runs succeed, fail, time out, are skipped and start late.

Its own stack: tasks start 3 s after dispatch (`--task-start-delay 3`, as a slow Fargate start
would make every run late), retries come after 1 s, and metrics are printed (EMF lines on the
stack's output, as CloudWatch Logs would receive them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from dashboard import dashboard_body, scheduler_metrics, template_stack
from devstack import iam
from e2e.api_client import (
    FAR_FUTURE,
    HTTP_TIMEOUT,
    create_job,
    get_run,
    start_run,
    wait_for,
    wait_for_end,
)
from e2e.conftest import LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

FAILING = "import sys\nprint('about to fail')\nsys.exit(3)\n"
NOTIFICATIONS_QUEUE = "local-notifications"


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    pace = (
        *("--watcher-interval", "2", "--retry-base-seconds", "1", "--task-start-delay", "3"),
        *("--function-env", "POWERTOOLS_METRICS_DISABLED=false"),
        *("--function-env", "STARTED_REPORT_SECONDS=1"),  # RUNNING 1 s in (as PIPELINE_PACE)
    )
    stack = start_stack(tmp_path_factory.mktemp("slow"), pace)
    yield stack
    stop_stack(stack)


def notifications(stack: LocalStack, wait: float) -> list[dict[str, Any]]:
    """Every notification that arrives within `wait` seconds, as SNS delivered it to SQS."""
    principals = iam.load_credentials(stack.state_dir)
    assert principals is not None, "the stack enforces IAM: its admin keys read moto"
    sqs = boto3.client(
        "sqs",
        endpoint_url=stack.state()["aws_endpoint"],
        region_name="us-east-1",
        aws_access_key_id=principals.admin.access_key_id,
        aws_secret_access_key=principals.admin.secret_access_key,
    )
    url = sqs.get_queue_url(QueueName=NOTIFICATIONS_QUEUE)["QueueUrl"]
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        time.sleep(0.2)
    return found


def test_a_failing_late_job_tells_its_owner_once_of_each(slow_stack: LocalStack) -> None:
    stack = slow_stack
    # Given a job that fails, with one retry, and asks to hear of failures and of starts over 1 s
    job = create_job(
        stack,
        schedule=FAR_FUTURE,
        script=FAILING,
        max_attempts=2,
        notifications={"on_failure": True, "late_after_seconds": 1},
    )

    # When it is run now: both attempts start ~3 s late (the task's start), and both fail
    key = start_run(stack, job["job_id"])
    run = wait_for_end(stack, job["job_id"], key, timeout=60)
    assert (run["status"], run["attempt"]) == ("FAILED", 2)

    # Then its owner is told once that the run started late and once that it failed
    received = notifications(stack, wait=3)
    mine = [n for n in received if json.loads(n["Message"])["job_id"] == job["job_id"]]
    events = sorted(json.loads(n["Message"])["event_type"] for n in mine)
    assert events == ["RUN_FAILED", "RUN_LATE"], received
    for envelope in mine:
        attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
        body = json.loads(envelope["Message"])
        assert attributes == {
            "user_id": "alice",
            "job_id": job["job_id"],
            "event_type": body["event_type"],
        }
        assert body["run_key"] == key
        assert body["link"] == f"/jobs/{job['job_id']}/runs/{key}"
    failed = next(json.loads(n["Message"]) for n in mine if "RUN_FAILED" in n["Message"])
    assert (failed["status"], failed["exit_code"], failed["attempt"]) == ("FAILED", 3, 2)
    assert "about to fail" in failed["output_tail"]
    late = next(json.loads(n["Message"]) for n in mine if "RUN_LATE" in n["Message"])
    assert late["attempt"] == 1
    assert late["start_lag_ms"] > 1000


def emitted_metrics(stack: LocalStack) -> set[str]:
    """Every metric name in the EMF lines the functions printed."""
    names = set()
    for line in stack.log().splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            names |= {metric["Name"] for metric in directive["Metrics"]}
    return names


def test_every_metric_on_the_dashboard_is_emitted(slow_stack: LocalStack) -> None:
    stack = slow_stack
    # Given runs that succeed, fail after a retry, time out, start late (all of them: tasks
    # start 3 s late here), one skipped because an earlier run of its job is running, and that
    # one cancelled
    succeeding = create_job(stack, schedule=FAR_FUTURE, script="print('ok')\n")
    failing = create_job(stack, schedule=FAR_FUTURE, script=FAILING, max_attempts=2)
    slow = create_job(
        stack, schedule=FAR_FUTURE, script="import time\ntime.sleep(30)\n", timeout_seconds=1
    )
    forbidding = create_job(
        stack,
        schedule=FAR_FUTURE,
        script="import time\ntime.sleep(90)\n",
        timeout_seconds=120,
        concurrency_policy="FORBID",
    )
    runs = {job["job_id"]: start_run(stack, job["job_id"]) for job in (succeeding, failing, slow)}
    blocker = start_run(stack, forbidding["job_id"])
    wait_for(
        "the FORBID job's run running",
        lambda: (
            run
            if (run := get_run(stack, forbidding["job_id"], blocker))["status"] == "RUNNING"
            else None
        ),
        30,
        stack,
    )
    # (another of its runs, at its second, finds that run running: its runner skips it)
    skipped_key = start_run(stack, forbidding["job_id"])
    for job_id, key in runs.items():
        wait_for_end(stack, job_id, key, timeout=60)
    assert wait_for_end(stack, forbidding["job_id"], skipped_key)["status"] == "SKIPPED"
    # And the running one is cancelled by its owner
    cancelled = requests.post(
        f"{stack.url}/jobs/{forbidding['job_id']}/runs/{blocker}/cancel",
        headers=stack.headers("alice"),
        timeout=HTTP_TIMEOUT,
    )
    assert cancelled.status_code == 200, cancelled.text
    statuses = {get_run(stack, j, k)["status"] for j, k in runs.items()}
    assert statuses == {"SUCCEEDED", "FAILED", "TIMED_OUT"}

    # Then every metric of ours the dashboard names was printed by the functions
    time.sleep(3)  # the last invocations' flush
    shown = scheduler_metrics(dashboard_body(template_stack()))
    assert len(shown) >= 17, shown
    missing = shown - emitted_metrics(stack)
    assert not missing, f"on the dashboard, never emitted: {sorted(missing)}"
