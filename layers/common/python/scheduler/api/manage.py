"""Routes that change a job's life: pause, resume and delete."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path

from scheduler.api import container
from scheduler.api.jobs import ERRORS, caller, responses
from scheduler.models import Job, JobUpdate

BUSY = 409

update_router = Router()


@update_router.patch(
    "/jobs/<job_id>",
    summary="Change a job",
    description="Send only the fields to change. A new schedule or time zone takes effect from "
    "now: the next run moves to the new schedule's next occurrence. A new script is used from "
    "the next run on; runs already queued keep the script they were created with.",
    tags=["jobs"],
    responses=responses(200, Job, 400, 401, 404, BUSY, 503),
)
def update_job(job_id: Annotated[str, Path(max_length=64)], body: JobUpdate) -> Job:
    return container.manage_job_service().update(caller(update_router), job_id, body)


pause_router = Router()


@pause_router.post(
    "/jobs/<job_id>/pause",
    summary="Pause a job",
    description="No new runs are scheduled until it is resumed; a run already queued still "
    "runs. Pausing a paused job changes nothing.",
    tags=["jobs"],
    responses=responses(200, Job, 401, 404, BUSY, 503),
)
def pause_job(job_id: Annotated[str, Path(max_length=64)]) -> Job:
    return container.manage_job_service().pause(caller(pause_router), job_id)


resume_router = Router()


@resume_router.post(
    "/jobs/<job_id>/resume",
    summary="Resume a paused job",
    description="Schedules the job from now on; occurrences missed while paused are not made "
    "up (use run now for that). Resuming an active job changes nothing.",
    tags=["jobs"],
    responses=responses(200, Job, 401, 404, BUSY, 503),
)
def resume_job(job_id: Annotated[str, Path(max_length=64)]) -> Job:
    return container.manage_job_service().resume(caller(resume_router), job_id)


delete_router = Router()


@delete_router.delete(
    "/jobs/<job_id>",
    summary="Delete a job",
    description="Deletes the job and its schedule, and frees its name. A run already queued "
    "still runs.",
    tags=["jobs"],
    responses={204: {"description": "Deleted"}, **{c: ERRORS[c] for c in (401, 404, BUSY, 503)}},
)
def delete_job(job_id: Annotated[str, Path(max_length=64)]) -> Response[None]:
    container.manage_job_service().delete(caller(delete_router), job_id)
    return Response(status_code=204)
