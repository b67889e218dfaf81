"""Generated from the API's OpenAPI document (cli/openapi.json) by datamodel-code-generator:
do not edit. Regenerate with `make cli-models`; a test fails when this file drifts."""

from __future__ import annotations

from enum import StrEnum
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel
from typing import Annotated, Any


class Result(StrEnum):
    """
    created: a BACKFILL run was queued; exists: a run of that occurrence was already there (it ran, or was skipped), nothing done; would_create: a dry run's answer.
    """

    created = "created"
    exists = "exists"
    would_create = "would_create"


class BackfillOccurrence(BaseModel):
    scheduled_at: Annotated[AwareDatetime, Field(title="Scheduled At")]
    run_key: Annotated[str, Field(title="Run Key")]
    result: Annotated[Result, Field(title="Result")]
    """
    created: a BACKFILL run was queued; exists: a run of that occurrence was already there (it ran, or was skipped), nothing done; would_create: a dry run's answer.
    """


class Reason(RootModel[str]):
    root: Annotated[str, Field(max_length=256, min_length=1, title="Reason")]


class BackfillRequest(BaseModel):
    """
    Body of `POST /jobs/{job_id}/backfill`: run the job's occurrences of a past range.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    from_: Annotated[AwareDatetime, Field(alias="from", title="From")]
    """
    First instant of the range.
    """
    to: Annotated[AwareDatetime, Field(title="To")]
    """
    Last instant of the range: after `from`, in the past, at most 100 occurrences from `from`, and only one for a job whose overlap policy is not ALLOW (else 400).
    """
    dry_run: Annotated[bool | None, Field(title="Dry Run")] = False
    """
    List what would run; create nothing.
    """
    reason: Annotated[Reason | None, Field(title="Reason")] = None


class BackfillResult(BaseModel):
    occurrences: Annotated[list[BackfillOccurrence], Field(title="Occurrences")]


class Reason1(RootModel[str]):
    root: Annotated[str, Field(max_length=256, title="Reason")]
    """
    Why, recorded on the run's `error`.
    """


class CancelRequest(BaseModel):
    """
    Body of `POST /jobs/{job_id}/runs/{key}/cancel` (optional).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    reason: Annotated[Reason1 | None, Field(title="Reason")] = None
    """
    Why, recorded on the run's `error`.
    """


class CatchUpPolicy(StrEnum):
    """
    What runs of the occurrences missed while runs could not be taken (an outage): ALL of
    them within the window, only the LATEST (as Kubernetes CronJob), or NONE.
    """

    ALL = "ALL"
    LATEST = "LATEST"
    NONE = "NONE"


class ConcurrencyPolicy(StrEnum):
    """
    A job's overlap policy (Kubernetes' concurrencyPolicy, Temporal's overlap policy): what a
    run does at its second while the job's previous run is still running. Decided by the runner
    then (runner/jobrunner/overlap.py); each run keeps the policy it was created under.
    """

    ALLOW = "ALLOW"
    FORBID = "FORBID"
    BUFFER_ONE = "BUFFER_ONE"
    REPLACE = "REPLACE"


class ErrorBody(BaseModel):
    code: Annotated[str, Field(title="Code")]
    message: Annotated[str, Field(title="Message")]
    details: Annotated[list[dict[str, Any]] | None, Field(title="Details")] = []


class ErrorResponse(BaseModel):
    """
    Every error the API returns has this shape.
    """

    error: ErrorBody


class Gap(StrEnum):
    """
    A wall time the clock jumps over: run it the length of the jump later (SHIFT: 02:30 ->
    03:30), at the first valid time after the jump (NEXT_VALID: 03:00, as cronie and Dagster),
    or not at all that day (SKIP, as EventBridge Scheduler).
    """

    SHIFT = "SHIFT"
    NEXT_VALID = "NEXT_VALID"
    SKIP = "SKIP"


class Description(RootModel[str]):
    root: Annotated[str, Field(max_length=1024, title="Description")]


class PauseAfterFailures(RootModel[int]):
    root: Annotated[int, Field(ge=1, le=100, title="Pause After Failures")]
    """
    Pause the job after this many runs in a row ended FAILED or TIMED_OUT (retries used up); resume clears the count. Unset: never.
    """


class JobStatus(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"


class LateAfterSeconds(RootModel[int]):
    root: Annotated[int, Field(ge=1, le=3600, title="Late After Seconds")]
    """
    Tell when a run's script starts more than this after its scheduled second (once per run, not per retry).
    """


class MissedAfterSeconds(RootModel[int]):
    root: Annotated[int, Field(ge=60, le=86400, title="Missed After Seconds")]
    """
    A dead man's switch: tell when a scheduled run has not SUCCEEDED this long after its scheduled second (failed, still running, or never started).
    """


class Notifications(BaseModel):
    """
    What a job's owner is told about its runs (through the deployment's SNS topic, with the
    owner, job id and event type as message attributes to filter on). All off by default.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    on_failure: Annotated[bool | None, Field(title="On Failure")] = False
    """
    Tell when a run ends FAILED or TIMED_OUT, its retries used up.
    """
    late_after_seconds: Annotated[
        LateAfterSeconds | None, Field(title="Late After Seconds")
    ] = None
    """
    Tell when a run's script starts more than this after its scheduled second (once per run, not per retry).
    """
    missed_after_seconds: Annotated[
        MissedAfterSeconds | None, Field(title="Missed After Seconds")
    ] = None
    """
    A dead man's switch: tell when a scheduled run has not SUCCEEDED this long after its scheduled second (failed, still running, or never started).
    """


class Dst(StrEnum):
    """
    shifted: its wall time did not exist that day (clocks jumped forward) and it runs after the jump; repeated: its wall time occurs twice that day (clocks fell back) and it runs at the first (see docs/scheduling.md).
    """

    shifted = "shifted"
    repeated = "repeated"


class Occurrence(BaseModel):
    at: Annotated[AwareDatetime, Field(title="At")]
    """
    The instant, UTC.
    """
    local: Annotated[AwareDatetime, Field(title="Local")]
    """
    The same instant in the schedule's time zone.
    """
    dst: Annotated[Dst | None, Field(title="Dst")] = None
    """
    shifted: its wall time did not exist that day (clocks jumped forward) and it runs after the jump; repeated: its wall time occurs twice that day (clocks fell back) and it runs at the first (see docs/scheduling.md).
    """


class Repeat(StrEnum):
    """
    A wall time the clock passes twice: run at the FIRST pass, the LAST, or BOTH.
    """

    FIRST = "FIRST"
    LAST = "LAST"
    BOTH = "BOTH"


class Reason2(RootModel[str]):
    root: Annotated[str, Field(max_length=256, min_length=1, title="Reason")]
    """
    Recorded on the run, e.g. a ticket or who asked.
    """


class RunNowRequest(BaseModel):
    """
    Body of `POST /jobs/{job_id}/run` (optional): this run's own parameters, and why.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    parameters: Annotated[dict[str, Any] | None, Field(title="Parameters")] = None
    """
    Given to this run instead of the job's (same limits).
    """
    reason: Annotated[Reason2 | None, Field(title="Reason")] = None
    """
    Recorded on the run, e.g. a ticket or who asked.
    """


class RunStatus(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    DISPATCHING = "DISPATCHING"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"
    WAITING = "WAITING"


class RunTrigger(StrEnum):
    SCHEDULE = "SCHEDULE"
    MANUAL = "MANUAL"
    RETRY = "RETRY"
    BACKFILL = "BACKFILL"


class SchedulePreview(BaseModel):
    schedule: Annotated[str, Field(title="Schedule")]
    timezone: Annotated[str, Field(title="Timezone")]
    occurrences: Annotated[list[Occurrence], Field(title="Occurrences")]


class GatewayMessage(BaseModel):
    """
    An answer of API Gateway itself (e.g. its JWT authorizer's 401), which cannot be customised: {"message": "Unauthorized"}.
    """

    message: Annotated[str, Field(title="Message")]


class AttemptRecord(BaseModel):
    """
    What one finished attempt left behind, kept when the run is retried.
    """

    attempt: Annotated[int, Field(title="Attempt")]
    status: RunStatus
    exit_code: Annotated[int | None, Field(title="Exit Code")] = None
    finished_at: Annotated[AwareDatetime | None, Field(title="Finished At")] = None
    error: Annotated[str | None, Field(title="Error")] = None
    script_started: Annotated[bool | None, Field(title="Script Started")] = True
    """
    False: the attempt's task stopped (or went silent) before any runner claimed it, so its script never started; such an attempt does not count against max_attempts
    """


class CatchUp(BaseModel):
    """
    Missed occurrences (taken more than a minute after their second) are run or recorded
    SKIPPED with why, never silently lost. The default runs every occurrence missed in the
    last hour: a short outage is made up in full, a long one does not end in a stampede.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    policy: CatchUpPolicy | None = CatchUpPolicy.ALL
    window_seconds: Annotated[
        int | None, Field(ge=60, le=604800, title="Window Seconds")
    ] = 3600
    """
    An occurrence missed by more than this is SKIPPED, whatever the policy.
    """


class DstPolicy(BaseModel):
    """
    What daylight saving does to a job's runs. Unset: SHIFT, and FIRST (BOTH for schedules
    whose hour field is `*`, which follow elapsed time, as Vixie cron does).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    gap: Gap | None = None
    repeat: Repeat | None = None


class JobCreate(BaseModel):
    """
    Body of `POST /jobs`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    name: Annotated[
        str,
        Field(
            examples=["nightly-report"],
            max_length=128,
            min_length=1,
            pattern="^[A-Za-z0-9][A-Za-z0-9._-]*$",
            title="Name",
        ),
    ]
    """
    Unique per owner: letters, digits, '.', '_' and '-'.
    """
    schedule: Annotated[
        str,
        Field(
            examples=["30 9 * * MON-FRI"],
            max_length=256,
            min_length=1,
            title="Schedule",
        ),
    ]
    """
    5-field cron (minute hour day-of-month month day-of-week, 0 = Sunday), @hourly/@daily/@weekly/@monthly/@yearly, at(YYYY-MM-DDTHH:MM[:SS]) for one time in the job's zone, or rate(N minutes|hours|days), aligned to the epoch; one that does not parse, or never fires, is a 400.
    """
    timezone: Annotated[
        str | None, Field(examples=["Europe/London"], max_length=64, title="Timezone")
    ] = "UTC"
    """
    IANA time zone name (one the tz database knows, else 400).
    """
    parameters: Annotated[dict[str, Any] | None, Field(title="Parameters")] = {}
    """
    JSON object passed to the script as JOB_PARAMETERS (at most 16 KiB as compact JSON, else 400).
    """
    script: Annotated[str, Field(min_length=1, title="Script")]
    """
    Python source of the script: at most 256 KiB as UTF-8, and it must compile (else 400).
    """
    description: Annotated[Description | None, Field(title="Description")] = None
    timeout_seconds: Annotated[
        int | None, Field(ge=1, le=3600, title="Timeout Seconds")
    ] = 300
    """
    A run is stopped and TIMED_OUT after this.
    """
    max_attempts: Annotated[int | None, Field(ge=1, le=10, title="Max Attempts")] = 3
    """
    Attempts per run, retries included.
    """
    concurrency_policy: ConcurrencyPolicy | None = ConcurrencyPolicy.ALLOW
    """
    What a run does at its second if the job's previous run is still running: ALLOW runs both; FORBID skips it (SKIPPED); BUFFER_ONE waits for the previous one to end (one run waits at most, a further one is SKIPPED); REPLACE cancels the previous one (CANCELLED) and starts as soon as it has stopped.
    """
    notifications: Annotated[Notifications | None, Field(validate_default=True)] = {
        "on_failure": False,
        "late_after_seconds": None,
        "missed_after_seconds": None,
    }
    """
    What the owner is told about runs (SNS); all off by default.
    """
    catch_up: Annotated[CatchUp | None, Field(validate_default=True)] = {
        "policy": "ALL",
        "window_seconds": 3600,
    }
    start_at: Annotated[AwareDatetime | None, Field(title="Start At")] = None
    """
    No run before this instant (the schedule's first occurrence from then).
    """
    end_at: Annotated[AwareDatetime | None, Field(title="End At")] = None
    """
    No run after this instant; then the job has no next run (completed). Must be after start_at and leave the schedule an occurrence from now on (else 400).
    """
    jitter_seconds: Annotated[
        int | None, Field(ge=0, le=3600, title="Jitter Seconds")
    ] = 0
    """
    Start each run up to this many seconds after its scheduled second: the same offset for the same occurrence every time, different across jobs, so jobs that all say `0 * * * *` do not all start at once.
    """
    dst: Annotated[DstPolicy | None, Field(validate_default=True)] = {
        "gap": None,
        "repeat": None,
    }
    """
    What daylight saving does to runs: `gap` for a wall time the clock jumps over (SHIFT, NEXT_VALID, SKIP), `repeat` for one it passes twice (FIRST, LAST, BOTH); unset: SHIFT and FIRST (BOTH for schedules with hour `*`).
    """
    pause_after_failures: Annotated[
        PauseAfterFailures | None, Field(title="Pause After Failures")
    ] = None
    """
    Pause the job after this many runs in a row ended FAILED or TIMED_OUT (retries used up); resume clears the count. Unset: never.
    """


class JobUpdate(BaseModel):
    """
    Body of `PATCH /jobs/{job_id}`: the fields to change; the others stay as they are. Only
    description, start_at and end_at can be cleared with null.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    schedule: Annotated[
        str | None,
        Field(
            examples=["30 9 * * MON-FRI"],
            max_length=256,
            min_length=1,
            title="Schedule",
        ),
    ] = None
    """
    5-field cron (minute hour day-of-month month day-of-week, 0 = Sunday), @hourly/@daily/@weekly/@monthly/@yearly, at(YYYY-MM-DDTHH:MM[:SS]) for one time in the job's zone, or rate(N minutes|hours|days), aligned to the epoch; one that does not parse, or never fires, is a 400.
    """
    timezone: Annotated[
        str | None, Field(examples=["Europe/London"], max_length=64, title="Timezone")
    ] = None
    """
    IANA time zone name (one the tz database knows, else 400).
    """
    parameters: Annotated[dict[str, Any] | None, Field(title="Parameters")] = None
    """
    JSON object passed to the script as JOB_PARAMETERS (at most 16 KiB as compact JSON, else 400).
    """
    script: Annotated[str | None, Field(min_length=1, title="Script")] = None
    """
    Python source of the script: at most 256 KiB as UTF-8, and it must compile (else 400).
    """
    description: Annotated[Description | None, Field(title="Description")] = None
    timeout_seconds: Annotated[
        int | None, Field(ge=1, le=3600, title="Timeout Seconds")
    ] = None
    """
    A run is stopped and TIMED_OUT after this.
    """
    max_attempts: Annotated[int | None, Field(ge=1, le=10, title="Max Attempts")] = None
    """
    Attempts per run, retries included.
    """
    concurrency_policy: ConcurrencyPolicy | None = None
    """
    What a run does at its second if the job's previous run is still running: ALLOW runs both; FORBID skips it (SKIPPED); BUFFER_ONE waits for the previous one to end (one run waits at most, a further one is SKIPPED); REPLACE cancels the previous one (CANCELLED) and starts as soon as it has stopped.
    """
    notifications: Notifications | None = None
    """
    What the owner is told about runs (SNS); all off by default.
    """
    catch_up: CatchUp | None = None
    start_at: Annotated[AwareDatetime | None, Field(title="Start At")] = None
    """
    No run before this instant (the schedule's first occurrence from then).
    """
    end_at: Annotated[AwareDatetime | None, Field(title="End At")] = None
    """
    No run after this instant; then the job has no next run (completed). Must be after start_at and leave the schedule an occurrence from now on (else 400).
    """
    jitter_seconds: Annotated[
        int | None, Field(ge=0, le=3600, title="Jitter Seconds")
    ] = None
    """
    Start each run up to this many seconds after its scheduled second: the same offset for the same occurrence every time, different across jobs, so jobs that all say `0 * * * *` do not all start at once.
    """
    dst: DstPolicy | None = None
    """
    What daylight saving does to runs: `gap` for a wall time the clock jumps over (SHIFT, NEXT_VALID, SKIP), `repeat` for one it passes twice (FIRST, LAST, BOTH); unset: SHIFT and FIRST (BOTH for schedules with hour `*`).
    """
    pause_after_failures: Annotated[
        int | None, Field(ge=1, le=100, title="Pause After Failures")
    ] = None
    """
    Pause the job after this many runs in a row ended FAILED or TIMED_OUT (retries used up); resume clears the count. Unset: never.
    """


class Run(BaseModel):
    """
    A run as stored and returned by the API (keeps the seed's fields).
    """

    key: Annotated[str, Field(title="Key")]
    """
    `<execution_time>-<job_id>`
    """
    job_id: Annotated[str, Field(title="Job Id")]
    user_id: Annotated[str, Field(title="User Id")]
    execution_time: Annotated[int, Field(title="Execution Time")]
    """
    Scheduled second, epoch seconds
    """
    scheduled_at: Annotated[AwareDatetime, Field(title="Scheduled At")]
    trigger: RunTrigger
    status: RunStatus
    attempt: Annotated[int, Field(title="Attempt")]
    max_attempts: Annotated[int, Field(title="Max Attempts")]
    timeout_seconds: Annotated[int, Field(title="Timeout Seconds")]
    not_before: Annotated[int, Field(title="Not Before")]
    """
    Earliest start of the current attempt, epoch seconds
    """
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    updated_at: Annotated[AwareDatetime, Field(title="Updated At")]
    queued_at: Annotated[AwareDatetime | None, Field(title="Queued At")] = None
    dispatched_at: Annotated[AwareDatetime | None, Field(title="Dispatched At")] = None
    started_at: Annotated[AwareDatetime | None, Field(title="Started At")] = None
    finished_at: Annotated[AwareDatetime | None, Field(title="Finished At")] = None
    exit_code: Annotated[int | None, Field(title="Exit Code")] = None
    start_lag_ms: Annotated[int | None, Field(title="Start Lag Ms")] = None
    duration_ms: Annotated[int | None, Field(title="Duration Ms")] = None
    output_tail: Annotated[str | None, Field(title="Output Tail")] = None
    output_bytes: Annotated[int | None, Field(title="Output Bytes")] = None
    output_truncated: Annotated[bool | None, Field(title="Output Truncated")] = None
    output_key: Annotated[str | None, Field(title="Output Key")] = None
    """
    S3 key of the captured output
    """
    task_id: Annotated[str | None, Field(title="Task Id")] = None
    error: Annotated[str | None, Field(title="Error")] = None
    attempts: Annotated[
        list[AttemptRecord] | None, Field(title="Attempts", validate_default=True)
    ] = []
    reason: Annotated[str | None, Field(title="Reason")] = None
    """
    Why it was run now (manual runs)
    """
    parameters_overridden: Annotated[
        bool | None, Field(title="Parameters Overridden")
    ] = None
    """
    A manual run given its own parameters instead of the job's
    """
    deferred: Annotated[str | None, Field(title="Deferred")] = None
    """
    Why the run starts later than its second (its owner's runs_per_minute quota was full then): deferred to `not_before`, never dropped
    """


class RunPage(BaseModel):
    items: Annotated[list[Run], Field(title="Items")]
    next_token: Annotated[str | None, Field(title="Next Token")] = None


class RunSummary(BaseModel):
    """
    A job's latest run, as shown on the job.
    """

    key: Annotated[str, Field(title="Key")]
    status: RunStatus
    trigger: RunTrigger
    scheduled_at: Annotated[AwareDatetime, Field(title="Scheduled At")]
    finished_at: Annotated[AwareDatetime | None, Field(title="Finished At")] = None


class SchedulePreviewRequest(BaseModel):
    """
    Body of `POST /schedules/preview`: a schedule to try before creating a job with it.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    schedule: Annotated[
        str,
        Field(
            examples=["30 9 * * MON-FRI"],
            max_length=256,
            min_length=1,
            title="Schedule",
        ),
    ]
    """
    5-field cron (minute hour day-of-month month day-of-week, 0 = Sunday), @hourly/@daily/@weekly/@monthly/@yearly, at(YYYY-MM-DDTHH:MM[:SS]) for one time in the job's zone, or rate(N minutes|hours|days), aligned to the epoch; one that does not parse, or never fires, is a 400.
    """
    timezone: Annotated[
        str | None, Field(examples=["Europe/London"], max_length=64, title="Timezone")
    ] = "UTC"
    """
    IANA time zone name (one the tz database knows, else 400).
    """
    dst: Annotated[DstPolicy | None, Field(validate_default=True)] = {
        "gap": None,
        "repeat": None,
    }
    """
    What daylight saving does to runs: `gap` for a wall time the clock jumps over (SHIFT, NEXT_VALID, SKIP), `repeat` for one it passes twice (FIRST, LAST, BOTH); unset: SHIFT and FIRST (BOTH for schedules with hour `*`).
    """
    count: Annotated[int | None, Field(ge=1, le=100, title="Count")] = 10
    """
    How many occurrences.
    """
    after: Annotated[AwareDatetime | None, Field(title="After")] = None
    """
    From when (default: now).
    """


class Job(BaseModel):
    """
    A job as stored and as returned by the API.
    """

    job_id: Annotated[str, Field(title="Job Id")]
    user_id: Annotated[str, Field(title="User Id")]
    name: Annotated[str, Field(title="Name")]
    schedule: Annotated[str, Field(title="Schedule")]
    timezone: Annotated[str, Field(title="Timezone")]
    parameters: Annotated[dict[str, Any], Field(title="Parameters")]
    description: Annotated[str | None, Field(title="Description")] = None
    status: JobStatus
    next_run_at: Annotated[AwareDatetime | None, Field(title="Next Run At")]
    """
    Next scheduled run, ISO 8601 with the job's time zone offset.
    """
    script_sha256: Annotated[str, Field(title="Script Sha256")]
    timeout_seconds: Annotated[int, Field(title="Timeout Seconds")]
    max_attempts: Annotated[int, Field(title="Max Attempts")]
    concurrency_policy: ConcurrencyPolicy | None = ConcurrencyPolicy.ALLOW
    notifications: Annotated[Notifications | None, Field(validate_default=True)] = {
        "on_failure": False,
        "late_after_seconds": None,
        "missed_after_seconds": None,
    }
    catch_up: Annotated[CatchUp | None, Field(validate_default=True)] = {
        "policy": "ALL",
        "window_seconds": 3600,
    }
    start_at: Annotated[AwareDatetime | None, Field(title="Start At")] = None
    end_at: Annotated[AwareDatetime | None, Field(title="End At")] = None
    jitter_seconds: Annotated[int | None, Field(title="Jitter Seconds")] = 0
    dst: Annotated[DstPolicy | None, Field(validate_default=True)] = {
        "gap": None,
        "repeat": None,
    }
    pause_after_failures: Annotated[int | None, Field(title="Pause After Failures")] = (
        None
    )
    paused_reason: Annotated[str | None, Field(title="Paused Reason")] = None
    """
    Why the job paused itself (after repeated failures).
    """
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    updated_at: Annotated[AwareDatetime, Field(title="Updated At")]
    last_run: RunSummary | None = None
    """
    The job's latest run whose second has come, as it stands (shown by GET /jobs and GET /jobs/{job_id}).
    """


class JobPage(BaseModel):
    items: Annotated[list[Job], Field(title="Items")]
    next_token: Annotated[str | None, Field(title="Next Token")] = None
    """
    Pass as `next_token` to get the next page; absent on the last.
    """
