"""Every domain error has an HTTP answer in the one table, and the resolver answers an error that
has none with a 500 (never with its message)."""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler.api_gateway import Router

import scheduler
from scheduler.api.error_responses import ANSWERS, answer_for
from scheduler.api.resolver import make_resolver
from scheduler.errors import DomainError, InvalidInput, InvalidPageToken, JobNotFound

EVENTS = Path(__file__).resolve().parents[2] / "events"


def domain_errors() -> list[type[DomainError]]:
    """Every DomainError subclass the scheduler package defines (all its modules imported)."""
    for module in pkgutil.walk_packages(scheduler.__path__, "scheduler."):
        importlib.import_module(module.name)
    found: list[type[DomainError]] = []
    pending = list(DomainError.__subclasses__())
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending += kind.__subclasses__()
    return sorted(
        (kind for kind in found if kind.__module__.startswith("scheduler.")),
        key=lambda kind: kind.__qualname__,
    )


def test_the_walk_finds_the_errors_it_should() -> None:
    assert {InvalidInput, InvalidPageToken, JobNotFound} <= set(domain_errors())


@pytest.mark.parametrize("kind", domain_errors(), ids=lambda kind: kind.__name__)
def test_every_domain_error_has_an_answer(kind: type[DomainError]) -> None:
    # Listed itself, or through a listed base class
    listed = [base for base in kind.__mro__ if base in ANSWERS]
    assert listed, f"{kind.__name__} has no entry in ANSWERS (nor has any of its bases)"
    assert answer_for(kind("x")) is ANSWERS[listed[0]]


def test_a_subclass_answers_as_its_nearest_listed_base() -> None:
    answer = answer_for(InvalidPageToken("bad token"))
    assert answer is ANSWERS[InvalidInput]
    assert answer.status is HTTPStatus.BAD_REQUEST


# -- through the resolver -----------------------------------------------------------------------


class UnlistedError(DomainError):
    """A domain error someone forgot to add to ANSWERS."""

    code = "unlisted"


def resolve(error: Exception) -> dict[str, Any]:
    """The response of a resolver whose one route, GET /boom, raises `error`."""
    router = Router()

    @router.get("/boom")
    def boom() -> dict[str, str]:
        raise error

    app = make_resolver()
    app.include_router(router)
    event = copy.deepcopy(json.loads((EVENTS / "get_job.json").read_text()))
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /boom"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/boom"
    event["pathParameters"] = {}
    return app.resolve(event, None)  # type: ignore[arg-type]


def test_a_domain_error_missing_from_the_table_is_a_500() -> None:
    # Given a domain error that is not in ANSWERS
    assert answer_for(UnlistedError("secret detail")) is None

    # When a route raises it
    response = resolve(UnlistedError("secret detail"))

    # Then the client gets a 500 that does not reveal the error's message
    assert response["statusCode"] == 500
    body = json.loads(response["body"])
    assert body["error"]["code"] == "internal_error"
    assert "secret detail" not in response["body"]


def test_a_listed_domain_error_gets_its_answer() -> None:
    response = resolve(JobNotFound("job 'x' not found"))
    assert response["statusCode"] == 404
    assert json.loads(response["body"]) == {
        "error": {"code": "job_not_found", "message": "job 'x' not found", "details": []}
    }
