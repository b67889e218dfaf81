"""Watcher scaling: one tick with 1k, 10k and 100k jobs stored and the same 100 due.

Each size gets its own tables in one moto server: N jobs and their N schedule items (each job's
one "next" item), written with BatchWriteItem. 100 of them are due within the tick's window;
the others are spread over the next 24 hours, as the next occurrences of hourly and daily jobs
would be. The tick runs with a fixed clock (the watcher's `clock`), chosen so that its window
[now - 300 s, now + 90 s] straddles an hour boundary: two hour buckets, the most a tick reads.

Counted during the tick: DynamoDB requests by operation, items read (Query ScannedCount,
GetItem/BatchGetItem items), request units, and the tick's wall time (moto-bound).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.aws_meter import component
from bench.common import (
    Mode,
    batch_write,
    build_stack,
    fmt,
    function_logs,
    mean_item_sizes,
    meter_for,
    moto_server,
    say,
    table,
    write_result,
)
from scheduler import keys, times, wiring
from scheduler.aws.dynamo import dump
from scheduler.jobs.job_models import Job, JobStatus
from scheduler.jobs.job_repository import job_item
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.schedule.schedule_repository import ScheduleRepository

DUE_FULL, DUE_QUICK = 100, 20
DAY = 24 * 3600


def tick_instant() -> datetime:
    """60 s before the next hour: the window [t - 300, t + 90] touches two hour buckets."""
    now = datetime.now(UTC)
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return next_hour - timedelta(seconds=60)


def seed(stack: Any, meter: Any, size: int, due: int, shards: int, at: datetime) -> float:
    rng = random.Random(size)  # the same jobs due at every size
    digest = "0" * 64
    script_key = keys.script_key(digest)
    schedule = ScheduleRepository(None, table=stack.physical_names["ScheduleTable"], shards=shards)  # type: ignore[arg-type]
    jobs_table = stack.physical_names["JobsTable"]
    base = int(at.timestamp())
    job_items, schedule_items = [], []
    for i in range(size):
        job = Job.model_validate(
            {
                "job_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "user_id": f"owner{i % 500:04d}",
                "name": f"job-{i:06d}",
                "schedule": "0 0 1 1 *",
                "timezone": "UTC",
                "parameters": {},
                "status": JobStatus.ACTIVE,
                "next_run_at": None,
                "script_sha256": digest,
                "timeout_seconds": 300,
                "max_attempts": 3,
                "created_at": at,
                "updated_at": at,
            }
        )
        # The first `due` jobs are due within the next minute; the others later today, beyond
        # any look-ahead (the derived one is 170 s).
        second = base + i * 60 // due if i < due else base + 600 + rng.randrange(DAY)
        item = ScheduleItem(
            job_id=job.job_id, user_id=job.user_id, scheduled_at=second, due_at=second
        )
        # the job shows its item's occurrence as its next run, as the API leaves it
        shown = job.model_copy(update={"next_run_at": datetime.fromtimestamp(second, UTC)})
        item_of_job = dump(job_item(shown, script_key))
        meter.note_item(jobs_table, item_of_job)
        job_items.append(item_of_job)
        schedule_items.append(dump(schedule.item_of(item)))
    began = time.perf_counter()
    batch_write(jobs_table, job_items, threads=4)
    batch_write(schedule.table, schedule_items, threads=4)
    return time.perf_counter() - began


def one_tick(size: int, due: int, shards: int, at: datetime, prefix: str) -> dict[str, Any]:
    stack = build_stack(prefix, shards=shards)
    meter = meter_for(stack)
    meter.install()
    say(f"watcher_scaling: {size:,} jobs, {shards} shards: seeding")
    seed_seconds = seed(stack, meter, size, due, shards, at)
    os.environ.update(stack.environment("WatcherFunction"))
    wiring.use_clock(lambda: at)  # a fixed instant (see tick_instant)
    watcher = wiring.watcher()
    meter.reset()
    with component("WatcherFunction"):
        cpu, began = time.thread_time(), time.perf_counter()
        report = watcher.tick()
        wall, cpu = time.perf_counter() - began, time.thread_time() - cpu
    wiring.use_clock(times.utc_now)
    usage = meter.finalize(mean_item_sizes(stack)).get("WatcherFunction", {})
    calls = meter.calls_by().get("WatcherFunction", {})
    reads = usage.get("read_requests", 0)
    writes = usage.get("write_requests", 0)
    say(
        f"watcher_scaling: {size:,} jobs: tick {wall:.1f} s, {reads} reads, {writes} writes, "
        f"{usage.get('items_read', 0)} items read (seeded in {seed_seconds:.0f} s)"
    )
    return {
        "jobs": size,
        "shards": shards,
        "due": due,
        "queued": report.queued,
        "items_taken": report.items,
        "seed_seconds": seed_seconds,
        "tick_wall_s": wall,
        "tick_cpu_s_main_thread": cpu,
        "dynamodb_requests": usage.get("requests", {}),
        "dynamodb_read_requests": reads,
        "dynamodb_write_requests": writes,
        "dynamodb_requests_total": reads + writes,
        "items_read": usage.get("items_read", 0),
        "rru": usage.get("rru", 0.0),
        "wru": usage.get("wru", 0.0),
        "other_calls": {k: v for k, v in calls.items() if not k.startswith("dynamodb.")},
    }


def run(mode: Mode) -> dict[str, Any]:
    sizes = mode.pick([1_000, 10_000, 100_000], [300, 1_500])
    due = mode.pick(DUE_FULL, DUE_QUICK)
    at = tick_instant()
    work = mode.results_dir / "work"
    with (
        moto_server(work / "watcher_scaling-moto.log"),
        function_logs(work / "watcher_scaling-functions.log"),
    ):
        series = [one_tick(size, due, 4, at, f"w{size}") for size in sizes]
        # The template's default shard count (the local stack uses 4), at the smallest size.
        production = None if mode.quick else one_tick(sizes[0], due, 16, at, "w16s")
    first, last = series[0], series[-1]
    ratio = last["dynamodb_requests_total"] / first["dynamodb_requests_total"]
    read_ratio = last["dynamodb_read_requests"] / first["dynamodb_read_requests"]
    items_ratio = last["items_read"] / first["items_read"]
    rows = [
        (
            f"{r['jobs']:,}",
            r["shards"],
            r["queued"],
            r["dynamodb_read_requests"],
            r["dynamodb_write_requests"],
            ", ".join(f"{k} {v}" for k, v in sorted(r["dynamodb_requests"].items())),
            r["items_read"],
            fmt(r["rru"]),
            fmt(r["tick_wall_s"], 2),
            fmt(r["seed_seconds"], 0),
        )
        for r in [*series, *([production] if production else [])]
    ]
    markdown = "\n\n".join(
        [
            f"## Watcher scaling: one tick, the same {due} runs due",
            f"Tick at a fixed instant whose window straddles an hour boundary (two hour buckets, "
            f"the worst case). DynamoDB requests at {last['jobs']:,} jobs / at "
            f"{first['jobs']:,}: **{ratio:.2f}x** (reads {read_ratio:.2f}x, items read "
            f"{items_ratio:.2f}x; the target is <= 1.1x).",
            table(
                [
                    "jobs stored",
                    "shards",
                    "runs queued",
                    "read requests",
                    "write requests",
                    "by operation",
                    "items read",
                    "RRU",
                    "tick wall s (moto)",
                    "seeding s",
                ],
                rows,
            ),
            "Wall time grows with the table on moto only: moto answers a Query by scanning "
            "every item of the table; DynamoDB reads only the key range.",
        ]
    )
    data = {
        "tick_at": at.isoformat(),
        "series": series,
        "production_shards": production,
        "requests_ratio_largest_vs_smallest": ratio,
        "read_requests_ratio": read_ratio,
        "items_read_ratio": items_ratio,
        "flat": ratio <= 1.1 and items_ratio <= 1.1,
    }
    write_result(mode, "watcher_scaling", data, markdown)
    return data
