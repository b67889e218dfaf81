"""The resolver's JSON deserializer: a nesting limit instead of a RecursionError."""

from __future__ import annotations

import json

import pytest

from scheduler.api.request_body import MAX_JSON_DEPTH, parse_json_body


def test_json_within_the_limit_parses() -> None:
    text = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json_body(text) is not None
    assert parse_json_body('"just a string"') == "just a string"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 500_000])
def test_json_beyond_the_limit_is_a_decode_error_not_a_recursion_error(depth: int) -> None:
    text = '{"a":' * depth + "1" + "}" * depth
    with pytest.raises(json.JSONDecodeError, match="nested deeper than"):
        parse_json_body(text)


def test_malformed_json_is_still_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json_body("{")
