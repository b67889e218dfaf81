"""Dispatch backends: start one runner task for a pack of runs (same owner, same window).

The runner gets no AWS credentials: a manifest of presigned URLs scoped to exactly its runs
(GET each script, PUT each report and output). Reports land under `reports/`, whose S3
notifications drive the run status function.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = Logger(child=True)

REPORT_PREFIX = "reports/"


class DispatchFailed(Exception):
    """The task could not be started; the runs' claims are released and the message retried."""


class RunSpec(BaseModel):
    job_id: str
    run_key: str
    attempt: int
    scheduled_at: int
    not_before: int
    timeout_seconds: int
    parameters: dict[str, Any]
    script_key: str


def report_key(job_id: str, run_key: str, attempt: int, kind: str) -> str:
    return f"{REPORT_PREFIX}{job_id}/{run_key}/{attempt}/{kind}.json"


def claim_key(job_id: str, run_key: str, attempt: int) -> str:
    return f"claims/{job_id}/{run_key}/{attempt}.json"


def output_key(job_id: str, run_key: str, attempt: int) -> str:
    return f"outputs/{job_id}/{run_key}/{attempt}.log"


def parse_report_key(key: str) -> tuple[str, str, int, str] | None:
    """(job_id, run_key, attempt, kind) of a report object key, or None."""
    parts = key.removeprefix(REPORT_PREFIX).split("/")
    if not key.startswith(REPORT_PREFIX) or len(parts) != 4 or not parts[2].isdigit():
        return None
    kind = parts[3].removesuffix(".json")
    if kind not in ("started", "finished"):
        return None
    return parts[0], parts[1], int(parts[2]), kind


def run_refs(runs: list[RunSpec]) -> str:
    """Compact list of the task's runs, carried in its overrides for the task-stopped event."""
    return ",".join(f"{r.job_id}/{r.run_key}/{r.attempt}" for r in runs)


class Manifests:
    """Writes a pack's manifest to S3 and presigns it and every URL inside."""

    def __init__(self, s3: S3Client, bucket: str, url_seconds: int) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._ttl = url_seconds

    def _url(self, method: str, key: str, ttl: int, **extra: str) -> str:
        params = {"Bucket": self._bucket, "Key": key, **extra}
        return str(self._s3.generate_presigned_url(method, Params=params, ExpiresIn=ttl))

    def publish(self, pack_id: str, runs: list[RunSpec]) -> str:
        entries = []
        for run in runs:
            ttl = self._ttl + run.timeout_seconds + max(0, run.not_before - _now())
            entries.append(
                {
                    "job_id": run.job_id,
                    "run_key": run.run_key,
                    "attempt": run.attempt,
                    "scheduled_at": run.scheduled_at,
                    "not_before": run.not_before,
                    "timeout_seconds": run.timeout_seconds,
                    "parameters": run.parameters,
                    "script_url": self._url("get_object", run.script_key, ttl),
                    "started_url": self._url(
                        "put_object",
                        report_key(run.job_id, run.run_key, run.attempt, "started"),
                        ttl,
                    ),
                    "finished_url": self._url(
                        "put_object",
                        report_key(run.job_id, run.run_key, run.attempt, "finished"),
                        ttl,
                    ),
                    "output_url": self._url(
                        "put_object", output_key(run.job_id, run.run_key, run.attempt), ttl
                    ),
                    # If-None-Match: * makes the first task to PUT it the only one to run this
                    # attempt, should the executor ever dispatch it twice.
                    "claim_url": self._url(
                        "put_object",
                        claim_key(run.job_id, run.run_key, run.attempt),
                        ttl,
                        IfNoneMatch="*",
                    ),
                }
            )
        key = f"manifests/{pack_id}.json"
        body = json.dumps({"version": 1, "pack_id": pack_id, "runs": entries})
        self._s3.put_object(
            Bucket=self._bucket, Key=key, Body=body.encode(), ContentType="application/json"
        )
        return self._url("get_object", key, self._ttl)


class DispatchBackend(Protocol):
    def dispatch(self, pack_id: str, runs: list[RunSpec]) -> str:
        """Start one task running `runs`; return its id."""


class EcsBackend:
    """Fargate RunTask: one task per pack, the manifest URL in the container overrides."""

    def __init__(
        self,
        ecs: ECSClient,
        manifests: Manifests,
        *,
        cluster: str,
        task_definition: str,
        container: str,
        subnets: list[str],
        security_groups: list[str],
        assign_public_ip: bool,
    ) -> None:
        self._ecs = ecs
        self._manifests = manifests
        self._cluster = cluster
        self._task_definition = task_definition
        self._container = container
        self._network = {
            "awsvpcConfiguration": {
                "subnets": subnets,
                "securityGroups": security_groups,
                "assignPublicIp": "ENABLED" if assign_public_ip else "DISABLED",
            }
        }

    def dispatch(self, pack_id: str, runs: list[RunSpec]) -> str:
        url = self._manifests.publish(pack_id, runs)
        response = self._ecs.run_task(
            cluster=self._cluster,
            taskDefinition=self._task_definition,
            launchType="FARGATE",
            count=1,
            startedBy=pack_id[:36],
            networkConfiguration=self._network,  # type: ignore[arg-type]
            overrides={
                "containerOverrides": [
                    {
                        "name": self._container,
                        "environment": [
                            {"name": "RUNS_MANIFEST_URL", "value": url},
                            {"name": "RUN_REFS", "value": run_refs(runs)},
                        ],
                    }
                ]
            },
        )
        failures = response.get("failures", [])
        tasks = response.get("tasks", [])
        if failures or not tasks:
            raise DispatchFailed(f"RunTask failed: {failures}")
        return str(tasks[0]["taskArn"])


class LocalBackend:
    """The local stack's stand-in for Fargate: the runner entrypoint in a subprocess, whose end
    is reported as an ECS "Task State Change" event on a queue the local stack feeds to the
    task events function, just as EventBridge would."""

    def __init__(
        self,
        manifests: Manifests,
        *,
        runner: Path,
        events: SQSClient,
        events_queue_url: str,
        work_dir: Path,
    ) -> None:
        self._manifests = manifests
        self._runner = runner
        self._events = events
        self._events_url = events_queue_url
        self._work_dir = work_dir

    def dispatch(self, pack_id: str, runs: list[RunSpec]) -> str:
        url = self._manifests.publish(pack_id, runs)
        task_id = f"local-{uuid.uuid4().hex}"
        self._work_dir.mkdir(parents=True, exist_ok=True)
        log = (self._work_dir / f"{task_id}.log").open("ab")
        environment = {
            "RUNS_MANIFEST_URL": url,
            "RUN_REFS": run_refs(runs),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        process = subprocess.Popen(  # the runner is our own code; scripts run below it
            [sys.executable, str(self._runner)],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        watcher = threading.Thread(
            target=self._report_end, args=(task_id, process, runs), daemon=True
        )
        watcher.start()
        return task_id

    def _report_end(
        self, task_id: str, process: subprocess.Popen[bytes], runs: list[RunSpec]
    ) -> None:
        code = process.wait()
        event = task_stopped_event(task_id, run_refs(runs), code, "Essential container exited")
        try:
            self._events.send_message(QueueUrl=self._events_url, MessageBody=json.dumps(event))
        except Exception:  # the local stack is shutting down
            logger.exception("could not report the end of a local task", task_id=task_id)


def task_stopped_event(
    task_arn: str, refs: str, exit_code: int | None, reason: str
) -> dict[str, Any]:
    """An EventBridge "ECS Task State Change" event, as AWS shapes it (the fields we read)."""
    container: dict[str, Any] = {"name": "runner", "lastStatus": "STOPPED"}
    if exit_code is not None:
        container["exitCode"] = exit_code
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
            "overrides": {
                "containerOverrides": [
                    {"name": "runner", "environment": [{"name": "RUN_REFS", "value": refs}]}
                ]
            },
        },
    }


def _now() -> int:
    return int(datetime.now(UTC).timestamp())
