"""Cron expressions and their occurrences in a time zone. Pure functions: `now` is always passed in.

Wall-clock rules across daylight-saving changes (documented in docs/scheduling.md):
- A local time that does not exist (the clock jumps forward over it) runs at the same distance
  after the jump: 02:30 on a night that skips 02:00-03:00 runs at 03:30 local, once.
- A local time that occurs twice (the clock falls back) runs once, at its first occurrence, unless
  the schedule's hour field is `*`: such sub-hourly schedules follow elapsed time and run in both
  passes, as Vixie cron does.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter
from pydantic import BaseModel, ConfigDict

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The largest daylight-saving shift considered when looking back over a recent transition.
MAX_SHIFT = timedelta(hours=3)


class Gap(StrEnum):
    """A wall time the clock jumps over: run it the length of the jump later (SHIFT: 02:30 ->
    03:30), at the first valid time after the jump (NEXT_VALID: 03:00, as cronie and Dagster),
    or not at all that day (SKIP, as EventBridge Scheduler)."""

    SHIFT = "SHIFT"
    NEXT_VALID = "NEXT_VALID"
    SKIP = "SKIP"


class Repeat(StrEnum):
    """A wall time the clock passes twice: run at the FIRST pass, the LAST, or BOTH."""

    FIRST = "FIRST"
    LAST = "LAST"
    BOTH = "BOTH"


class DstPolicy(BaseModel):
    """What daylight saving does to a job's runs. Unset: SHIFT, and FIRST (BOTH for schedules
    whose hour field is `*`, which follow elapsed time, as Vixie cron does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gap: Gap | None = None
    repeat: Repeat | None = None


DEFAULT_DST = DstPolicy()


class CronError(ValueError):
    """The expression or time zone is not acceptable; the message says why."""


_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)\)$")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def one_time(expression: str) -> datetime | None:
    """The wall time of an `at(YYYY-MM-DDTHH:MM[:SS])` schedule (no zone: the job's), or None."""
    found = _AT.match(" ".join(expression.split()))
    try:
        return datetime.fromisoformat(found.group(1)) if found else None
    except ValueError:  # a date that does not exist, e.g. month 13
        return None


def rate_seconds(expression: str) -> int | None:
    """The period of a `rate(N minutes|hours|days)` schedule, or None."""
    found = _RATE.match(" ".join(expression.split()))
    if not found:
        return None
    return int(found.group(1)) * _RATE_UNITS[found.group(2).rstrip("s")]


def normalize(expression: str) -> str:
    """Return the 5-field form of a cron schedule (or an `at()` / `rate()` one as written), or
    raise CronError naming the problem."""
    text = " ".join(expression.split())
    if text.startswith(("at(", "rate(")):
        if one_time(text) is None and not rate_seconds(text):
            raise CronError(
                f"invalid schedule {text!r}: use at(YYYY-MM-DDTHH:MM[:SS]) for one time, or "
                "rate(N minutes|hours|days) with N >= 1"
            )
        return text
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown macro {text!r}; use one of {', '.join(MACROS)}")
        return MACROS[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    try:
        croniter(text)  # parses every field: ranges, steps, lists, names
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
        raise CronError(f"invalid cron expression: {exc}") from None
    return text


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or CronError."""
    if name not in _zone_names():
        raise CronError(f"unknown IANA time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown IANA time zone {name!r}") from None


def next_occurrence(
    expression: str, timezone: str, after: datetime, dst: DstPolicy = DEFAULT_DST
) -> datetime:
    """The first instant strictly after `after` at which the schedule fires, in UTC."""
    if after.tzinfo is None:
        raise ValueError("`after` must be timezone-aware")
    tz = zone(timezone)
    cron = normalize(expression)
    if cron.startswith(("at(", "rate(")):
        return _next_at_or_rate(cron, tz, after)
    follows_elapsed_time = cron.split(" ")[1] == "*"
    repeat = dst.repeat or (Repeat.BOTH if follows_elapsed_time else Repeat.FIRST)
    gap = dst.gap or Gap.SHIFT
    after_utc = after.astimezone(UTC)
    local = after_utc.astimezone(tz)
    wall = local.replace(tzinfo=None, fold=0)
    # Wall times before `wall` can still fire after `after`: those a recent gap shifted forward,
    # and (following elapsed time) the second pass of a repeated hour we are in the first of.
    lookback = _utcoffset(local) - _utcoffset((after_utc - MAX_SHIFT).astimezone(tz))
    if repeat is not Repeat.FIRST:
        lookback = max(lookback, _offset(wall, tz, 0) - _offset(wall, tz, 1))
    iterator = croniter(cron, wall - max(lookback, timedelta(0)))
    best: datetime | None = None
    horizon: datetime | None = None
    try:
        # Near a transition wall order is not time order (a shifted or repeated time can land
        # after a later wall time), so keep the earliest candidate until no later wall time can
        # beat it. The bound only guards against a bug turning into an endless loop.
        for _ in range(10_000):
            wall = iterator.get_next(datetime)
            if horizon is not None and wall >= horizon:
                break
            for candidate in _instants(wall, tz, gap, repeat):
                if candidate > after_utc and (best is None or candidate < best):
                    best = candidate
            if best is not None:
                # A wall time w is at least w - (largest offset around) in UTC.
                largest = max(_utcoffset(local), _utcoffset(best.astimezone(tz)))
                horizon = best.replace(tzinfo=None) + largest
                if wall >= horizon:
                    break
    except CroniterBadDateError:
        pass
    if best is None:
        raise CronError(f"schedule {expression!r} never fires")
    return best


def next_within(
    expression: str,
    timezone: str,
    after: datetime,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    dst: DstPolicy = DEFAULT_DST,
) -> datetime | None:
    """The first occurrence strictly after `after` that lies within [start_at, end_at] (either
    bound optional), in UTC; None when the schedule has none left in its bounds."""
    if start_at is not None and after < start_at:
        after = start_at - timedelta(microseconds=1)  # start_at itself may be an occurrence
    try:
        at = next_occurrence(expression, timezone, after, dst)
    except CronError:
        if end_at is not None:
            return None
        raise
    if end_at is not None and at > end_at:
        return None
    return at


def upcoming(
    expression: str, timezone: str, after: datetime, count: int, dst: DstPolicy = DEFAULT_DST
) -> list[tuple[datetime, str | None]]:
    """The next `count` instants the schedule fires after `after` (UTC), each with how daylight
    saving touched it: "shifted" (its wall time did not exist that day and it runs after the
    jump), "repeated" (its wall time occurs twice that day), or None. Stops early for a schedule
    that never fires again."""
    tz = zone(timezone)
    cron = normalize(expression)
    found: list[tuple[datetime, str | None]] = []
    at = after
    for _ in range(count):
        try:
            at = next_occurrence(cron, timezone, at, dst)
        except CronError:
            break
        local = at.astimezone(tz)
        wall = local.replace(tzinfo=None)
        if rate_seconds(cron):  # elapsed time: daylight saving moves nothing
            found.append((at, None))
        elif one_time(cron) is not None:
            shifted = one_time(cron) != wall
            found.append((at, "shifted" if shifted else None))
        elif not croniter.match(cron, wall):
            found.append((at, "shifted"))
        elif _offset(wall, tz, 0) != _offset(wall, tz, 1):
            found.append((at, "repeated"))
        else:
            found.append((at, None))
    return found


def _next_at_or_rate(expression: str, tz: ZoneInfo, after: datetime) -> datetime:
    wall_once, period = one_time(expression), rate_seconds(expression)
    if wall_once is not None:
        # A wall time in the job's zone; one that a jump skips runs after it, as cron's do.
        at = _instants(wall_once, tz, Gap.SHIFT, Repeat.FIRST)[0]
        if at <= after.astimezone(UTC):
            raise CronError(f"schedule {expression!r} never fires again")
        return at
    assert period is not None  # normalize() accepted it
    # Elapsed time, aligned to the epoch: rate(15 minutes) fires at :00, :15, :30, :45 UTC.
    seconds = int(after.timestamp()) // period * period + period
    return datetime.fromtimestamp(seconds, UTC)


def _offset(wall: datetime, tz: ZoneInfo, fold: int) -> timedelta:
    return _utcoffset(wall.replace(tzinfo=tz, fold=fold))


def _utcoffset(instant: datetime) -> timedelta:
    offset = instant.utcoffset()
    assert offset is not None
    return offset


def _instants(wall: datetime, tz: ZoneInfo, gap: Gap, repeat: Repeat) -> list[datetime]:
    if not _exists(wall, tz):
        if gap is Gap.SKIP:
            return []
        shifted = _after_gap(wall, tz)
        return [_transition_before(shifted, tz) if gap is Gap.NEXT_VALID else shifted]
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second or repeat is Repeat.FIRST:
        return [first]
    # An ambiguous wall time: fold=0 is the earlier instant.
    return [second] if repeat is Repeat.LAST else [first, second]


def _transition_before(instant: datetime, tz: ZoneInfo) -> datetime:
    """The instant of the jump just before `instant` (found by bisection, to the second): the
    first valid wall time after a gap."""
    low, high = instant - MAX_SHIFT, instant
    offset = _utcoffset(high.astimezone(tz))
    while (high - low).total_seconds() > 1:
        middle = low + (high - low) / 2
        if _utcoffset(middle.astimezone(tz)) == offset:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


def _after_gap(wall: datetime, tz: ZoneInfo) -> datetime:
    # PEP 495: fold=0 of a missing time uses the offset from before the gap, which lands the
    # instant the length of the gap after the wall time, i.e. 02:30 -> 03:30 after a 1h jump.
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())
