"""The text form of instants stored in DynamoDB: fixed width, so string order is time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler import times


@pytest.mark.parametrize(
    "instant",
    [
        datetime(675, 1, 2, 7, 56, 12, tzinfo=UTC),  # found by fuzzing: a start_at in year 675
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 30, 20, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_every_year_round_trips_in_fixed_width_text(instant: datetime) -> None:
    text = times.to_text(instant)
    assert len(text) == len("2026-11-30T20:00:00.000000Z")
    assert times.from_text(text) == instant


def test_text_order_is_time_order_across_centuries() -> None:
    instants = [datetime(year, 6, 1, tzinfo=UTC) for year in (99, 675, 999, 1000, 2026)]
    assert sorted(instants, key=times.to_text) == instants


def test_a_year_stored_unpadded_by_earlier_versions_is_still_read() -> None:
    assert times.from_text("675-01-02T07:56:12.000000Z") == datetime(
        675, 1, 2, 7, 56, 12, tzinfo=UTC
    )
