"""Previewing a schedule: its next occurrences, in UTC and local time, each marked when
daylight saving moved its wall time forward (shifted) or made it occur twice (repeated), across
the New York, London and Lord Howe changes (Lord Howe's clocks move by 30 minutes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.jobs.job_service import schedule_preview
from scheduler.schedule.cron import upcoming


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "zone", "after", "expected"),
    [
        # New York, 2026-03-08: 02:00 -> 03:00; 02:30 does not exist and runs at 03:30 EDT
        (
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 7),
            [(utc(2026, 3, 7, 7, 30), None), (utc(2026, 3, 8, 7, 30), "shifted")],
        ),
        # New York, 2026-11-01: 01:00-02:00 occurs twice; 01:30 runs once, at the first
        (
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31),
            [(utc(2026, 10, 31, 5, 30), None), (utc(2026, 11, 1, 5, 30), "repeated")],
        ),
        # London, 2026-03-29: 01:00 -> 02:00
        (
            "15 1 * * *",
            "Europe/London",
            utc(2026, 3, 28),
            [(utc(2026, 3, 28, 1, 15), None), (utc(2026, 3, 29, 1, 15), "shifted")],
        ),
        # Lord Howe, 2026-10-04: 02:00 -> 02:30 (a half-hour change)
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            utc(2026, 10, 2, 12),
            [(utc(2026, 10, 2, 15, 45), None), (utc(2026, 10, 3, 15, 45), "shifted")],
        ),
    ],
)
def test_occurrences_are_marked_where_daylight_saving_touched_them(
    schedule: str, zone: str, after: datetime, expected: list[tuple[datetime, str | None]]
) -> None:
    assert upcoming(schedule, zone, after, len(expected)) == expected


def test_a_preview_shows_each_occurrence_in_utc_and_in_the_zone() -> None:
    preview = schedule_preview("30 2 * * *", "America/New_York", utc(2026, 3, 7), 3)
    assert [o.local.isoformat() for o in preview.occurrences] == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]
    assert [o.dst for o in preview.occurrences] == [None, "shifted", None]
    assert all(
        o.at.tzinfo is not None and o.at.utcoffset() == UTC.utcoffset(None)
        for o in preview.occurrences
    )


def test_a_schedule_that_stops_firing_gives_what_there_is() -> None:
    assert upcoming("0 0 29 2 *", "UTC", utc(2026, 1, 1), 2) == [
        (utc(2028, 2, 29), None),
        (utc(2032, 2, 29), None),
    ]
