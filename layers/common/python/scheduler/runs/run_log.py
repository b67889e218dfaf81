"""One structured log line per run state change, with the job, the run key, the attempt and
the owner, so that CloudWatch Logs Insights can follow one run across functions
(docs/operations.md has the queries). Never the script, its parameters, its output or a URL."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from scheduler.runs.run_models import Run

logger = Logger(child=True)


def run_changed(message: str, run: Run, **fields: Any) -> None:
    logger.info(
        message,
        job_id=run.job_id,
        run_key=run.key,
        attempt=run.attempt,
        user_id=run.user_id,
        **fields,
    )
