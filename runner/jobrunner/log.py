"""Logging and time: one JSON line per event on stderr, and the UTC timestamp formats."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

_log_lock = threading.Lock()


def iso_ms(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds: ``2026-11-27T16:00:00.012Z``."""
    instant = datetime.fromtimestamp(epoch, UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def iso_seconds(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(event: str, level: str = "info", **fields: Any) -> None:
    """One JSON line per event on stderr. Never pass a presigned URL here."""
    record = {"ts": iso_ms(time.time()), "level": level, "event": event, **fields}
    line = json.dumps(record, default=str, separators=(",", ":"))
    with _log_lock:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
