"""The OpenAPI document (GET /openapi.json) against the template's routes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from devstack import template
from scheduler.api import docs

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_cli_models_are_generated_from_this_document() -> None:
    # The CLI's cli/openapi.json is the document the API serves, and its api_models.py is what
    # datamodel-code-generator makes of it: a change to the API fails here until
    # `make cli-models` regenerates them (and the CLI is checked against the new models).
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli" / "generate_models.py"), "--check"],
        env=os.environ | {"PYTHONPATH": str(ROOT / "layers" / "common" / "python")},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
