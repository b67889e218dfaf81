"""The one table from domain errors to HTTP answers. The resolver answers with it, and each
route's OpenAPI error responses are generated from it; an error missing from it is a 500."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from scheduler.errors import (
    DomainError,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyKeyStale,
    InvalidInput,
    JobBusy,
    JobNameConflict,
    JobNotFound,
    JobPaused,
    QuotaExceeded,
    RunEnded,
    RunNotFound,
    ServiceUnavailable,
    Unauthenticated,
    UnsupportedMediaType,
)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorResponse(BaseModel):
    """Every error the API returns has this shape."""

    error: ErrorBody


@dataclass(frozen=True)
class ErrorAnswer:
    status: HTTPStatus
    description: str  # for the OpenAPI document


# A subclass not listed answers as its nearest listed base (InvalidPageToken as InvalidInput).
ANSWERS: dict[type[DomainError], ErrorAnswer] = {
    InvalidInput: ErrorAnswer(
        HTTPStatus.BAD_REQUEST, "Invalid input; the message names the field and the problem"
    ),
    Unauthenticated: ErrorAnswer(
        HTTPStatus.UNAUTHORIZED, "Missing, expired or invalid bearer token"
    ),
    JobNotFound: ErrorAnswer(HTTPStatus.NOT_FOUND, "No such job (or it belongs to someone else)"),
    RunNotFound: ErrorAnswer(
        HTTPStatus.NOT_FOUND, "No such run of the job (or the job belongs to someone else)"
    ),
    JobNameConflict: ErrorAnswer(HTTPStatus.CONFLICT, "You already have a job with this name"),
    JobBusy: ErrorAnswer(HTTPStatus.CONFLICT, "The job kept changing meanwhile; retry"),
    RunEnded: ErrorAnswer(HTTPStatus.CONFLICT, "The run has already ended; nothing to cancel"),
    JobPaused: ErrorAnswer(HTTPStatus.CONFLICT, "The job is paused: it starts no run; resume it"),
    IdempotencyKeyInProgress: ErrorAnswer(
        HTTPStatus.CONFLICT, "A request with this Idempotency-Key is still being processed"
    ),
    IdempotencyKeyStale: ErrorAnswer(
        HTTPStatus.CONFLICT,
        "The job this Idempotency-Key created has been deleted since; use a new key",
    ),
    IdempotencyKeyReused: ErrorAnswer(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "This Idempotency-Key was already used with a different request body",
    ),
    UnsupportedMediaType: ErrorAnswer(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "A request body must be JSON sent with `Content-Type: application/json` (UTF-8)",
    ),
    QuotaExceeded: ErrorAnswer(
        HTTPStatus.TOO_MANY_REQUESTS,
        "A quota of yours is used up; the message names it and its limit, and `Retry-After` "
        "says in how many seconds it has room again (absent for jobs_per_owner: delete a job)",
    ),
    ServiceUnavailable: ErrorAnswer(
        HTTPStatus.SERVICE_UNAVAILABLE, "The service is busy; retry shortly"
    ),
}
# Every route can answer these: its input is validated, its caller authenticated, and AWS can
# throttle any call.
EVERY_ROUTE: tuple[type[DomainError], ...] = (InvalidInput, Unauthenticated, ServiceUnavailable)


def headers_for(error: DomainError) -> dict[str, str]:
    """The headers an error's answer carries: `Retry-After` for a quota with a window."""
    if isinstance(error, QuotaExceeded) and error.retry_after_seconds is not None:
        return {"Retry-After": str(error.retry_after_seconds)}
    return {}


def answer_for(error: DomainError) -> ErrorAnswer | None:
    """The answer of the error's nearest listed class; None if it has none (a 500)."""
    for kind in type(error).__mro__:
        answer = ANSWERS.get(cast("type[DomainError]", kind))
        if answer is not None:
            return answer
    return None


def responses(
    success: int, model: type[BaseModel] | None, *errors: type[DomainError], description: str = ""
) -> dict[int, OpenAPIResponse]:
    """A route's documented answers: its success (listing them replaces the one powertools
    infers) and the errors it can raise, grouped by status, all of them ErrorResponse."""
    answer: OpenAPIResponse = {"description": description or HTTPStatus(success).phrase}
    if model is not None:
        answer["content"] = {"application/json": {"model": model}}
    documented: dict[int, OpenAPIResponse] = {success: answer}
    by_status: dict[int, list[str]] = {}
    for kind in (*EVERY_ROUTE, *errors):
        entry = ANSWERS[kind]
        texts = by_status.setdefault(entry.status.value, [])
        if entry.description not in texts:
            texts.append(entry.description)
    for status in sorted(by_status):
        documented[status] = {
            "description": "; or ".join(by_status[status]),
            "content": {"application/json": {"model": ErrorResponse}},
        }
    return documented
