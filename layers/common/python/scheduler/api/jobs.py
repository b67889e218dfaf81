"""Routes of the job API, one router per Lambda function; each route is one call into a service."""

from __future__ import annotations

from typing import Annotated, cast

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from pydantic import AwareDatetime, BaseModel

from scheduler.api import container
from scheduler.errors import InvalidInput, Unauthenticated
from scheduler.models import ErrorResponse, Job, JobCreate, JobFilters, JobPage, JobStatus

ERRORS: dict[int, OpenAPIResponse] = {
    code: {
        "description": text,
        "content": {"application/json": {"model": ErrorResponse}},
    }
    for code, text in {
        400: "Invalid input; the message names the field and the problem",
        401: "Missing, expired or invalid bearer token",
        404: "No such job (or it belongs to someone else)",
        409: "A conflict: the name is taken, or the job changed meanwhile (retry)",
        422: "This Idempotency-Key was already used with a different request body",
        503: "The service is busy; retry shortly",
    }.items()
}


def responses(success: int, model: type[BaseModel], *errors: int) -> dict[int, OpenAPIResponse]:
    """A route's documented answers: its success (listing them replaces the one powertools
    infers) and its errors, all of them ErrorResponse."""
    answer: OpenAPIResponse = {
        "description": "OK" if success == 200 else "Created",
        "content": {"application/json": {"model": model}},
    }
    return {success: answer, **{code: ERRORS[code] for code in errors}}


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
    responses=responses(201, Job, 400, 401, 409, 422, 503),
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
    job = container.create_job_service().create(
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
    responses=responses(200, Job, 400, 401, 404, 503),
)
def get_job(job_id: Annotated[str, Path(max_length=64)]) -> Job:
    return container.get_job_service().get(caller(get_router), job_id)


list_router = Router()
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
    responses=responses(200, JobPage, 400, 401, 503),
)
def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=128, description="Name prefix")] = None,
    created_after: Annotated[AwareDatetime | None, Query()] = None,
    created_before: Annotated[AwareDatetime | None, Query()] = None,
    next_run_after: Annotated[AwareDatetime | None, Query()] = None,
    next_run_before: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
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
    return container.list_jobs_service().list(caller(list_router), filters, limit, next_token)
