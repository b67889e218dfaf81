"""What one run ended as: the statuses, and the outcome the finished report is made of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
TIMED_OUT: Final = "TIMED_OUT"
CANCELLED: Final = "CANCELLED"  # its cancel object appeared: never retried
SKIPPED: Final = "SKIPPED"  # the job's overlap policy: never started


@dataclass
class Outcome:
    status: str
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    start_lag_ms: int | None = None
    duration_ms: int | None = None
    output_bytes: int = 0
    output_truncated: bool = False
    tail: bytes = b""
    error: str | None = None
