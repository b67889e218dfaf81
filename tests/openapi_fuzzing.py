"""What both fuzz tests (tests/integration/test_openapi_fuzz.py in-process,
tests/e2e/test_openapi_fuzz_live.py over HTTP with schemathesis' CLI, which loads this module
as its hooks) agree on:

- values for the OpenAPI formats of ours (scheduler.jobs.job_models: a schedule, an IANA time
  zone, Python source), which JSON Schema cannot state, so that a request the spec allows is
  one the API accepts;
- the only refusals (400) a spec-valid request may still get, each stated in its field's
  description: what depends on other fields, the clock or stored state (STATED_LIMITS);
- the checks that replace schemathesis' own where API Gateway's behaviour differs from what
  schemathesis expects (an undeclared method is a 404, not a 405)."""

from __future__ import annotations

import json
import zoneinfo
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.generation.meta import REQUEST_SHAPE_PROBES, CoverageScenario, coverage_scenario

from scheduler.jobs.job_models import SCHEDULE_FORMAT, SCRIPT_FORMAT, TIME_ZONE_FORMAT
from scheduler.schedule import cron

# A spec-valid request may be refused (400) only naming one of these, each a limit stated in
# the field's description that JSON Schema cannot express:
STATED_LIMITS = frozenset(
    {
        "end_at",  # after start_at, and the schedule must fire between now and it
        "body",  # a model-wide check: end_at after start_at, `to` after `from`
        "to",  # a backfill's range: in the past, at most 100 occurrences, overlap policy
        "parameters",  # at most 16 KiB as JSON
        "invalid_page_token",  # only a `next_token` this API issued, for the same query
    }
)
# What a spec-valid request may otherwise be answered, besides a success: no such job or run
# (made-up ids), a conflict with the job's state, an Idempotency-Key the fuzzer already sent
# with another body (422, this API's only one), a quota.
ACCEPTED_STATUSES = frozenset({401, 403, 404, 409, 422, 429})


def _zones() -> list[str]:
    usable = []
    for name in sorted(zoneinfo.available_timezones()):
        try:
            cron.zone(name)
        except cron.CronError:
            continue
        usable.append(name)
    return usable


_FIELD = {
    "minute": st.integers(0, 59).map(str),
    "hour": st.one_of(st.just("*"), st.integers(0, 23).map(str)),
    "day": st.one_of(st.just("*"), st.integers(1, 28).map(str)),
    "month": st.one_of(st.just("*"), st.integers(1, 12).map(str)),
    "weekday": st.one_of(st.just("*"), st.sampled_from(["MON-FRI", "0", "6", "SUN"])),
}
SCHEDULES = st.one_of(
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "rate(5 minutes)"]),
    st.tuples(*_FIELD.values()).map(" ".join),
)
TIME_ZONES = st.sampled_from(_zones())
SCRIPTS = st.one_of(
    st.sampled_from(["pass", "0", "print('fuzzed')\n", "import os\nprint(os.getpid())\n"]),
    st.integers().map(lambda number: f"print({number})\n"),
)

schemathesis.openapi.format(SCHEDULE_FORMAT, SCHEDULES)
schemathesis.openapi.format(TIME_ZONE_FORMAT, TIME_ZONES)
schemathesis.openapi.format(SCRIPT_FORMAT, SCRIPTS)


def refusal_of_valid_input(status: int, body: bytes) -> str | None:
    """Why an answer to a spec-valid request shows the spec misses a limit, if it does."""
    if status < 400 or status in ACCEPTED_STATUSES or status >= 500:
        return None  # a 5xx is not_a_server_error's to report
    if status == 400:
        try:
            error = json.loads(body)["error"]
            named = {detail["field"] for detail in error["details"]} or {error["code"]}
        except (ValueError, KeyError, TypeError):
            return f"a 400 without this API's error body: {body[:200]!r}"
        if named <= STATED_LIMITS:
            return None
        return f"a request the spec allows was refused: {error}"
    return f"a request the spec allows was answered {status}: {body[:300]!r}"


@schemathesis.check
def spec_valid_request_accepted(ctx: Any, response: Any, case: Any) -> None:
    """schemathesis' positive_data_acceptance, but a 400 naming a STATED_LIMITS field passes."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if coverage_scenario(case) in REQUEST_SHAPE_PROBES:
        return  # a probe of another method or content type: not valid data
    problem = refusal_of_valid_input(response.status_code, response.content)
    if problem is not None:
        raise AssertionError(problem)


@schemathesis.check
def undeclared_method_answered_as_api_gateway(ctx: Any, response: Any, case: Any) -> None:
    """schemathesis' unsupported_method expects 405 with `Allow`; API Gateway HTTP APIs answer a
    method no route declares like an unknown route: 404 `{"message":"Not Found"}` (before the
    authorizer). The local gateway does the same; this holds it to it."""
    if coverage_scenario(case) is not CoverageScenario.UNSPECIFIED_HTTP_METHOD:
        return
    if response.request.method == "OPTIONS":
        return  # no CORS configured: also a 404, but schemathesis leaves OPTIONS alone too
    if response.status_code != 404 or response.content != b'{"message":"Not Found"}':
        raise AssertionError(
            f"{response.request.method} (no route declares it) answered "
            f"{response.status_code} {response.content[:200]!r}; API Gateway answers 404 "
            '{"message":"Not Found"}'
        )
