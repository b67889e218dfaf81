"""What a request body must be before any route reads it: a JSON object, sent as
`application/json`, UTF-8, and nested at most MAX_JSON_DEPTH levels. Anything else is a 4xx
naming the problem, never a 500 (powertools would otherwise fail on a non-UTF-8 body, a JSON
nesting deep enough to exhaust the recursion limit, or an unexpected content type) nor taken
for something else (powertools reads `[null, null]` as an optional body left out)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from scheduler.errors import DomainError, InvalidInput, UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"
MAX_JSON_DEPTH = 32  # objects and arrays inside one another; a job's body needs about 4
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def parse_json_body(text: str) -> Any:
    """The resolver's JSON deserializer: json.loads with a nesting limit. Too deep is a
    JSONDecodeError, which the resolver answers as a 400 like any other malformed JSON."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
    else:
        if not _too_deep(value, MAX_JSON_DEPTH):
            return value
    raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", text, 0)


def body_problem(event: BaseProxyEvent) -> DomainError | None:
    """Why the request's body cannot be read as JSON, if it cannot; None when it can, or when
    the request has no body (a route with an optional body, e.g. run now, needs none)."""
    if event.http_method.upper() not in BODY_METHODS or not event.body:
        return None
    content_type = next(
        (value for name, value in event.headers.items() if name.lower() == "content-type"), ""
    )
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = _charset(parameters)
    if media_type != JSON_MEDIA_TYPE or charset not in (None, "utf-8", "utf8"):
        got = f"`{content_type.strip()}`" if content_type.strip() else "no Content-Type"
        problem = f"send the body as JSON with `Content-Type: {JSON_MEDIA_TYPE}` (got {got})"
        return UnsupportedMediaType(
            f"unsupported media type: {problem}", [{"field": "content-type", "problem": problem}]
        )
    try:
        text = event.decoded_body
    except (UnicodeDecodeError, ValueError):
        problem = "the body is not valid UTF-8 text"
        return InvalidInput(
            f"invalid request body: {problem}", [{"field": "body", "problem": problem}]
        )
    try:
        value = parse_json_body(text or "")
    except json.JSONDecodeError:
        return None  # powertools' validation names where the JSON breaks
    if not isinstance(value, dict):
        # Every body of this API is an object; powertools would take e.g. `[null, null]` for
        # an optional body left out.
        problem = f"the body must be a JSON object, not {_json_kind(value)}"
        return InvalidInput(
            f"invalid request body: {problem}", [{"field": "body", "problem": problem}]
        )
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _too_deep(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit` (iteratively: no recursion to
    exhaust)."""
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
