"""The local stack's dispatch backends, in place of Fargate: the runner entrypoint in a
subprocess (`local`, here) or in a container (`docker`, docker_backend.py), each reporting its
end as an ECS "Task State Change" event, the shape EventBridge delivers in AWS.

The executor's wiring knows only the "ecs" backend; the local stack registers these under
"local" and "docker" (DISPATCH_BACKEND) before any function runs, so no local-only code ships in
the Lambda layer.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from aws_lambda_powertools import Logger
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler import wiring
from scheduler.pipeline.dispatch_models import RunSpec
from scheduler.pipeline.ecs_backend import run_refs
from scheduler.pipeline.manifests import Manifests

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = Logger(child=True)
BACKEND_NAME = "local"


class LocalBackendSettings(BaseSettings):
    """What the local stack sets in the executor's environment for this backend."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    runner_path: Path
    task_events_queue_url: str
    local_work_dir: Path
    # Emulated Fargate start, "LOW-HIGH" seconds (drawn uniformly per task); "0-0": at once.
    local_task_start_delay: str = "0-0"

    @property
    def start_delay(self) -> tuple[float, float]:
        low, _, high = self.local_task_start_delay.partition("-")
        return float(low), float(high or low)


def register() -> None:
    """Make DISPATCH_BACKEND=local build this backend (idempotent)."""
    wiring.register_dispatch_backend(BACKEND_NAME, _build)


def _build(manifests: Manifests) -> LocalBackend:
    settings = LocalBackendSettings()  # type: ignore[call-arg]  # values come from the environment
    return LocalBackend(
        manifests,
        runner=settings.runner_path,
        # ECS and EventBridge's part: the stack's own principal, not the executor's role.
        events=boto3.session.Session().client("sqs", config=wiring.RETRIES),
        events_queue_url=settings.task_events_queue_url,
        work_dir=settings.local_work_dir,
        start_delay=settings.start_delay,
    )


class TaskBackend:
    """What the local backends share: a task per pack, started on a thread of its own (after
    the emulated Fargate start), whose end is reported as an ECS "Task State Change" event on a
    queue the local stack feeds to the task events function, just as EventBridge would.
    Subclasses say how the task's runner executes (`_execute`)."""

    task_prefix = "local"

    def __init__(
        self,
        manifests: Manifests,
        *,
        events: SQSClient,
        events_queue_url: str,
        work_dir: Path,
        start_delay: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self._start_delay = start_delay
        self._manifests = manifests
        self._events = events
        self._events_url = events_queue_url
        self._work_dir = work_dir

    def dispatch(self, pack_id: str, runs: list[RunSpec], place: str | None = None) -> str:
        url = self._manifests.publish(pack_id, runs)
        task_id = f"{self.task_prefix}-{uuid.uuid4().hex}"
        self._work_dir.mkdir(parents=True, exist_ok=True)
        # What the ECS backend passes in the container overrides, and nothing else of ours.
        environment = {"RUNS_MANIFEST_URL": url, "RUN_REFS": run_refs(runs)}
        delay = random.uniform(*self._start_delay)
        task = threading.Thread(
            target=self._run_task, args=(task_id, environment, runs, delay, place), daemon=True
        )
        task.start()
        return task_id

    def _run_task(
        self,
        task_id: str,
        environment: dict[str, str],
        runs: list[RunSpec],
        delay: float,
        place: str | None = None,
    ) -> None:
        """The task's life: its start (after the emulated Fargate delay), the runner, and the
        task-stopped event at its end. The log's first line says when it started, for the
        benchmarks' idle-time figures."""
        time.sleep(delay)
        with (self._work_dir / f"{task_id}.log").open("ab") as log:
            started = {"event": "task_started", "at": time.time(), "start_delay_s": delay}
            log.write(json.dumps(started).encode() + b"\n")
            log.flush()
            exit_code, reason = self._execute(task_id, environment, log)
        self._send(task_stopped_event(task_id, run_refs(runs), exit_code, reason, place))

    def _execute(
        self, task_id: str, environment: dict[str, str], log: BinaryIO
    ) -> tuple[int | None, str]:
        """Run the task's runner to its end, its output to `log`: (its exit code, or None when
        it did not start; the stopped reason)."""
        raise NotImplementedError

    def _send(self, event: dict[str, Any]) -> None:
        try:
            self._events.send_message(QueueUrl=self._events_url, MessageBody=json.dumps(event))
        except Exception:  # the local stack is shutting down
            logger.exception("could not report the end of a local task", event=event["id"])


class LocalBackend(TaskBackend):
    """The local stack's stand-in for Fargate: the runner entrypoint in a subprocess, in a
    session of its own, with only the overrides' variables, PATH and LANG."""

    def __init__(
        self,
        manifests: Manifests,
        *,
        runner: Path,
        events: SQSClient,
        events_queue_url: str,
        work_dir: Path,
        start_delay: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        super().__init__(
            manifests,
            events=events,
            events_queue_url=events_queue_url,
            work_dir=work_dir,
            start_delay=start_delay,
        )
        self._runner = runner

    def _execute(
        self, task_id: str, environment: dict[str, str], log: BinaryIO
    ) -> tuple[int | None, str]:
        try:
            process = subprocess.Popen(  # the runner is our own code; scripts run below it
                [sys.executable, str(self._runner)],
                env=environment | {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        except OSError as error:  # as a task that fails to start: stopped, no exit code
            return None, str(error)
        return process.wait(), "Essential container exited"


def task_stopped_event(
    task_arn: str, refs: str, exit_code: int | None, reason: str, place: str | None = None
) -> dict[str, Any]:
    """An EventBridge "ECS Task State Change" event, as AWS shapes it (the fields we read)."""
    container: dict[str, Any] = {"name": "runner", "lastStatus": "STOPPED"}
    if exit_code is not None:
        container["exitCode"] = exit_code
    environment = [{"name": "RUN_REFS", "value": refs}]
    if place is not None:  # the ECS backend's override too; the runner never reads it
        environment.append({"name": "PLACE", "value": place})
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [task_arn],
        "detail": {
            "taskArn": task_arn,
            "lastStatus": "STOPPED",
            "desiredStatus": "STOPPED",
            "stoppedReason": reason,
            "stopCode": "EssentialContainerExited",
            "containers": [container],
            "overrides": {"containerOverrides": [{"name": "runner", "environment": environment}]},
        },
    }
