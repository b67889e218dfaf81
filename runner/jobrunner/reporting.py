"""Reports to the scheduler, each a PUT to a presigned URL: started (only for a run still
running after the pack's report interval), output (only when the tail does not hold it all),
finished (alone, or in a batch of its pack claim's runs: batching.py), and the entries of the
manifest that could not be parsed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from jobrunner.batching import FinishedBatches
from jobrunner.log import iso_ms, log
from jobrunner.manifest import RunSpec
from jobrunner.outcome import FAILED, Outcome
from jobrunner.transfer import TransferError, http_put


def report_started_if_still_running(
    spec: RunSpec, started_at: float, lag_ms: int, ended: threading.Event, after: float | None
) -> None:
    """The started report, `after` seconds after the start if the script is still running
    then: a short run goes straight to its finished report, which carries its start too."""
    if after and ended.wait(after):
        return
    report_started(spec, started_at, lag_ms)


def report_started(spec: RunSpec, started_at: float, lag_ms: int) -> None:
    report = {
        **spec.ids,
        "scheduled_at": spec.scheduled_at,
        "not_before": spec.not_before,
        "started_at": iso_ms(started_at),
        "start_lag_ms": lag_ms,
    }
    try:
        http_put(spec.started_url, json.dumps(report).encode(), "application/json")
    except TransferError as exc:
        log("report_failed", "error", **spec.ids, report="started", error=str(exc))


def finished_report(spec: RunSpec, outcome: Outcome, output_uploaded: bool) -> dict[str, Any]:
    return {
        **spec.ids,
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "scheduled_at": spec.scheduled_at,
        "not_before": spec.not_before,
        "started_at": iso_ms(outcome.started_at) if outcome.started_at is not None else None,
        "finished_at": iso_ms(outcome.finished_at or time.time()),
        "start_lag_ms": outcome.start_lag_ms,
        "duration_ms": outcome.duration_ms,
        "output_tail": outcome.tail.decode("utf-8", errors="replace"),
        "output_bytes": outcome.output_bytes,
        "output_truncated": outcome.output_truncated,
        "output_uploaded": output_uploaded,
        "error": outcome.error,
    }


def deliver(
    spec: RunSpec,
    outcome: Outcome,
    output_path: str | None,
    batches: FinishedBatches | None = None,
) -> bool:
    """PUT the output (if the tail does not already hold all of it), then the finished report
    (in a batch of its pack claim's runs, given `batches`). True when the report arrived."""
    uploaded = False
    if output_path is not None and outcome.output_bytes > len(outcome.tail):
        try:
            with open(output_path, "rb") as handle:
                body = handle.read()
            http_put(spec.output_url, body, "text/plain")
            uploaded = True
        except (OSError, TransferError) as exc:
            log("report_failed", "error", **spec.ids, report="output", error=str(exc))
    report = finished_report(spec, outcome, uploaded)
    sent = batches.send(spec, report) if batches is not None else send_finished(spec, report)
    if not sent:
        return False
    log(
        "run_finished",
        **spec.ids,
        status=outcome.status,
        exit_code=outcome.exit_code,
        duration_ms=outcome.duration_ms,
        output_bytes=outcome.output_bytes,
        error=outcome.error,
    )
    return True


def send_finished(spec: RunSpec, report: dict[str, Any]) -> bool:
    """PUT the finished report to the run's own URL. True when it arrived."""
    try:
        http_put(spec.finished_url, json.dumps(report).encode(), "application/json")
    except TransferError as exc:
        log("report_failed", "error", **spec.ids, report="finished", error=str(exc))
        return False
    return True


def report_invalid(entry: Mapping[str, Any], error: str) -> bool:
    """A manifest entry that could not be parsed: report it FAILED if it names a finished URL."""
    url = entry.get("finished_url")
    log(
        "run_invalid",
        "error",
        job_id=entry.get("job_id"),
        run_key=entry.get("run_key"),
        error=error,
    )
    if not isinstance(url, str):
        return False
    report = {
        "job_id": entry.get("job_id"),
        "run_key": entry.get("run_key"),
        "attempt": entry.get("attempt"),
        "status": FAILED,
        "exit_code": None,
        "finished_at": iso_ms(time.time()),
        "error": f"invalid manifest entry: {error}",
    }
    try:
        http_put(url, json.dumps(report).encode(), "application/json")
    except TransferError:
        return False
    return True
