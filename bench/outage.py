"""A watcher outage on the local stack: 100 every-minute jobs (a third each with catch-up ALL,
LATEST and NONE), the watcher down for 3 hours, then back. (Quick: 20 jobs, 40 minutes.)

The outage is replayed, not waited for: with the watcher paused (`.local/watcher.paused`, as
when EventBridge stops invoking it), the state a 3-hour outage leaves is written: each job's next
occurrence 3 hours ago (JobStore.advance, as a tick would have left it) and the watcher's cursor
3 hours ago. Then the watcher is resumed, ticking every 5 s (the pace changes how long the
catch-up takes on the wall clock, not what each tick does), and the stack runs what its policy
says.

Reported: per catch-up tick, the schedule it covered and the items it took (bounded by
`max_window_seconds` = 30 min of schedule per tick, whatever the outage); then per job and
minute of the outage, whether the occurrence has exactly one run and whether its status is what
the policy says: ALL runs what was missed in the last hour (`window_seconds` 3600) and records
the older ones SKIPPED; LATEST runs the last missed one only; NONE runs none. Lost = an
occurrence with no run; twice = an occurrence with two runs or a run with more than one attempt.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench.api_load import LocalStack, start_stack, stop_stack
from bench.common import Mode, admin_client, fmt, moto_server, say, table, write_result
from devstack.template import local_stack
from scheduler import times
from scheduler.aws.dynamo import dump
from scheduler.jobs.job_repository import JobRepository
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.schedule.schedule_repository import CURSOR_BUCKET, CURSOR_SLOT, ScheduleRepository

POLICIES = ("ALL", "LATEST", "NONE")
WINDOW = 3600  # the default catch-up window
TICK_SECONDS = 5
SHARDS = 4  # the local stack's


class Client:
    def __init__(self, stack: LocalStack) -> None:
        self.url = stack.url
        self.headers = {
            "Authorization": f"Bearer {stack.token('outage')}",
            "Content-Type": "application/json",
        }

    def create(self, policy: str) -> str:
        body = {
            "name": f"outage-{uuid.uuid4().hex[:12]}",
            "schedule": "* * * * *",
            "script": "print('caught up')\n",
            "catch_up": {"policy": policy, "window_seconds": WINDOW},
        }
        response = requests.post(f"{self.url}/jobs", json=body, headers=self.headers, timeout=30)
        response.raise_for_status()
        return str(response.json()["job_id"])

    def runs(self, job_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = None
        while True:
            params: dict[str, Any] = {"limit": 100} | ({"next_token": token} if token else {})
            response = requests.get(
                f"{self.url}/jobs/{job_id}/runs", params=params, headers=self.headers, timeout=30
            )
            response.raise_for_status()
            page = response.json()
            found += page["items"]
            token = page.get("next_token")
            if not token:
                return found


def rewind(job_ids: list[str], outage_start: datetime, state_dir: Path) -> None:
    """Leave the state a watcher outage since `outage_start` would have left (as the admin of
    the stack in `state_dir`)."""
    stack = local_stack("local", {"ScheduleShards": str(SHARDS)})
    dynamodb = admin_client("dynamodb", state_dir)
    schedule = ScheduleRepository(
        dynamodb, table=stack.physical_names["ScheduleTable"], shards=SHARDS
    )
    jobs = JobRepository(dynamodb, jobs_table=stack.physical_names["JobsTable"], schedule=schedule)
    for job_id in job_ids:
        job = jobs.get(job_id)
        assert job is not None
        assert job.next_run_at is not None
        current = ScheduleItem.occurrence(job.job_id, job.user_id, job.next_run_at)
        assert jobs.advance(job, current, outage_start) is not None
    # The cursor only moves forward through the repository; an outage leaves it behind.
    dynamodb.put_item(
        TableName=stack.physical_names["ScheduleTable"],
        Item=dump(
            {"bucket": CURSOR_BUCKET, "slot": CURSOR_SLOT, "until": int(outage_start.timestamp())}
        ),
    )


def expected(policy: str, second: int, taken: int) -> str:
    """What the policy makes of the occurrence at `second`, taken (its run created) at `taken`
    by a catch-up tick: missed if taken over 60 s after its second."""
    missed_by = taken - second
    if missed_by <= 60:
        return "SUCCEEDED"  # late, not missed
    if policy == "NONE" or missed_by > WINDOW:
        return "SKIPPED"
    if policy == "LATEST" and taken - (second + 60) > 60:
        return "SKIPPED"  # the following occurrence was missed too: it runs instead
    return "SUCCEEDED"


def outage_seconds(outage_start: datetime, resumed: float) -> list[int]:
    """The occurrences the outage touched: from its start to the first one after the resume."""
    until = int(resumed) - int(resumed) % 60 + 60
    return list(range(int(outage_start.timestamp()), until + 1, 60))


def ticks_of(results: dict[str, list[dict[str, Any]]], resumed: float) -> list[dict[str, Any]]:
    """The catch-up ticks, from the runs they created: a tick creates its runs with its own
    `now` as their `created_at`, so runs that share it were made by one tick (those created
    before the resume were taken early by the create)."""
    ticks: dict[str, dict[str, Any]] = {}
    for runs in results.values():
        for run in runs:
            if datetime.fromisoformat(run["created_at"]).timestamp() < resumed:
                continue
            tick = ticks.setdefault(
                run["created_at"], {"at": run["created_at"], "runs": 0, "first": 1 << 62, "last": 0}
            )
            tick["runs"] += 1
            tick["first"] = min(tick["first"], run["execution_time"])
            tick["last"] = max(tick["last"], run["execution_time"])
    return sorted(ticks.values(), key=lambda t: str(t["at"]))


def run(mode: Mode) -> None:
    jobs_per_policy = mode.pick(34, 7)
    hours = mode.pick(3.0, 40 / 60)
    work = Path(".local/bench")
    work.mkdir(parents=True, exist_ok=True)
    options = ["--watcher-interval", str(TICK_SECONDS)]
    with moto_server(work / "outage-moto.log") as moto:
        stack = start_stack(work / "outage", moto.endpoint, moto.pid, *options)
        try:
            client = Client(stack)
            paused = stack.state_dir / "watcher.paused"
            paused.touch()
            time.sleep(TICK_SECONDS * 2)  # a tick under way ends
            jobs = {p: [client.create(p) for _ in range(jobs_per_policy)] for p in POLICIES}
            now = datetime.now(UTC)
            outage_start = (now - timedelta(hours=hours)).replace(second=0, microsecond=0)
            rewind([j for ids in jobs.values() for j in ids], outage_start, stack.state_dir)
            say(f"outage: {3 * jobs_per_policy} jobs, watcher down since {outage_start:%H:%M}")
            paused.unlink()
            resumed = time.time()
            results = settle(client, jobs, outage_start, resumed)
            caught_up = time.time() - resumed
        finally:
            stop_stack(stack)
    ticks = ticks_of(results, resumed)
    report(mode, jobs, results, ticks, outage_start, resumed, caught_up, hours)


def settle(
    client: Client, jobs: dict[str, list[str]], outage_start: datetime, resumed: float
) -> dict[str, list[dict[str, Any]]]:
    """Every job's runs, once every occurrence up to the resume has an ended run."""
    seconds = set(outage_seconds(outage_start, resumed))
    deadline = time.monotonic() + 1800
    while True:
        results = {job_id: client.runs(job_id) for ids in jobs.values() for job_id in ids}
        done = all(
            {r["execution_time"] for r in runs if r["status"] in ("SUCCEEDED", "SKIPPED")}
            >= seconds
            for runs in results.values()
        )
        if done or time.monotonic() > deadline:
            return results
        time.sleep(30)  # listing every job's runs is itself load on the stack


def report(
    mode: Mode,
    jobs: dict[str, list[str]],
    results: dict[str, list[dict[str, Any]]],
    ticks: list[dict[str, Any]],
    outage_start: datetime,
    resumed: float,
    caught_up: float,
    hours: float,
) -> None:
    seconds = outage_seconds(outage_start, resumed)
    rows, totals = [], {"lost": 0, "twice": 0, "wrong": 0, "ran": 0, "skipped": 0}
    for policy, ids in jobs.items():
        counts = {"lost": 0, "twice": 0, "wrong": 0, "ran": 0, "skipped": 0}
        for job_id in ids:
            by_second: dict[int, list[dict[str, Any]]] = {}
            for run in results[job_id]:
                by_second.setdefault(run["execution_time"], []).append(run)
            for second in seconds:
                found = by_second.get(second, [])
                if not found:
                    counts["lost"] += 1
                    continue
                if len(found) > 1 or found[0]["attempt"] > 1:
                    counts["twice"] += 1
                status = found[0]["status"]
                counts["ran" if status == "SUCCEEDED" else "skipped"] += 1
                taken = int(datetime.fromisoformat(found[0]["created_at"]).timestamp())
                if status != expected(policy, second, taken):
                    counts["wrong"] += 1
        rows.append(
            [
                policy,
                len(ids),
                len(seconds) * len(ids),
                *(counts[name] for name in ("ran", "skipped", "lost", "twice", "wrong")),
            ]
        )
        for name in totals:
            totals[name] += counts[name]
    tick_rows = [
        [
            t["at"][11:19],
            times.to_text(datetime.fromtimestamp(t["first"], UTC))[11:16],
            times.to_text(datetime.fromtimestamp(t["last"], UTC))[11:16],
            t["runs"],
        ]
        for t in ticks[:12]
    ]
    data = {
        "jobs": sum(len(ids) for ids in jobs.values()),
        "outage_hours": hours,
        "occurrences": len(seconds) * sum(len(ids) for ids in jobs.values()),
        "catch_up_seconds": caught_up,
        "ticks": ticks,
        "totals": totals,
        "per_policy": rows,
    }
    markdown = "\n\n".join(
        [
            "## Watcher outage: catch-up (bench/outage.py)",
            f"{data['jobs']} every-minute jobs, the watcher down for {hours * 60:.0f} min "
            f"({len(seconds)} occurrences each, from the outage's start to the first after it), "
            f"then ticking every {TICK_SECONDS} s; "
            f"every occurrence accounted for after {fmt(caught_up, 0)} s.",
            table(
                [
                    "policy",
                    "jobs",
                    "occurrences",
                    "ran",
                    "skipped",
                    "lost",
                    "twice",
                    "not per policy",
                ],
                rows,
            ),
            "`ran` counts the runs that executed: the missed ones the policy runs, and those "
            "taken before the outage or after it, on time. `not per policy` counts runs whose "
            "status is not what the policy says for the time they were taken.",
            "Catch-up ticks (the first 12, from the runs each created): each covers at most "
            "30 min of schedule (`max_window_seconds`), so its work is bounded by jobs x 30 "
            "occurrences however long the outage; the cursor takes the next tick on from there.",
            table(["tick at", "occurrences from", "to", "runs created"], tick_rows),
        ]
    )
    write_result(mode, "outage", data, markdown)
