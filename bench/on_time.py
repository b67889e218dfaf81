"""On time under production pacing: the local stack with its watcher ticking once a minute at a
random second (as the EventBridge rule does), and, in the Fargate-like pass, every runner task
starting 30-90 s after dispatch (`--task-start-delay 30-90`, which also sizes the dispatch lead
for 90 s, as TASK_START_SECONDS does on AWS). A second pass with tasks that start at once (the
local backend as `make run` has it) shows the API-created cases without Fargate's start.

Cases, each a separate set of jobs:
- every_minute: `* * * * *` jobs, created at the start: their runs due at least a task start
  (+ 5 s of dispatch) after the create;
- every_minute_first: the same jobs' first runs, due sooner than that after the create (as
  created_soon: no task can be up in time on Fargate);
- one_off: jobs whose one occurrence of the run is minutes after their creation;
- created_soon: jobs created 10-50 s before their first occurrence;
- updated_soon: yearly jobs whose schedule is changed 10-50 s before the new occurrence.

Reported per case: start lag (scheduled second -> script start, from each run's start_lag_ms)
p50/p99/max against the 2 s promise, and per run the task's idle time (task started -> the run's
second: billed Fargate time that runs no script), from the local tasks' logs.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.api_load import LocalStack, start_stack, stop_stack
from bench.common import Mode, fmt, moto_server, say, summary, table, write_result

PROMISE_MS = 2000
SCRIPT = "print('on time')\n"
CASES = ("every_minute", "one_off", "created_soon", "updated_soon")
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED"}


class Client:
    def __init__(self, stack: LocalStack) -> None:
        self.url = stack.url
        self.headers = {
            "Authorization": f"Bearer {stack.token('bench')}",
            "Content-Type": "application/json",
        }

    def create(self, schedule: str) -> str:
        body = {"name": f"on-time-{uuid.uuid4().hex[:12]}", "schedule": schedule, "script": SCRIPT}
        response = requests.post(f"{self.url}/jobs", json=body, headers=self.headers, timeout=30)
        response.raise_for_status()
        return str(response.json()["job_id"])

    def update(self, job_id: str, schedule: str) -> None:
        response = requests.patch(
            f"{self.url}/jobs/{job_id}",
            json={"schedule": schedule},
            headers=self.headers,
            timeout=30,
        )
        response.raise_for_status()

    def runs(self, job_id: str) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.url}/jobs/{job_id}/runs?limit=100", headers=self.headers, timeout=30
        )
        response.raise_for_status()
        runs: list[dict[str, Any]] = response.json()["items"]
        return runs


def daily_at(moment: int) -> str:
    """A cron expression that fires at `moment` (a UTC minute boundary) once a day."""
    at = datetime.fromtimestamp(moment, UTC)
    return f"{at.minute} {at.hour} * * *"


def boundaries(start: float, end: float) -> Iterator[int]:
    minute = int(start) // 60 * 60 + 60
    while minute < end:
        yield minute
        minute += 60


def drive(client: Client, minutes: int, rng: random.Random) -> tuple[dict[str, list[str]], int]:
    """Create the jobs of every case over `minutes` minutes of real time; returns them and the
    last second any of them is due at (within the period)."""
    jobs: dict[str, list[str]] = {case: [] for case in CASES}
    began = time.time()
    last = int(began + 60 * minutes) // 60 * 60
    jobs["every_minute"] = [client.create("* * * * *") for _ in range(3)]
    spare = [client.create("0 0 1 1 *") for _ in range(minutes)]
    # Known in advance: due minutes after their creation, inside the period.
    one_off = list(boundaries(began + 100, last + 1))[:2]
    jobs["one_off"] = [client.create(daily_at(minute)) for minute in one_off]
    # One created and one updated job per minute, each 10-50 s before its occurrence.
    plan: list[tuple[float, str, int]] = []
    for minute in boundaries(began + 55, began + 60 * minutes):
        plan.append((minute - rng.uniform(10, 50), "created_soon", minute))
        plan.append((minute - rng.uniform(10, 50), "updated_soon", minute))
    for at, case, minute in sorted(plan):
        time.sleep(max(0.0, at - time.time()))
        if case == "created_soon":
            jobs[case].append(client.create(daily_at(minute)))
        else:
            job_id = spare.pop()
            client.update(job_id, daily_at(minute))
            jobs[case].append(job_id)
    return jobs, last


def collect(
    client: Client, jobs: dict[str, list[str]], until: float, drain: float
) -> dict[str, list[dict[str, Any]]]:
    """Every run due before `until`, once all of them have ended (or `drain` s have passed)."""
    deadline = time.time() + drain
    while True:
        found = {
            case: [
                run
                for job_id in ids
                for run in client.runs(job_id)
                if run["execution_time"] <= until and run["trigger"] == "SCHEDULE"
            ]
            for case, ids in jobs.items()
        }
        if all(r["status"] in TERMINAL for runs in found.values() for r in runs):
            return found
        if time.time() > deadline:
            return found
        time.sleep(5)


def idle_seconds(tasks_dir: Path) -> dict[str, float]:
    """Per run key: the seconds its task was up before the run's second (billed, idle)."""
    idle: dict[str, float] = {}
    for log in tasks_dir.glob("*.log"):
        started: float | None = None
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "task_started":
                started = float(event["at"])
            elif event.get("event") == "run_ready" and started is not None:
                idle[event["run_key"]] = max(0.0, float(event["not_before"]) - started)
    return idle


def one_pass(
    mode: Mode, work: Path, name: str, delay: str, minutes: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    tick_second = rng.randrange(60)
    options = ["--watcher-interval", "60", "--watcher-second", str(tick_second)]
    options += ["--task-start-delay", delay]
    with moto_server(work / f"on_time-{name}-moto.log") as moto:
        stack = start_stack(work / f"on_time-{name}", moto.endpoint, moto.pid, *options)
        try:
            client = Client(stack)
            say(f"on_time/{name}: ticks at :{tick_second:02d}, task start {delay} s")
            began = time.time()
            jobs, until = drive(client, minutes, rng)
            say(f"on_time/{name}: {sum(map(len, jobs.values()))} jobs; draining")
            high = float(delay.rsplit("-", maxsplit=1)[-1])
            runs = collect(client, jobs, until, drain=max(0.0, until - time.time()) + high + 60)
        finally:
            stop_stack(stack)
    idle = idle_seconds(work / f"on_time-{name}" / "tasks")
    # An every-minute job's first runs, due before any task could start, are a case apart.
    soon = began + high + 5
    steady = runs.pop("every_minute")
    runs = {
        "every_minute": [r for r in steady if r["execution_time"] >= soon],
        "every_minute_first": [r for r in steady if r["execution_time"] < soon],
    } | runs
    cases = {}
    for case, found in runs.items():
        lags = [r["start_lag_ms"] for r in found if r.get("start_lag_ms") is not None]
        cases[case] = {
            "runs": len(found),
            "started": len(lags),
            "succeeded": sum(r["status"] == "SUCCEEDED" for r in found),
            "late": sum(lag > PROMISE_MS for lag in lags),
            "start_lag_ms": summary(lags),
            "idle_s": summary([idle[r["key"]] for r in found if r["key"] in idle]),
        }
    return {
        "task_start_delay_s": delay,
        "tick_second": tick_second,
        "minutes": minutes,
        "seconds": time.time() - began,
        "cases": cases,
    }


def run(mode: Mode) -> dict[str, Any]:
    minutes = mode.pick(6, 3)
    work = mode.results_dir / "work"
    passes = {
        "fargate_like": one_pass(mode, work, "fargate", mode.pick("30-90", "5-15"), minutes, 11),
        "immediate_start": one_pass(mode, work, "immediate", "0", minutes, 12),
    }
    rows = []
    for name, result in passes.items():
        for case, figures in result["cases"].items():
            lag, idle = figures["start_lag_ms"], figures["idle_s"]
            rows.append(
                [
                    name,
                    case,
                    f"{figures['started']}/{figures['runs']}",
                    figures["late"],
                    fmt(lag["p50"], 0),
                    fmt(lag["p99"], 0),
                    fmt(lag["max"], 0),
                    fmt(idle["p50"], 0),
                    fmt(idle["max"], 0),
                ]
            )
    headers = [
        "pass",
        "case",
        "started/due",
        "late (> 2 s)",
        "lag p50 ms",
        "lag p99 ms",
        "lag max ms",
        "idle p50 s",
        "idle max s",
    ]
    settings = ", ".join(
        f"{name}: ticks at :{r['tick_second']:02d}, task start {r['task_start_delay_s']} s"
        for name, r in passes.items()
    )
    markdown = (
        "## On time under production pacing (`bench/on_time.py`)\n\n"
        f"Watcher once a minute at a fixed random second; {settings}; {minutes} minutes of "
        "jobs per pass. Lag: scheduled second -> script start; idle: task up -> the run's "
        "second.\n\n" + table(headers, rows)
    )
    data = {"passes": passes, "promise_ms": PROMISE_MS}
    write_result(mode, "on_time", data, markdown)
    return data
