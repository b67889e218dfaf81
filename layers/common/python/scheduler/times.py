"""Every time helper in one place: the clock, epoch seconds, and the fixed-width text stored in
DynamoDB (whose string order is time order)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    """The production clock; services take a `Clock` so that tests control time."""
    return datetime.now(UTC)


def epoch(instant: datetime) -> int:
    """Whole epoch seconds of an aware instant."""
    return int(instant.astimezone(UTC).timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def to_text(instant: datetime) -> str:
    """Fixed width, the year too (strftime's %Y does not pad a year before 1000 on Linux)."""
    utc = instant.astimezone(UTC)
    return f"{utc.year:04d}{utc.strftime(_FORMAT.removeprefix('%Y'))}"


def from_text(text: str) -> datetime:
    # Earlier versions stored a year before 1000 unpadded ("675-01-02T..."): read those too.
    year, _, rest = text.partition("-")
    return datetime.strptime(f"{year.zfill(4)}-{rest}", _FORMAT).replace(tzinfo=UTC)
