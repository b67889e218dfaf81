"""What the watcher and the run services need from the schedule table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from scheduler.schedule.schedule_item import ScheduleItem


class ScheduleStore(Protocol):
    def due(self, start: datetime, end: datetime) -> Iterator[ScheduleItem]:
        """Items due in [start, end]: a cost that depends on the items, never on the jobs."""

    def delete(self, item: ScheduleItem) -> None: ...

    def cursor(self) -> int | None:
        """Epoch second up to which every due item has been taken (None before the first tick)."""

    def advance_cursor(self, until: int) -> None:
        """Move the cursor forward only."""

    def swept(self) -> int | None:
        """The highest deadline the sweep has looked at (None before its first time)."""

    def advance_swept(self, until: int) -> None:
        """Move the sweep's cursor forward only."""
