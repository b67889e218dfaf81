"""Retry delays: exponential, capped. Pure."""

from __future__ import annotations


def retry_delay(attempt: int, base_seconds: int, cap_seconds: int = 3600) -> int:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2*base, 4*base..."""
    return int(min(cap_seconds, base_seconds * 2 ** max(0, attempt - 1)))
