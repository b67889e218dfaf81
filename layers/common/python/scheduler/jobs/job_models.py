"""Job models: what clients send (create, update, list filters), what they get back, and the job
itself; the field checks are shared by create and update."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from scheduler.runs.run_models import (
    ConcurrencyPolicy,
    Notifications,
    Run,
    RunSummary,
    RunTrigger,
    new_run,
)
from scheduler.schedule import cron
from scheduler.schedule.cron import DstPolicy

MAX_SCRIPT_BYTES = 256 * 1024
MAX_PARAMETERS_BYTES = 16 * 1024
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# OpenAPI formats of ours, for what JSON Schema cannot state (the field's description says what
# each must be; tests/openapi_fuzzing.py generates values of each for the fuzz tests).
SCHEDULE_FORMAT = "job-schedule"
TIME_ZONE_FORMAT = "iana-time-zone"
SCRIPT_FORMAT = "python-script"
PAGE_TOKEN_FORMAT = "page-token"  # noqa: S105  # a format's name, not a secret
# RFC 3339's date-time (OpenAPI's `format: date-time`): pydantic alone would also take a number
# (seconds since the epoch), a time without seconds or a space for the `T`.
_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


class JobStatus(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"


class CatchUpPolicy(StrEnum):
    """What runs of the occurrences missed while runs could not be taken (an outage): ALL of
    them within the window, only the LATEST (as Kubernetes CronJob), or NONE."""

    ALL = "ALL"
    LATEST = "LATEST"
    NONE = "NONE"


class CatchUp(BaseModel):
    """Missed occurrences (taken more than a minute after their second) are run or recorded
    SKIPPED with why, never silently lost. The default runs every occurrence missed in the
    last hour: a short outage is made up in full, a long one does not end in a stampede."""

    model_config = ConfigDict(extra="forbid")

    policy: CatchUpPolicy = CatchUpPolicy.ALL
    window_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 86400,
        description="An occurrence missed by more than this is SKIPPED, whatever the policy.",
    )


def _check_date_time(value: Any) -> Any:
    if isinstance(value, str) and _DATE_TIME.fullmatch(value):
        return value
    if isinstance(value, datetime):  # from Python, not from a request
        return value
    raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T09:30:00Z")


# An instant as the API takes it (body or query): RFC 3339 text with an offset, nothing else.
Instant = Annotated[AwareDatetime, BeforeValidator(_check_date_time)]


def _check_cron(value: str) -> str:
    try:
        cron.normalize(value)
    except cron.CronError as exc:
        raise ValueError(str(exc)) from None
    return " ".join(value.split())


def _check_zone(value: str) -> str:
    try:
        cron.zone(value)
    except cron.CronError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_parameters(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_PARAMETERS_BYTES:
        raise ValueError(f"parameters are {size} bytes as JSON; at most {MAX_PARAMETERS_BYTES}")
    return value


def _check_script(value: str) -> str:
    size = len(value.encode())
    if size > MAX_SCRIPT_BYTES:
        raise ValueError(f"script is {size} bytes; at most {MAX_SCRIPT_BYTES}")
    try:
        compile(value, "<script>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ValueError(f"script does not compile: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"script does not compile: {exc}") from None
    return value


# The fields a client sets, with their checks: shared by create and update.
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=NAME_PATTERN,
        description="Unique per owner: letters, digits, '.', '_' and '-'.",
        examples=["nightly-report"],
    ),
]
Schedule = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="5-field cron (minute hour day-of-month month day-of-week, 0 = Sunday), "
        "@hourly/@daily/@weekly/@monthly/@yearly, at(YYYY-MM-DDTHH:MM[:SS]) for one time in "
        "the job's zone, or rate(N minutes|hours|days), aligned to the epoch; one that does "
        "not parse, or never fires, is a 400.",
        examples=["30 9 * * MON-FRI"],
        json_schema_extra={"format": SCHEDULE_FORMAT},
    ),
    AfterValidator(_check_cron),
]
TimeZone = Annotated[
    str,
    Field(
        max_length=64,
        description="IANA time zone name (one the tz database knows, else 400).",
        examples=["Europe/London"],
        json_schema_extra={"format": TIME_ZONE_FORMAT},
    ),
    AfterValidator(_check_zone),
]
Parameters = Annotated[
    dict[str, Any],
    Field(
        description="JSON object passed to the script as JOB_PARAMETERS (at most 16 KiB as "
        "compact JSON, else 400)."
    ),
    AfterValidator(_check_parameters),
]
Script = Annotated[
    str,
    Field(
        min_length=1,
        description="Python source of the script: at most 256 KiB as UTF-8, and it must "
        "compile (else 400).",
        json_schema_extra={"format": SCRIPT_FORMAT},
    ),
    AfterValidator(_check_script),
]
Description = Annotated[str, Field(max_length=1024)]
TimeoutSeconds = Annotated[
    int, Field(ge=1, le=3600, description="A run is stopped and TIMED_OUT after this.")
]
MaxAttempts = Annotated[int, Field(ge=1, le=10, description="Attempts per run, retries included.")]
Concurrency = Annotated[
    ConcurrencyPolicy,
    Field(
        description="What a run does at its second if the job's previous run is still running: "
        "ALLOW runs both; FORBID skips it (SKIPPED); BUFFER_ONE waits for the previous one to "
        "end (one run waits at most, a further one is SKIPPED); REPLACE cancels the previous "
        "one (CANCELLED) and starts as soon as it has stopped."
    ),
]


JobNotifications = Annotated[
    Notifications, Field(description="What the owner is told about runs (SNS); all off by default.")
]


StartAt = Annotated[
    Instant | None,
    Field(description="No run before this instant (the schedule's first occurrence from then)."),
]
EndAt = Annotated[
    Instant | None,
    Field(
        description="No run after this instant; then the job has no next run (completed). "
        "Must be after start_at and leave the schedule an occurrence from now on (else 400)."
    ),
]


Jitter = Annotated[
    int,
    Field(
        ge=0,
        le=3600,
        description="Start each run up to this many seconds after its scheduled second: the "
        "same offset for the same occurrence every time, different across jobs, so jobs that "
        "all say `0 * * * *` do not all start at once.",
    ),
]


JobDst = Annotated[
    DstPolicy,
    Field(
        description="What daylight saving does to runs: `gap` for a wall time the clock jumps "
        "over (SHIFT, NEXT_VALID, SKIP), `repeat` for one it passes twice (FIRST, LAST, BOTH); "
        "unset: SHIFT and FIRST (BOTH for schedules with hour `*`)."
    ),
]


PauseAfterFailures = Annotated[
    int | None,
    Field(
        ge=1,
        le=100,
        description="Pause the job after this many runs in a row ended FAILED or TIMED_OUT "
        "(retries used up); resume clears the count. Unset: never.",
    ),
]


def check_bounds(start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise ValueError("end_at must be after start_at")


class JobCreate(BaseModel):
    """Body of `POST /jobs`."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    schedule: Schedule
    timezone: TimeZone = "UTC"
    parameters: Parameters = {}
    script: Script
    description: Description | None = None
    timeout_seconds: TimeoutSeconds = 300
    max_attempts: MaxAttempts = 3
    concurrency_policy: Concurrency = ConcurrencyPolicy.ALLOW
    notifications: JobNotifications = Notifications()
    catch_up: CatchUp = CatchUp()
    start_at: StartAt = None
    end_at: EndAt = None
    jitter_seconds: Jitter = 0
    dst: JobDst = DstPolicy()
    pause_after_failures: PauseAfterFailures = None

    @model_validator(mode="after")
    def _bounds_in_order(self) -> JobCreate:
        check_bounds(self.start_at, self.end_at)
        return self


def _may_be_left_out_not_null(schema: dict[str, Any]) -> None:
    """The OpenAPI schema of a PATCH field that may be left out but not sent as null (the
    service refuses null for it): its `null` option and null default dropped."""
    options = [option for option in schema.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options
    schema.pop("default", None)


UNSET_NOT_NULL: Any = Field(default=None, json_schema_extra=_may_be_left_out_not_null)


class JobUpdate(BaseModel):
    """Body of `PATCH /jobs/{job_id}`: the fields to change; the others stay as they are. Only
    description, start_at and end_at can be cleared with null."""

    model_config = ConfigDict(extra="forbid")

    schedule: Schedule | None = UNSET_NOT_NULL
    timezone: TimeZone | None = UNSET_NOT_NULL
    parameters: Parameters | None = UNSET_NOT_NULL
    script: Script | None = UNSET_NOT_NULL
    description: Description | None = None
    timeout_seconds: TimeoutSeconds | None = UNSET_NOT_NULL
    max_attempts: MaxAttempts | None = UNSET_NOT_NULL
    concurrency_policy: Concurrency | None = UNSET_NOT_NULL
    notifications: JobNotifications | None = UNSET_NOT_NULL
    catch_up: CatchUp | None = UNSET_NOT_NULL
    start_at: StartAt = None
    end_at: EndAt = None
    jitter_seconds: Jitter | None = UNSET_NOT_NULL
    dst: JobDst | None = UNSET_NOT_NULL
    pause_after_failures: PauseAfterFailures = UNSET_NOT_NULL


class Job(BaseModel):
    """A job as stored and as returned by the API."""

    job_id: str
    user_id: str
    name: str
    schedule: str
    timezone: str
    parameters: dict[str, Any]
    description: str | None = None
    status: JobStatus
    next_run_at: datetime | None = Field(
        description="Next scheduled run, ISO 8601 with the job's time zone offset."
    )
    script_sha256: str
    timeout_seconds: int
    max_attempts: int
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    notifications: Notifications = Notifications()
    catch_up: CatchUp = CatchUp()
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter_seconds: int = 0
    dst: DstPolicy = DstPolicy()
    pause_after_failures: int | None = None
    paused_reason: str | None = Field(
        default=None, description="Why the job paused itself (after repeated failures)."
    )
    created_at: datetime
    updated_at: datetime
    last_run: RunSummary | None = Field(
        default=None,
        description="The job's latest run whose second has come, as it stands (shown by "
        "GET /jobs and GET /jobs/{job_id}).",
    )

    def next_run_after(self, after: datetime) -> datetime | None:
        """The job's first occurrence after `after`, within its bounds and by its DST policy;
        None when none is left (CronError for a schedule that never fires)."""
        return cron.next_within(
            self.schedule, self.timezone, after, self.start_at, self.end_at, self.dst
        )

    def new_run(self, second: int, trigger: RunTrigger, now: datetime) -> Run:
        """A run of this job due at `second`, with what it snapshots of the job."""
        return new_run(
            job_id=self.job_id,
            user_id=self.user_id,
            scheduled_second=second,
            trigger=trigger,
            max_attempts=self.max_attempts,
            timeout_seconds=self.timeout_seconds,
            now=now,
            notifications=self.notifications,
            pause_after_failures=self.pause_after_failures,
            overlap=self.concurrency_policy,
        )


def why_no_run_starts(job: Job | None) -> str | None:
    """Why a run of this job must not start now (it is paused, or gone), as the run's SKIPPED
    error; None when it may. A paused job starts nothing, as Kubernetes' `suspend`: its pending
    retries and its queued runs (scheduled, manual or backfill) are skipped when they would
    have started; a run already handed to its task runs to its end."""
    if job is None:
        return "skipped: the job was deleted before this run started"
    if job.status is not JobStatus.ACTIVE:
        return "skipped: the job was paused before this run started"
    return None


class JobPage(BaseModel):
    items: list[Job]
    next_token: str | None = Field(
        default=None, description="Pass as `next_token` to get the next page; absent on the last."
    )


class JobFilters(BaseModel):
    """Query of `GET /jobs`: every filter is optional; all given must hold."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    name: Annotated[str | None, Field(max_length=128, description="Name prefix.")] = None
    created_after: Instant | None = None
    created_before: Instant | None = None
    next_run_after: Instant | None = None
    next_run_before: Instant | None = None


@dataclass(frozen=True)
class ListPage:
    """One page of an owner's jobs as the store reads it."""

    jobs: list[Job]
    position: dict[str, str] | None  # where the next page starts, None on the last page


class RunNowRequest(BaseModel):
    """Body of `POST /jobs/{job_id}/run` (optional): this run's own parameters, and why."""

    model_config = ConfigDict(extra="forbid")

    parameters: Parameters | None = Field(
        default=None, description="Given to this run instead of the job's (same limits)."
    )
    reason: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="Recorded on the run, e.g. a ticket or who asked."
    )


class SchedulePreviewRequest(BaseModel):
    """Body of `POST /schedules/preview`: a schedule to try before creating a job with it."""

    model_config = ConfigDict(extra="forbid")

    schedule: Schedule
    timezone: TimeZone = "UTC"
    dst: JobDst = DstPolicy()
    count: Annotated[int, Field(ge=1, le=100, description="How many occurrences.")] = 10
    after: Instant | None = Field(default=None, description="From when (default: now).")


class Occurrence(BaseModel):
    at: datetime = Field(description="The instant, UTC.")
    local: datetime = Field(description="The same instant in the schedule's time zone.")
    dst: Literal["shifted", "repeated"] | None = Field(
        default=None,
        description="shifted: its wall time did not exist that day (clocks jumped forward) and "
        "it runs after the jump; repeated: its wall time occurs twice that day (clocks fell "
        "back) and it runs at the first (see docs/scheduling.md).",
    )


class SchedulePreview(BaseModel):
    schedule: str
    timezone: str
    occurrences: list[Occurrence]


MAX_BACKFILL = 100


class BackfillRequest(BaseModel):
    """Body of `POST /jobs/{job_id}/backfill`: run the job's occurrences of a past range."""

    model_config = ConfigDict(extra="forbid")

    start: Instant = Field(alias="from", description="First instant of the range.")
    end: Instant = Field(
        alias="to",
        description="Last instant of the range: after `from`, in the past, at most 100 "
        "occurrences from `from`, and only one for a job whose overlap policy is not ALLOW "
        "(else 400).",
    )
    dry_run: bool = Field(default=False, description="List what would run; create nothing.")
    reason: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _range_in_order(self) -> BackfillRequest:
        if self.end <= self.start:
            raise ValueError("`to` must be after `from`")
        return self


class BackfillOccurrence(BaseModel):
    scheduled_at: datetime
    run_key: str
    result: Literal["created", "exists", "would_create"] = Field(
        description="created: a BACKFILL run was queued; exists: a run of that occurrence was "
        "already there (it ran, or was skipped), nothing done; would_create: a dry run's answer."
    )


class BackfillResult(BaseModel):
    occurrences: list[BackfillOccurrence]
