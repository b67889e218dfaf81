"""What the commands print: tables and key/value blocks for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from scheduler_cli.api_models import BackfillResult, Job, Run, SchedulePreview

_json_errors = False


def json_errors(on: bool) -> None:
    """With --json, errors go to stderr as JSON too (`CliError.show`)."""
    global _json_errors  # noqa: PLW0603 (one command per process; reset by the root command)
    _json_errors = on


def errors_as_json() -> bool:
    return _json_errors


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def when(moment: datetime | None) -> str:
    return moment.isoformat(sep=" ", timespec="seconds") if moment else "-"


def duration(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "-"
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    seconds = milliseconds / 1000
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    if not rows:
        return
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        return "  ".join(padded).rstrip()

    click.echo(line(headers))
    for row in rows:
        click.echo(line(row))


def fields(pairs: Sequence[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key.ljust(width)}  {value}")


def compact(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return str(value)


# -- jobs ----------------------------------------------------------------------------------


def job_rows(jobs: Sequence[Job]) -> None:
    table(
        ("JOB ID", "NAME", "SCHEDULE", "TIMEZONE", "STATUS", "NEXT RUN", "LAST RUN"),
        [
            (
                job.job_id,
                job.name,
                job.schedule,
                job.timezone,
                job.status.value,
                when(job.next_run_at),
                f"{job.last_run.status.value} {when(job.last_run.scheduled_at)}"
                if job.last_run
                else "-",
            )
            for job in jobs
        ],
    )


def job_details(job: Job, data: dict[str, Any]) -> None:
    """Every field the API returned, in its order; datetimes and objects made readable."""
    pairs = []
    for key, value in data.items():
        if key == "last_run" and job.last_run is not None:
            last = job.last_run
            shown = f"{last.status.value} ({last.trigger.value}) {when(last.scheduled_at)}"
            pairs.append((key, f"{shown}  key {last.key}"))
        elif key in ("next_run_at", "created_at", "updated_at", "start_at", "end_at"):
            pairs.append((key, when(getattr(job, key))))
        else:
            pairs.append((key, compact(value)))
    fields(pairs)


# -- runs ----------------------------------------------------------------------------------


def run_rows(runs: Sequence[Run]) -> None:
    table(
        ("KEY", "TRIGGER", "STATUS", "ATTEMPT", "SCHEDULED", "STARTED", "DURATION", "EXIT"),
        [
            (
                run.key,
                run.trigger.value,
                run.status.value,
                f"{run.attempt}/{run.max_attempts}",
                when(run.scheduled_at),
                when(run.started_at),
                duration(run.duration_ms),
                compact(run.exit_code),
            )
            for run in runs
        ],
    )


def run_details(run: Run, data: dict[str, Any]) -> None:
    pairs = []
    for key, value in data.items():
        if key == "output_tail":
            continue
        if key in ("start_lag_ms", "duration_ms"):
            pairs.append((key.removesuffix("_ms"), duration(value)))
        elif key.endswith("_at") and isinstance(value, str):
            pairs.append((key, when(getattr(run, key))))
        else:
            pairs.append((key, compact(value)))
    fields(pairs)
    if run.output_tail:
        click.echo("output_tail:")
        click.echo(run.output_tail, nl=not run.output_tail.endswith("\n"))


def run_summary(run: Run) -> str:
    """One line: where the run stands."""
    text = f"{run.status.value}"
    if run.max_attempts > 1:
        text += f" (attempt {run.attempt}/{run.max_attempts})"
    if run.exit_code is not None:
        text += f", exit code {run.exit_code}"
    if run.duration_ms is not None:
        text += f", {duration(run.duration_ms)}"
    if run.error:
        text += f": {run.error}"
    return text


# -- schedules -----------------------------------------------------------------------------


def preview_rows(preview: SchedulePreview) -> None:
    click.echo(f"{preview.schedule} in {preview.timezone}:")
    table(
        ("UTC", "LOCAL", "DST"),
        [
            (when(item.at), when(item.local), item.dst.value if item.dst else "")
            for item in preview.occurrences
        ],
    )


def backfill_rows(result: BackfillResult) -> None:
    if not result.occurrences:
        click.echo("no occurrence in that range")
        return
    table(
        ("SCHEDULED", "RUN KEY", "RESULT"),
        [(when(item.scheduled_at), item.run_key, item.result.value) for item in result.occurrences],
    )
