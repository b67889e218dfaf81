"""Routes of the job API, one router per Lambda function; each route is one call into a service."""

from __future__ import annotations

from typing import Annotated, cast

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from pydantic import Field

from scheduler import wiring
from scheduler.api.error_responses import responses
from scheduler.errors import (
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyKeyStale,
    InvalidInput,
    JobBusy,
    JobNameConflict,
    JobNotFound,
    QuotaExceeded,
    Unauthenticated,
    UnsupportedMediaType,
)
from scheduler.jobs.job_models import (
    PAGE_TOKEN_FORMAT,
    Instant,
    Job,
    JobCreate,
    JobFilters,
    JobPage,
    JobStatus,
    JobUpdate,
    SchedulePreview,
    SchedulePreviewRequest,
)

# What an id in a path can be: the ids this API hands out (job ids are 32 hex digits, run keys
# `<10 digits>-<job id>` or, for a manual run, `...-m<8 hex digits>`); anything else is a 400.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
JobId = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="The job's `job_id`."),
]
RunKey = Annotated[
    str,
    Path(min_length=1, max_length=128, pattern=ID_PATTERN, description="The run's `key`."),
]
PageToken = Annotated[
    Annotated[str, Field(max_length=2048, json_schema_extra={"format": PAGE_TOKEN_FORMAT})] | None,
    Query(
        description="The `next_token` of the previous page, as it came, with the same query "
        "(else 400)."
    ),
]


def caller(router: Router) -> str:
    """The caller's identity: the `sub` claim the JWT authorizer verified."""
    event = cast(APIGatewayProxyEventV2, router.current_event)
    authorizer = event.request_context.authorizer
    claims = authorizer.jwt_claim if authorizer else None
    subject = (claims or {}).get("sub")
    if not subject:
        raise Unauthenticated("a bearer token with a `sub` claim is required")
    return str(subject)


create_router = Router()


@create_router.post(
    "/jobs",
    summary="Create a job",
    tags=["jobs"],
    responses=responses(
        201,
        Job,
        JobNameConflict,
        IdempotencyKeyInProgress,
        IdempotencyKeyReused,
        IdempotencyKeyStale,
        UnsupportedMediaType,
        QuotaExceeded,
    ),
)
def create_job(
    body: JobCreate,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="idempotency-key",
            max_length=128,
            description="Makes a retried create return the first result instead of a new job.",
        ),
    ] = None,
) -> Response[Job]:
    job = wiring.create_job_service().create(
        caller(create_router), body, idempotency_key, create_router.lambda_context
    )
    return Response(
        status_code=201,
        content_type="application/json",
        body=job,
        headers={"Location": f"/jobs/{job.job_id}"},
    )


get_router = Router()


@get_router.get(
    "/jobs/<job_id>",
    summary="Get one of your jobs",
    tags=["jobs"],
    responses=responses(200, Job, JobNotFound),
)
def get_job(job_id: JobId) -> Job:
    return wiring.job_service().describe(caller(get_router), job_id)


list_router = Router()
_AFTER = "RFC 3339 date-time with an offset; exclusive."
_BEFORE = "RFC 3339 date-time with an offset; exclusive; at or before {}, the range is empty: "
"an empty page."
LIST_PARAMETERS = frozenset(
    {
        "status",
        "name",
        "created_after",
        "created_before",
        "next_run_after",
        "next_run_before",
        "limit",
        "next_token",
    }
)


@list_router.get(
    "/jobs",
    summary="List your jobs, newest first",
    tags=["jobs"],
    responses=responses(200, JobPage),
)
def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=128, description="Name prefix")] = None,
    created_after: Annotated[Instant | None, Query(description=_AFTER)] = None,
    created_before: Annotated[
        Instant | None, Query(description=_BEFORE.format("created_after"))
    ] = None,
    next_run_after: Annotated[Instant | None, Query(description=_AFTER)] = None,
    next_run_before: Annotated[
        Instant | None, Query(description=_BEFORE.format("next_run_after"))
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: PageToken = None,
) -> JobPage:
    unknown = set(list_router.current_event.query_string_parameters or {}) - LIST_PARAMETERS
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(sorted(unknown))}",
            [{"field": field, "problem": "unknown query parameter"} for field in sorted(unknown)],
        )
    filters = JobFilters(
        status=status,
        name=name,
        created_after=created_after,
        created_before=created_before,
        next_run_after=next_run_after,
        next_run_before=next_run_before,
    )
    return wiring.list_jobs_service().list(caller(list_router), filters, limit, next_token)


# -- a job's life: change, pause, resume, delete ------------------------------------------

update_router = Router()


@update_router.patch(
    "/jobs/<job_id>",
    summary="Change a job",
    description="Send only the fields to change. A new schedule or time zone takes effect from "
    "now: the next run moves to the new schedule's next occurrence. A new script is used from "
    "the next run on; runs already queued keep the script they were created with. A schedule "
    "with no run from now on is refused (400), whether the job is active or paused.",
    tags=["jobs"],
    responses=responses(200, Job, JobNotFound, JobBusy, UnsupportedMediaType),
)
def update_job(job_id: JobId, body: JobUpdate) -> Job:
    return wiring.job_change_service().update(caller(update_router), job_id, body)


pause_router = Router()


@pause_router.post(
    "/jobs/<job_id>/pause",
    summary="Pause a job",
    description="No run starts until it is resumed, as Kubernetes' `suspend`: no new runs are "
    "scheduled, and runs that have not reached their task (pending retries, queued scheduled, "
    "manual or backfill runs) end SKIPPED when they would have started. A run already in its "
    "task (DISPATCHED, RUNNING) runs to its end. Run now and backfill are refused (409) while "
    "paused. Pausing a paused job changes nothing.",
    tags=["jobs"],
    responses=responses(200, Job, JobNotFound, JobBusy, UnsupportedMediaType),
)
def pause_job(job_id: JobId) -> Job:
    return wiring.job_change_service().pause(caller(pause_router), job_id)


resume_router = Router()


@resume_router.post(
    "/jobs/<job_id>/resume",
    summary="Resume a paused job",
    description="Schedules the job from now on; occurrences missed while paused are not made "
    "up (use run now for that). Resuming an active job changes nothing. A job with no run left "
    "(its end_at passed while paused) is refused (400): change it first.",
    tags=["jobs"],
    responses=responses(200, Job, JobNotFound, JobBusy, UnsupportedMediaType),
)
def resume_job(job_id: JobId) -> Job:
    return wiring.job_change_service().resume(caller(resume_router), job_id)


delete_router = Router()


@delete_router.delete(
    "/jobs/<job_id>",
    summary="Delete a job",
    description="Deletes the job and its schedule, and frees its name. As on pause, runs that "
    "have not reached their task end SKIPPED; a run already in its task runs to its end.",
    tags=["jobs"],
    responses=responses(204, None, JobNotFound, JobBusy, description="Deleted"),
)
def delete_job(job_id: JobId) -> Response[None]:
    wiring.job_change_service().delete(caller(delete_router), job_id)
    return Response(status_code=204)


# -- previews of a schedule ----------------------------------------------------------------

preview_router = Router()


@preview_router.get(
    "/jobs/<job_id>/preview",
    summary="The next occurrences of one of your jobs",
    description="In UTC and in the job's time zone, each marked when daylight saving moved "
    "(shifted) or doubled (repeated) its wall time.",
    tags=["jobs"],
    responses=responses(200, SchedulePreview, JobNotFound),
)
def preview_job(
    job_id: JobId,
    count: Annotated[int, Query(ge=1, le=100)] = 10,
    after: Annotated[Instant | None, Query()] = None,
) -> SchedulePreview:
    return wiring.job_service().preview(caller(preview_router), job_id, count, after)


@preview_router.post(
    "/schedules/preview",
    summary="Try a schedule before creating a job with it",
    description="Its next occurrences in UTC and in its time zone, each marked when daylight "
    "saving moved (shifted) or doubled (repeated) its wall time.",
    tags=["jobs"],
    responses=responses(200, SchedulePreview, UnsupportedMediaType),
)
def preview_schedule(body: SchedulePreviewRequest) -> SchedulePreview:
    caller(preview_router)  # signed-in callers only, as every route but the docs
    return wiring.job_service().preview_schedule(body)
