"""The resolver every API function uses: validation on, and one error shape for every error.

A request body is checked before a route reads it (scheduler.api.request_body): JSON nested too
deeply fails in the resolver's own deserializer (a 400 like any malformed JSON), and a body that
is not JSON, not UTF-8 or sent with another content type is answered 415 or 400 whichever step
meets it first: powertools' validation (the handlers of its errors ask `body_problem` first) or,
for a body that validated, a global middleware."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import OpenAPI

from scheduler.api.error_responses import ErrorBody, ErrorResponse, answer_for, headers_for
from scheduler.api.openapi_corrections import correct
from scheduler.api.request_body import body_problem, parse_json_body
from scheduler.errors import DomainError

logger = Logger(child=True)


def error_response(
    status: HTTPStatus,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details or []))
    return Response(
        status_code=status.value,
        content_type="application/json",
        body=body.model_dump_json(),
        headers=headers or None,
    )


def describe_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as {field, problem}, with the field as the client wrote it."""
    details = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] in ("body", "query", "header", "path"):
            location = location[1:]
        problem = str(error.get("msg", "invalid"))
        problem = problem.removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            # powertools puts the character offset where the field would be: the body is at fault.
            reason = (error.get("ctx") or {}).get("error")
            if reason:
                problem = f"{problem}: {reason}"
            if location:
                problem = f"{problem} (character {location[0]})"
            location = []
        details.append({"field": ".".join(location) or "body", "problem": problem})
    return details


def internal_error() -> Response[str]:
    return error_response(
        HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "an unexpected error occurred"
    )


class ApiResolver(APIGatewayHttpResolver):
    """powertools' resolver, whose OpenAPI document (/openapi.json and /docs) says what this
    API answers (scheduler.api.openapi_corrections)."""

    def get_openapi_schema(self, **kwargs: Any) -> OpenAPI:
        generated = super().get_openapi_schema(**kwargs)
        document = generated.model_dump(mode="json", by_alias=True, exclude_none=True)
        return OpenAPI.model_validate(correct(document))


def make_resolver() -> APIGatewayHttpResolver:
    app = ApiResolver(enable_validation=True, json_body_deserializer=parse_json_body)

    def _require_json_body(
        app: APIGatewayHttpResolver, next_middleware: NextMiddleware
    ) -> Response[Any]:
        """A body that validated may still have come without `application/json`."""
        problem = body_problem(app.current_event)
        if problem is not None:
            raise problem
        return next_middleware(app)

    app.use([_require_json_body])

    def _domain_answer(error: DomainError) -> Response[str]:
        answer = answer_for(error)
        if answer is None:
            logger.exception("domain error without an HTTP answer", error=type(error).__name__)
            return internal_error()
        return error_response(
            answer.status, error.code, error.message, error.details, headers_for(error)
        )

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response[str]:
        problem = body_problem(app.current_event)
        if problem is not None:  # e.g. a form body, which powertools parses as a form
            return _domain_answer(problem)
        details = describe_validation_errors(list(error.errors()))
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        return error_response(
            HTTPStatus.BAD_REQUEST, "validation_error", f"invalid request: {summary}", details
        )

    # ValueError: powertools parses a `multipart/form-data` body before any route or
    # middleware of ours, and fails on one without a boundary.
    @app.exception_handler([RequestUnsupportedContentType, UnicodeDecodeError, ValueError])
    def _unreadable_body(error: Exception) -> Response[str]:
        problem = body_problem(app.current_event)
        if problem is None:  # not the body's fault
            logger.exception("unhandled error")
            return internal_error()
        return _domain_answer(problem)

    @app.exception_handler(DomainError)
    def _domain_error(error: DomainError) -> Response[str]:
        return _domain_answer(error)

    @app.not_found
    def _no_route(_: Exception) -> Response[str]:
        return error_response(HTTPStatus.NOT_FOUND, "not_found", "no such route")

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response[str]:
        logger.exception("unhandled error")
        return internal_error()

    return app
