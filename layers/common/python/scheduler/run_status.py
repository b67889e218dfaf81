"""Run status: the runner's reports (S3 objects under reports/) and ECS task-stopped events
(the safety net for a task that died before reporting) become the run record."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pydantic import ValidationError

from scheduler.aws import error_code
from scheduler.dispatch import output_key, parse_report_key, report_key
from scheduler.lifecycle import RunOutcomes
from scheduler.run_repository import RunRepository, epoch
from scheduler.runs import Run, RunReport, RunStatus

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = Logger(child=True)


class RunStatusService:
    def __init__(
        self,
        runs: RunRepository,
        outcomes: RunOutcomes,
        s3: S3Client,
        *,
        bucket: str,
        running_grace_seconds: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._runs = runs
        self._outcomes = outcomes
        self._s3 = s3
        self._bucket = bucket
        self._grace = running_grace_seconds
        self._clock = clock

    # -- runner reports ------------------------------------------------------------------------

    def on_s3_notification(self, body: str) -> None:
        """One SQS message from the bucket's notification: zero or more ObjectCreated records
        (S3's first message is an s3:TestEvent, which carries none)."""
        notification = json.loads(body)
        for record in notification.get("Records", []):
            key = unquote_plus(record["s3"]["object"]["key"])
            self.on_report(key)

    def on_report(self, key: str) -> None:
        parsed = parse_report_key(key)
        if parsed is None:
            logger.warning("ignoring an object that is not a run report", key=key)
            return
        job_id, run_key, attempt, kind = parsed
        run = self._runs.get(job_id, run_key)
        report = self._read(key)
        if run is None or report is None or run.attempt != attempt or run.status.terminal:
            return  # an old attempt, a finished run, or a report we cannot trust: nothing to do
        if kind == "started":
            deadline = epoch(report.started_at or self._clock()) + run.timeout_seconds + self._grace
            self._runs.mark_running(run, report, self._clock(), deadline)
        else:
            self._outcomes.conclude(run, report, _output_of(run, report))

    def _read(self, key: str) -> RunReport | None:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
            return RunReport.model_validate_json(body)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        except ValidationError:
            logger.warning("malformed run report", key=key)
            return None

    # -- ECS task state changes ----------------------------------------------------------------

    def on_task_stopped(self, detail: dict[str, Any]) -> None:
        """A task stopped: each of its runs that did not report its end has failed (or, if its
        report landed in the meantime, is concluded from that report)."""
        if detail.get("lastStatus") != "STOPPED":
            return
        refs = _run_refs(detail)
        exit_code = next(
            (c.get("exitCode") for c in detail.get("containers", []) if "exitCode" in c), None
        )
        reason = str(detail.get("stoppedReason", "task stopped"))
        for job_id, run_key, attempt in refs:
            run = self._runs.get(job_id, run_key)
            if run is None or run.attempt != attempt:
                continue
            self.conclude_unreported(
                run, f"task stopped before the run reported its end: {reason}", exit_code
            )

    def conclude_unreported(self, run: Run, error: str, exit_code: int | None = None) -> bool:
        """End the current attempt of a run whose runner went silent (its task stopped, or its
        deadline passed): from its finished report if that landed after all (its notification
        may still be on its way), else as FAILED. False if there was nothing to conclude."""
        if run.status.terminal or run.status is RunStatus.PENDING:
            return False  # finished, or already being retried
        finished = self._read(report_key(run.job_id, run.key, run.attempt, "finished"))
        if finished is not None:
            self._outcomes.conclude(run, finished, _output_of(run, finished))
            return True
        report = RunReport(
            job_id=run.job_id,
            run_key=run.key,
            attempt=run.attempt,
            status=RunStatus.FAILED,
            exit_code=exit_code,
            error=error,
        )
        self._outcomes.conclude(run, report)
        return True


def _output_of(run: Run, report: RunReport) -> str | None:
    """Where the attempt's full output lives; None when output_tail already holds all of it."""
    if report.output_uploaded is False:
        return None
    return output_key(run.job_id, run.key, run.attempt)


def _run_refs(detail: dict[str, Any]) -> list[tuple[str, str, int]]:
    refs: list[tuple[str, str, int]] = []
    for override in detail.get("overrides", {}).get("containerOverrides", []):
        for variable in override.get("environment", []):
            if variable.get("name") != "RUN_REFS":
                continue
            for ref in str(variable.get("value", "")).split(","):
                parts = ref.split("/")
                if len(parts) == 3 and parts[2].isdigit():
                    refs.append((parts[0], parts[1], int(parts[2])))
    return refs
