"""Runs: one scheduled (or manual) occurrence of a job, retried under the same key.

Status flow of one run: PENDING -> QUEUED -> DISPATCHING -> DISPATCHED -> RUNNING -> SUCCEEDED |
FAILED | TIMED_OUT (a run whose script ends within the started-report interval, 10 s, goes from
DISPATCHED straight to its end); SKIPPED (by the catch-up policy when taken, by the overlap
policy at its second, or before it starts when its job was paused or deleted:
jobs.job_models.why_no_run_starts); a run that must wait for the job's previous one
(BUFFER_ONE, REPLACE) is WAITING between DISPATCHED and RUNNING. A failed attempt with attempts
left goes back to PENDING with attempt + 1 and `not_before` set by exponential backoff. Any
unfinished run can be CANCELLED (by its owner, or by a REPLACE job's next run): never retried.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scheduler import keys
from scheduler.times import epoch, from_epoch


class RunStatus(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    DISPATCHING = "DISPATCHING"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"  # not run: catch-up, overlap, or its job paused/deleted (`error`)
    CANCELLED = "CANCELLED"  # stopped on request: never retried
    WAITING = "WAITING"  # its task waits for the job's previous run to end (BUFFER_ONE, REPLACE)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.SKIPPED,
        RunStatus.CANCELLED,
    }
)
IN_FLIGHT = frozenset(
    {RunStatus.DISPATCHING, RunStatus.DISPATCHED, RunStatus.WAITING, RunStatus.RUNNING}
)


class ConcurrencyPolicy(StrEnum):
    """A job's overlap policy (Kubernetes' concurrencyPolicy, Temporal's overlap policy): what a
    run does at its second while the job's previous run is still running. Decided by the runner
    then (runner/jobrunner/overlap.py); each run keeps the policy it was created under."""

    ALLOW = "ALLOW"
    FORBID = "FORBID"
    BUFFER_ONE = "BUFFER_ONE"
    REPLACE = "REPLACE"


class RunTrigger(StrEnum):
    SCHEDULE = "SCHEDULE"
    MANUAL = "MANUAL"
    RETRY = "RETRY"
    BACKFILL = "BACKFILL"


class Notifications(BaseModel):
    """What a job's owner is told about its runs (through the deployment's SNS topic, with the
    owner, job id and event type as message attributes to filter on). All off by default."""

    model_config = ConfigDict(extra="forbid")

    on_failure: bool = Field(
        default=False, description="Tell when a run ends FAILED or TIMED_OUT, its retries used up."
    )
    late_after_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="Tell when a run's script starts more than this after its scheduled second "
        "(once per run, not per retry).",
    )
    missed_after_seconds: int | None = Field(
        default=None,
        ge=60,
        le=86400,
        description="A dead man's switch: tell when a scheduled run has not SUCCEEDED this long "
        "after its scheduled second (failed, still running, or never started).",
    )


class RunEvent(StrEnum):
    RUN_FAILED = "RUN_FAILED"
    RUN_LATE = "RUN_LATE"
    RUN_MISSED = "RUN_MISSED"
    JOB_PAUSED = "JOB_PAUSED"


class RunNotification(BaseModel):
    """What a notification carries (the SNS message body, as JSON)."""

    event_type: RunEvent
    user_id: str
    job_id: str
    run_key: str
    attempt: int
    scheduled_at: datetime
    status: RunStatus
    exit_code: int | None = None
    start_lag_ms: int | None = None
    output_tail: str | None = None
    error: str | None = None
    link: str = Field(description="The run in the API: GET it with the owner's token.")


class AttemptRecord(BaseModel):
    """What one finished attempt left behind, kept when the run is retried."""

    attempt: int
    status: RunStatus
    exit_code: int | None = None
    finished_at: datetime | None = None
    error: str | None = None
    script_started: bool = Field(
        default=True,
        description="False: the attempt's task stopped (or went silent) before any runner "
        "claimed it, so its script never started; such an attempt does not count against "
        "max_attempts",
    )


class Run(BaseModel):
    """A run as stored and returned by the API (keeps the seed's fields)."""

    key: str = Field(description="`<execution_time>-<job_id>`")
    job_id: str
    user_id: str
    execution_time: int = Field(description="Scheduled second, epoch seconds")
    scheduled_at: datetime
    trigger: RunTrigger
    status: RunStatus
    attempt: int
    max_attempts: int
    timeout_seconds: int
    not_before: int = Field(description="Earliest start of the current attempt, epoch seconds")
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None = None
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    start_lag_ms: int | None = None
    duration_ms: int | None = None
    output_tail: str | None = None
    output_bytes: int | None = None
    output_truncated: bool | None = None
    output_key: str | None = Field(default=None, description="S3 key of the captured output")
    task_id: str | None = None
    error: str | None = None
    attempts: list[AttemptRecord] = []
    reason: str | None = Field(default=None, description="Why it was run now (manual runs)")
    parameters_overridden: bool | None = Field(
        default=None, description="A manual run given its own parameters instead of the job's"
    )
    deferred: str | None = Field(
        default=None,
        description="Why the run starts later than its second (its owner's runs_per_minute "
        "quota was full then): deferred to `not_before`, never dropped",
    )
    # The job's notifications when the run was created; stored with the run, not shown.
    notifications: Notifications | None = Field(default=None, exclude=True)
    pause_after_failures: int | None = Field(default=None, exclude=True)
    overlap: ConcurrencyPolicy = Field(default=ConcurrencyPolicy.ALLOW, exclude=True)
    # The attempt holds one of its owner's concurrent_runs places (taken by the executor at
    # dispatch, given back by the write that ends the attempt); not shown.
    holds_place: bool | None = Field(default=None, exclude=True)
    # The pack the attempt was first claimed for dispatch in: every task that holds it takes
    # that pack's claim objects (runner/jobrunner/claims.py); not shown.
    claim_pack: str | None = Field(default=None, exclude=True)
    # The second the attempt was due when first claimed: with claim_pack, names its pack claim.
    claim_second: int | None = Field(default=None, exclude=True)
    # While the run is in the in-flight index: when the sweep concludes it; not shown.
    deadline: int | None = Field(default=None, exclude=True)
    # The executor's claim on the attempt (also the id of the pack place it took); not shown.
    claim_id: str | None = Field(default=None, exclude=True)

    @property
    def unstarted_attempts(self) -> int:
        """Earlier attempts whose script never started (not counted against max_attempts)."""
        return sum(1 for attempt in self.attempts if not attempt.script_started)


class RunSummary(BaseModel):
    """A job's latest run, as shown on the job."""

    key: str
    status: RunStatus
    trigger: RunTrigger
    scheduled_at: datetime
    finished_at: datetime | None = None

    @classmethod
    def of(cls, run: Run) -> RunSummary:
        return cls(
            key=run.key,
            status=run.status,
            trigger=run.trigger,
            scheduled_at=run.scheduled_at,
            finished_at=run.finished_at,
        )


def new_run(
    *,
    job_id: str,
    user_id: str,
    scheduled_second: int,
    trigger: RunTrigger,
    max_attempts: int,
    timeout_seconds: int,
    now: datetime,
    notifications: Notifications | None = None,
    pause_after_failures: int | None = None,
    overlap: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
) -> Run:
    """A run as it is first written: PENDING, attempt 1, startable at its scheduled second.
    The one place a Run is born, for the watcher's scheduled runs and for run now alike."""
    scheduled = from_epoch(scheduled_second)
    return Run(
        key=keys.run_key(scheduled, job_id),
        job_id=job_id,
        user_id=user_id,
        execution_time=epoch(scheduled),
        scheduled_at=scheduled,
        trigger=trigger,
        status=RunStatus.PENDING,
        attempt=1,
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        not_before=epoch(scheduled),
        created_at=now,
        updated_at=now,
        notifications=notifications,
        pause_after_failures=pause_after_failures,
        overlap=overlap,
    )


class CancelRequest(BaseModel):
    """Body of `POST /jobs/{job_id}/runs/{key}/cancel` (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        default=None, max_length=256, description="Why, recorded on the run's `error`."
    )


class RunPage(BaseModel):
    items: list[Run]
    next_token: str | None = None


class RunReport(BaseModel):
    """What the runner PUTs (started.json / finished.json) through its presigned URLs."""

    job_id: str
    run_key: str
    attempt: int
    started_at: datetime | None = None
    start_lag_ms: int | None = None
    status: RunStatus | None = None
    exit_code: int | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    output_tail: str | None = None
    output_bytes: int | None = None
    output_truncated: bool | None = None
    # False when the whole output fits in output_tail and no output object was written.
    output_uploaded: bool | None = None
    error: str | None = None
    # waiting.json: the run waits for the job's lock, held by `waiting_for` until at most
    # `wait_until`; a REPLACE run names the runs to cancel.
    waiting_for: str | None = None
    wait_until: int | None = None
    replaces: list[str] | None = None

    def as_fields(self) -> dict[str, Any]:
        return self.model_dump(
            exclude={"job_id", "run_key", "attempt", "waiting_for", "wait_until", "replaces"},
            exclude_none=True,
        )
