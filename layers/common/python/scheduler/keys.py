"""Key formats of the schedule and runs tables. String order of every sort key is time order."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

EPOCH_DIGITS = 10  # zero-padded epoch seconds sort as strings until the year 2286


def epoch_text(instant: datetime) -> str:
    return f"{int(instant.timestamp()):0{EPOCH_DIGITS}d}"


def shard_of(job_id: str, shards: int) -> int:
    """The schedule shard a job's items live in: stable, and even over random job ids."""
    return zlib.crc32(job_id.encode()) % shards


def hour_bucket(instant: datetime, shard: int) -> str:
    """Partition key of a schedule item: the dated UTC hour plus a shard, e.g. 2026-11-27T16#07."""
    return f"{instant.astimezone(UTC):%Y-%m-%dT%H}#{shard:02d}"


def schedule_slot(instant: datetime, job_id: str) -> str:
    """Sort key of a schedule item: `<execution_time>#<job_id>`."""
    return f"{epoch_text(instant)}#{job_id}"


def run_key(instant: datetime, job_id: str) -> str:
    """A run's key, as in the seed: `<execution_time>-<job_id>`."""
    return f"{epoch_text(instant)}-{job_id}"
