"""The OpenAPI document (GET /openapi.json) against the template's routes."""

from __future__ import annotations

from typing import Any

from devstack import template
from scheduler.api import docs


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = (
        docs.make_docs_resolver()
        .get_openapi_schema(title=docs.TITLE, version=docs.VERSION)
        .model_dump(by_alias=True, exclude_none=True)
    )
    return document


def test_the_document_has_every_route_the_api_serves_with_a_token() -> None:
    # Given the routes of the template's HttpApi events that need a token
    stack = template.Stack(template.load(), {}, {})
    served = {(route.method.lower(), route.path) for route in stack.routes() if route.authorized}

    # When the document is generated
    paths = openapi_document()["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item}

    # Then it documents each of them, and nothing else
    assert documented == served
