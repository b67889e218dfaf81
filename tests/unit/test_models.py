"""JobCreate: what `POST /jobs` accepts, and the defaults it fills in."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from scheduler.jobs.job_models import JobCreate

KIB = 1024
VALID: dict[str, Any] = {"name": "nightly-report", "schedule": "30 2 * * *", "script": "print(1)\n"}


def rejection(**changes: Any) -> dict[str, Any]:
    """The single error JobCreate raises for VALID with `changes` (None removes a field)."""
    body = {**VALID, **changes}
    body = {key: value for key, value in body.items() if value is not None}
    with pytest.raises(ValidationError) as raised:
        JobCreate.model_validate(body)
    errors = raised.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


def test_defaults() -> None:
    job = JobCreate.model_validate(VALID)
    assert job.timezone == "UTC"
    assert job.timeout_seconds == 300
    assert job.max_attempts == 3
    assert job.parameters == {}
    assert job.description is None


def test_every_field_given() -> None:
    job = JobCreate.model_validate(
        {
            **VALID,
            "timezone": "Europe/London",
            "parameters": {"region": "eu", "days": [1, 2]},
            "description": "the nightly report",
            "timeout_seconds": 3600,
            "max_attempts": 10,
        }
    )
    assert job.timezone == "Europe/London"
    assert job.parameters == {"region": "eu", "days": [1, 2]}
    assert (job.timeout_seconds, job.max_attempts) == (3600, 10)


def test_schedule_whitespace_is_normalized_and_macros_are_accepted() -> None:
    assert (
        JobCreate.model_validate({**VALID, "schedule": "  0   5 * *  * "}).schedule == "0 5 * * *"
    )
    assert JobCreate.model_validate({**VALID, "schedule": "@daily"}).schedule == "@daily"


@pytest.mark.parametrize(
    ("schedule", "in_message"),
    [
        ("61 * * * *", "invalid cron expression"),
        ("0 0 * * * *", "expected 5 fields"),
        ("@reboot", "unknown macro"),
        ("", "at least 1 character"),
    ],
)
def test_bad_cron_is_rejected_on_the_schedule_field(schedule: str, in_message: str) -> None:
    error = rejection(schedule=schedule)
    assert error["loc"] == ("schedule",)
    assert in_message in error["msg"]


@pytest.mark.parametrize("timezone", ["Mars/Olympus_Mons", "Europe/Londres", "EST5EDT6"])
def test_unknown_time_zone_is_rejected(timezone: str) -> None:
    error = rejection(timezone=timezone)
    assert error["loc"] == ("timezone",)
    assert "unknown IANA time zone" in error["msg"]
    assert timezone in error["msg"]


@pytest.mark.parametrize(
    ("script", "line"),
    [
        ("def f(:\n    pass\n", 1),
        ("x = 1\ny = 2\nz = (\n", 3),
        ("import os\n\nif True:\nprint(os.name)\n", 4),
    ],
)
def test_a_script_that_does_not_compile_is_rejected_naming_the_line(script: str, line: int) -> None:
    error = rejection(script=script)
    assert error["loc"] == ("script",)
    assert "does not compile" in error["msg"]
    assert f"(line {line})" in error["msg"]


def test_a_script_with_a_null_byte_is_rejected() -> None:
    error = rejection(script="print(1)\x00\n")
    assert error["loc"] == ("script",)
    assert "does not compile" in error["msg"]


def test_a_300_kb_script_is_rejected() -> None:
    script = "x = 1\n" * (300 * 1000 // 6)
    error = rejection(script=script)
    assert error["loc"] == ("script",)
    assert f"script is {len(script)} bytes; at most {256 * KIB}" in error["msg"]


def test_script_size_limit_is_256_kib_counted_in_utf8_bytes() -> None:
    # Given scripts of exactly 256 KiB and one byte more
    at_limit = "#" * (256 * KIB - 1) + "\n"
    JobCreate.model_validate({**VALID, "script": at_limit})
    rejection(script="#" * (256 * KIB) + "\n")
    # And a script under the limit in characters but over it in bytes ("é" is 2 bytes)
    error = rejection(script="# " + "é" * (128 * KIB) + "\n")
    assert "bytes; at most" in error["msg"]


def test_an_empty_script_is_rejected() -> None:
    assert rejection(script="")["loc"] == ("script",)


def test_parameters_over_16_kib_are_rejected() -> None:
    # {"k":"..."} is 8 bytes around the value.
    at_limit = {"k": "x" * (16 * KIB - 8)}
    assert len(json.dumps(at_limit, separators=(",", ":"))) == 16 * KIB
    JobCreate.model_validate({**VALID, "parameters": at_limit})
    error = rejection(parameters={"k": "x" * (16 * KIB - 7)})
    assert error["loc"] == ("parameters",)
    assert f"at most {16 * KIB}" in error["msg"]


def test_parameters_must_be_an_object() -> None:
    assert rejection(parameters=["a", "b"])["loc"] == ("parameters",)


@pytest.mark.parametrize("field", ["owner", "user_id", "job_id", "status"])
def test_extra_fields_are_forbidden(field: str) -> None:
    error = rejection(**{field: "x"})
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == (field,)


@pytest.mark.parametrize(
    "name", ["-leading-dash", ".hidden", "has space", "a/b", "semi;colon", "ünïcode", "", "n" * 129]
)
def test_names_outside_the_pattern_are_rejected(name: str) -> None:
    assert rejection(name=name)["loc"] == ("name",)


@pytest.mark.parametrize("name", ["a", "nightly-report", "Report_2026.v2", "0day", "n" * 128])
def test_names_inside_the_pattern_are_accepted(name: str) -> None:
    assert JobCreate.model_validate({**VALID, "name": name}).name == name


@pytest.mark.parametrize("field", ["name", "schedule", "script"])
def test_required_fields(field: str) -> None:
    error = rejection(**{field: None})
    assert error["type"] == "missing"
    assert error["loc"] == (field,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_seconds", 0),
        ("timeout_seconds", 3601),
        ("max_attempts", 0),
        ("max_attempts", 11),
        ("description", "d" * 1025),
    ],
)
def test_bounds(field: str, value: Any) -> None:
    assert rejection(**{field: value})["loc"] == (field,)
