"""scheduler.cron: parsing, time zones and next occurrences, across daylight-saving changes.

The expected instants below are worked out by hand from the zones' rules for 2026:
- America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST
  (06:00Z).
- Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST (01:00Z); 2026-10-25 02:00 BST -> 01:00 GMT
  (01:00Z).
- Australia/Lord_Howe (a 30-minute shift): 2026-04-05 02:00 LHDT -> 01:30 LHST (04-04 15:00Z);
  2026-10-04 02:00 LHST -> 02:30 LHDT (10-03 15:30Z).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from scheduler.schedule.cron import CronError, next_occurrence, normalize, zone

NEW_YORK = "America/New_York"
LONDON = "Europe/London"
LORD_HOWE = "Australia/Lord_Howe"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def occurrences(expression: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Every run in (start, end], by iterating next_occurrence as the scheduler does."""
    found = []
    instant = next_occurrence(expression, tz, start)
    while instant <= end:
        found.append(instant)
        instant = next_occurrence(expression, tz, instant)
    return found


# ------------------------------------------------------------------------------ normalize


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("  0   9 *  * 1-5 ", "0 9 * * 1-5"),
        ("0 9-17/2 1,15 * *", "0 9-17/2 1,15 * *"),
        ("30 9 * * MON-FRI", "30 9 * * MON-FRI"),
        ("0 0 1 JAN,JUL *", "0 0 1 JAN,JUL *"),
        ("0 0 * * 7", "0 0 * * 7"),
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_normalize_returns_the_five_field_form(expression: str, expected: str) -> None:
    assert normalize(expression) == expected


@pytest.mark.parametrize(
    ("expression", "in_message"),
    [
        ("0 0 * * * *", "expected 5 fields"),
        ("0 0 * * * *", "got 6"),
        ("0 0 * *", "got 4"),
        ("", "got 0"),
        ("   ", "got 0"),
        ("60 * * * *", "60 * * * *"),
        ("0 24 * * *", "out of range"),
        ("0 0 0 * *", "out of range"),
        ("0 0 32 * *", "out of range"),
        ("0 0 * 13 *", "out of range"),
        ("0 0 * * 8", "out of range"),
        ("*/0 * * * *", "step"),
        ("a b c d e", "invalid cron expression"),
        ("0 0 * * MON-FOO", "invalid cron expression"),
        ("0 0 * FOO *", "invalid cron expression"),
        ("@reboot", "unknown macro '@reboot'"),
        ("@every 5m", "unknown macro '@every 5m'"),
    ],
)
def test_normalize_rejects_with_a_message_naming_the_problem(
    expression: str, in_message: str
) -> None:
    with pytest.raises(CronError) as raised:
        normalize(expression)
    assert in_message in str(raised.value)


def test_unknown_macro_message_lists_the_known_ones() -> None:
    with pytest.raises(CronError, match="@hourly") as raised:
        normalize("@fortnightly")
    assert "@daily" in str(raised.value)


# ------------------------------------------------------------------------------ zone


def test_zone_returns_the_iana_zone() -> None:
    assert zone("Europe/London") == ZoneInfo("Europe/London")
    assert zone("UTC") == ZoneInfo("UTC")


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe/Londres", "", "../../etc/passwd"])
def test_zone_rejects_unknown_names(name: str) -> None:
    with pytest.raises(CronError, match="unknown IANA time zone"):
        zone(name)


def test_next_occurrence_rejects_an_unknown_zone() -> None:
    with pytest.raises(CronError, match="Nowhere/City"):
        next_occurrence("* * * * *", "Nowhere/City", utc(2026, 1, 1))


# ------------------------------------------------------------------------------ plain schedules


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 2026-01-02 is a Friday.
        ("*/15 * * * *", utc(2026, 1, 2, 10, 7), utc(2026, 1, 2, 10, 15)),
        ("5,35 * * * *", utc(2026, 1, 2, 10, 5), utc(2026, 1, 2, 10, 35)),
        ("10-50/20 * * * *", utc(2026, 1, 2, 10, 31), utc(2026, 1, 2, 10, 50)),
        ("0 9-11 * * *", utc(2026, 1, 2, 11, 0), utc(2026, 1, 3, 9, 0)),
        ("30 9 * * MON-FRI", utc(2026, 1, 2, 10, 0), utc(2026, 1, 5, 9, 30)),
        ("0 0 * * 0", utc(2026, 1, 2), utc(2026, 1, 4)),
        ("0 0 * * 7", utc(2026, 1, 2), utc(2026, 1, 4)),
        ("0 0 * * SUN", utc(2026, 1, 2), utc(2026, 1, 4)),
        ("0 0 1 FEB *", utc(2026, 1, 2), utc(2026, 2, 1)),
        ("@hourly", utc(2026, 1, 2, 10, 0), utc(2026, 1, 2, 11, 0)),
        ("@daily", utc(2026, 1, 2, 10, 0), utc(2026, 1, 3)),
        ("@weekly", utc(2026, 1, 2, 10, 0), utc(2026, 1, 4)),
        ("@monthly", utc(2026, 1, 2, 10, 0), utc(2026, 2, 1)),
        ("@yearly", utc(2026, 1, 2, 10, 0), utc(2027, 1, 1)),
        ("0 0 29 2 *", utc(2026, 1, 2), utc(2028, 2, 29)),
    ],
)
def test_next_occurrence_in_utc(expression: str, after: datetime, expected: datetime) -> None:
    assert next_occurrence(expression, "UTC", after) == expected


def test_next_occurrence_is_strictly_after_and_in_utc() -> None:
    # Given `after` exactly on a run, in another offset
    after = datetime(2026, 1, 2, 11, 0, tzinfo=timezone(timedelta(hours=1)))  # 10:00Z
    # When
    found = next_occurrence("0 * * * *", "UTC", after)
    # Then the run at `after` itself is not returned, and the answer is in UTC
    assert found == utc(2026, 1, 2, 11, 0)
    assert found.utcoffset() == timedelta(0)


def test_next_occurrence_follows_the_jobs_zone() -> None:
    # 09:30 in New York in winter is 14:30Z.
    assert next_occurrence("30 9 * * *", NEW_YORK, utc(2026, 1, 2, 12)) == utc(2026, 1, 2, 14, 30)


def test_next_occurrence_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_occurrence("* * * * *", "UTC", datetime(2026, 1, 1))


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_a_schedule_that_never_fires_is_an_error(expression: str) -> None:
    with pytest.raises(CronError, match="never fires"):
        next_occurrence(expression, "UTC", utc(2026, 1, 1))


# ------------------------------------------------------------------------------ DST: gaps


@pytest.mark.parametrize(
    ("expression", "tz", "after", "expected", "then"),
    [
        # 02:30 does not exist on 2026-03-08 in New York: it runs at 03:30 EDT, once.
        (
            "30 2 * * *",
            NEW_YORK,
            utc(2026, 3, 8, 5),
            utc(2026, 3, 8, 7, 30),
            utc(2026, 3, 9, 6, 30),
        ),
        # The day before, 02:30 EST is 07:30Z.
        (
            "30 2 * * *",
            NEW_YORK,
            utc(2026, 3, 7, 5),
            utc(2026, 3, 7, 7, 30),
            utc(2026, 3, 8, 7, 30),
        ),
        ("0 2 * * *", NEW_YORK, utc(2026, 3, 8, 5), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0)),
        # Unaffected times keep their wall time on both sides of the change.
        (
            "30 1 * * *",
            NEW_YORK,
            utc(2026, 3, 8, 5),
            utc(2026, 3, 8, 6, 30),
            utc(2026, 3, 9, 5, 30),
        ),
        (
            "30 3 * * *",
            NEW_YORK,
            utc(2026, 3, 8, 5),
            utc(2026, 3, 8, 7, 30),
            utc(2026, 3, 9, 7, 30),
        ),
        # 01:30 does not exist on 2026-03-29 in London: 02:30 BST.
        ("30 1 * * *", LONDON, utc(2026, 3, 29), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)),
        # Lord Howe skips 02:00-02:30: 02:15 runs 30 minutes later, at 02:45 LHDT.
        (
            "15 2 * * *",
            LORD_HOWE,
            utc(2026, 10, 3, 13, 30),
            utc(2026, 10, 3, 15, 45),
            utc(2026, 10, 4, 15, 15),
        ),
        (
            "0 2 * * *",
            LORD_HOWE,
            utc(2026, 10, 3, 13),
            utc(2026, 10, 3, 15, 30),
            utc(2026, 10, 4, 15),
        ),
        # 02:40 exists (after the gap) and is earlier than the shifted 02:15 (02:45).
        (
            "15,40 2 * * *",
            LORD_HOWE,
            utc(2026, 10, 3, 13, 30),
            utc(2026, 10, 3, 15, 40),
            utc(2026, 10, 3, 15, 45),
        ),
    ],
)
def test_a_skipped_wall_time_runs_shifted_by_the_gap(
    expression: str, tz: str, after: datetime, expected: datetime, then: datetime
) -> None:
    first = next_occurrence(expression, tz, after)
    assert first == expected
    assert next_occurrence(expression, tz, first) == then


def test_a_shifted_time_landing_on_a_real_one_runs_once() -> None:
    # Given 02:15 (skipped, shifted to 02:45 LHDT) and 02:45 (real) on the night of the change
    runs = occurrences("15,45 2 * * *", LORD_HOWE, utc(2026, 10, 3, 12), utc(2026, 10, 4, 16))
    # Then 02:45 LHDT (15:45Z) runs once, and the next night both run normally
    assert runs == [utc(2026, 10, 3, 15, 45), utc(2026, 10, 4, 15, 15), utc(2026, 10, 4, 15, 45)]


# ------------------------------------------------------------------------------ DST: repeats


@pytest.mark.parametrize(
    ("expression", "tz", "after", "expected", "then"),
    [
        # 01:30 happens twice on 2026-11-01 in New York: it runs at the first (EDT, 05:30Z).
        (
            "30 1 * * *",
            NEW_YORK,
            utc(2026, 11, 1, 4),
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 2, 6, 30),
        ),
        # Asked from inside the repeated hour's second pass, it does not run again that night.
        (
            "30 1 * * *",
            NEW_YORK,
            utc(2026, 11, 1, 6),
            utc(2026, 11, 2, 6, 30),
            utc(2026, 11, 3, 6, 30),
        ),
        (
            "30 1 * * *",
            LONDON,
            utc(2026, 10, 24, 23),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 26, 1, 30),
        ),
        # Lord Howe repeats 01:30-02:00: 01:45 runs at 01:45 LHDT (14:45Z) only.
        (
            "45 1 * * *",
            LORD_HOWE,
            utc(2026, 4, 4, 13),
            utc(2026, 4, 4, 14, 45),
            utc(2026, 4, 5, 15, 15),
        ),
        # 01:15 is not repeated on Lord Howe (only 01:30-02:00 is).
        (
            "15 1 * * *",
            LORD_HOWE,
            utc(2026, 4, 4, 13),
            utc(2026, 4, 4, 14, 15),
            utc(2026, 4, 5, 14, 45),
        ),
    ],
)
def test_a_repeated_wall_time_runs_once_at_its_first_occurrence(
    expression: str, tz: str, after: datetime, expected: datetime, then: datetime
) -> None:
    first = next_occurrence(expression, tz, after)
    assert first == expected
    assert next_occurrence(expression, tz, first) == then


@pytest.mark.parametrize(
    ("expression", "tz", "start", "expected"),
    [
        (
            "*/30 * * * *",
            NEW_YORK,
            utc(2026, 11, 1, 4),
            [
                utc(2026, 11, 1, 4, 30),
                *(utc(2026, 11, 1, 5) + timedelta(minutes=30 * i) for i in range(5)),
            ],
        ),
        (
            "0 * * * *",
            NEW_YORK,
            utc(2026, 11, 1, 4),
            [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)],
        ),
        (
            "*/20 * * * *",
            LONDON,
            utc(2026, 10, 24, 23, 40),
            [utc(2026, 10, 25) + timedelta(minutes=20 * i) for i in range(7)],
        ),
        (
            "*/30 * * * *",
            LORD_HOWE,
            utc(2026, 4, 4, 13, 30),
            [utc(2026, 4, 4, 14) + timedelta(minutes=30 * i) for i in range(4)],
        ),
    ],
)
def test_hour_wildcard_schedules_follow_elapsed_time_through_a_repeat(
    expression: str, tz: str, start: datetime, expected: list[datetime]
) -> None:
    # When the schedule is iterated from `start` through the repeated hour
    runs = occurrences(expression, tz, start, expected[-1])
    # Then it runs in both passes, evenly spaced in elapsed time
    assert runs == expected


# ------------------------------------------------------------------------------ DST: iterating

TRANSITIONS = [
    pytest.param(NEW_YORK, utc(2026, 3, 8, 3), 0, id="new-york-spring"),
    pytest.param(NEW_YORK, utc(2026, 11, 1, 2), 60, id="new-york-autumn"),
    pytest.param(LONDON, utc(2026, 3, 28, 22), 0, id="london-spring"),
    pytest.param(LONDON, utc(2026, 10, 24, 22), 60, id="london-autumn"),
    pytest.param(LORD_HOWE, utc(2026, 4, 4, 11), 30, id="lord-howe-autumn"),
    pytest.param(LORD_HOWE, utc(2026, 10, 3, 12), 0, id="lord-howe-spring"),
]
WINDOW = timedelta(hours=8)


@pytest.mark.parametrize(("tz", "start", "repeated_minutes"), TRANSITIONS)
@pytest.mark.parametrize("step", [1, 30])
def test_iterating_through_a_transition_is_strictly_increasing_and_elapsed_time_even(
    tz: str, start: datetime, repeated_minutes: int, step: int
) -> None:
    expression = "* * * * *" if step == 1 else "*/30 * * * *"
    # When the schedule is iterated through the change
    runs = occurrences(expression, tz, start, start + WINDOW)
    # Then no instant repeats and every run is `step` minutes after the one before: a skipped
    # hour costs no run (its times are the following hour's) and a repeated one adds its runs.
    assert len(set(runs)) == len(runs)
    gaps = {later - earlier for earlier, later in pairwise(runs)}
    assert gaps == {timedelta(minutes=step)}
    assert len(runs) == WINDOW // timedelta(minutes=step)


@pytest.mark.parametrize(("tz", "start", "repeated_minutes"), TRANSITIONS)
@pytest.mark.parametrize("step", [1, 30])
def test_hour_wildcard_schedules_run_in_both_passes_of_the_repeat(
    tz: str, start: datetime, repeated_minutes: int, step: int
) -> None:
    expression = "* * * * *" if step == 1 else "*/30 * * * *"
    zone_info = ZoneInfo(tz)
    runs = occurrences(expression, tz, start, start + WINDOW)
    # Count the runs whose local wall time falls in each wall-clock minute.
    per_wall: dict[datetime, int] = {}
    for run in runs:
        wall = run.astimezone(zone_info).replace(tzinfo=None, fold=0)
        per_wall[wall] = per_wall.get(wall, 0) + 1
    twice = sum(1 for count in per_wall.values() if count == 2)
    assert max(per_wall.values()) <= 2
    # The repeated wall times (60 or 30 minutes of them) run twice; no other does.
    assert twice == repeated_minutes // step


@pytest.mark.parametrize(("tz", "start", "repeated_minutes"), TRANSITIONS)
def test_a_fixed_hour_inside_the_repeat_runs_only_once(
    tz: str, start: datetime, repeated_minutes: int
) -> None:
    # "*/10 1 * * *" names the hour, so the repeated 01:xx times run once each.
    runs = occurrences("*/10 1 * * *", tz, start, start + WINDOW)
    walls = [run.astimezone(ZoneInfo(tz)).replace(tzinfo=None, fold=0) for run in runs]
    assert len(set(walls)) == len(walls)
    assert runs == sorted(set(runs))
    assert len(runs) == 6  # 01:00 to 01:50, once each (shifted where the night skips them)


# ------------------------------------------------------------------------------ DST: reference


def reference(expression: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """The documented rules, by brute force over every minute of (start, end]:
    - an instant runs if its local wall time matches (a repeated wall time only in its first
      pass, unless the hour field is `*`);
    - a matching wall time that does not exist runs at its pre-change offset, which lands it
      the length of the gap after the jump."""
    zone_info = ZoneInfo(tz)
    every_pass = expression.split()[1] == "*"
    runs = set()
    instant = start + timedelta(minutes=1)
    while instant <= end:
        local = instant.astimezone(zone_info)
        wall = local.replace(tzinfo=None)
        if croniter.match(expression, wall) and (every_pass or local.fold == 0):
            runs.add(instant)
        instant += timedelta(minutes=1)
    wall = start.astimezone(zone_info).replace(tzinfo=None) - timedelta(hours=3)
    while wall <= end.astimezone(zone_info).replace(tzinfo=None):
        shifted = wall.replace(tzinfo=zone_info).astimezone(UTC)
        missing = shifted.astimezone(zone_info).replace(tzinfo=None) != wall
        if missing and croniter.match(expression, wall) and start < shifted <= end:
            runs.add(shifted)
        wall += timedelta(minutes=1)
    return sorted(runs)


@pytest.mark.parametrize(("tz", "start", "repeated_minutes"), TRANSITIONS)
@pytest.mark.parametrize(
    "expression", ["*/20 * * * *", "15,40 * * * *", "15,40 1,2 * * *", "0,30 0-4 * * *"]
)
def test_iterating_matches_the_documented_rules(
    tz: str, start: datetime, repeated_minutes: int, expression: str
) -> None:
    end = start + WINDOW
    assert occurrences(expression, tz, start, end) == reference(expression, tz, start, end)


@pytest.mark.parametrize(("tz", "start", "repeated_minutes"), TRANSITIONS)
def test_any_starting_instant_gets_the_first_run_after_it(
    tz: str, start: datetime, repeated_minutes: int
) -> None:
    # Given every 7 minutes (and odd seconds) of the transition window as `after`
    expression = "*/20 * * * *"
    runs = reference(
        expression, tz, start - timedelta(hours=1), start + WINDOW + timedelta(hours=1)
    )
    after = start
    while after < start + WINDOW:
        for moment in (after, after + timedelta(seconds=17)):
            # Then the answer is the earliest documented run after it
            expected = next(run for run in runs if run > moment)
            assert next_occurrence(expression, tz, moment) == expected, moment
        after += timedelta(minutes=7)
