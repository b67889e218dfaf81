"""Fairness between owners: one owner floods, another's runs still start on time.

The local stack (watcher -> SQS FIFO dispatch queue -> executor -> runner subprocesses, the
real handlers) with two owners:
- `flood`: many every-minute jobs (more than its runs_per_minute quota lets start in a minute,
  so some of its runs are deferred), and a client calling run now on them in a loop (beyond its
  run_now_per_minute quota: answered 429);
- `calm`: a few every-minute jobs.

Reported: `calm`'s start lag (scheduled second -> script start) against the 2 s promise, and
what the quotas did to `flood` (runs deferred and by how much, run-now calls answered 202 and
429). Nothing is asserted here: the figures are printed and written to bench/results/.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from bench.api_load import LocalStack, start_stack, stop_stack
from bench.common import Mode, fmt, moto_server, say, summary, table, write_result

PROMISE_MS = 2000
SCRIPT = "print('fair')\n"
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED", "CANCELLED"}


class Owner:
    def __init__(self, stack: LocalStack, user: str) -> None:
        self.user = user
        self.url = stack.url
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {stack.token(user)}", "Content-Type": "application/json"}
        )
        self.jobs: list[str] = []

    def create(self, schedule: str) -> None:
        body = {"name": f"{self.user}-{uuid.uuid4().hex[:10]}", "schedule": schedule}
        response = self.session.post(f"{self.url}/jobs", json=body | {"script": SCRIPT}, timeout=30)
        response.raise_for_status()
        self.jobs.append(str(response.json()["job_id"]))

    def run_now(self, job_id: str) -> int:
        response = self.session.post(f"{self.url}/jobs/{job_id}/run", timeout=30)
        return response.status_code

    def runs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for job_id in self.jobs:
            response = self.session.get(f"{self.url}/jobs/{job_id}/runs?limit=100", timeout=30)
            response.raise_for_status()
            found += response.json()["items"]
        return found


def flood_run_now(owner: Owner, stop: threading.Event, answers: Counter[int]) -> None:
    """Run now on the flood's jobs in a loop (a pause of 50 ms between calls), ignoring
    Retry-After, as a misbehaving client would."""
    index = 0
    while not stop.is_set():
        answers[owner.run_now(owner.jobs[index % len(owner.jobs)])] += 1
        index += 1
        stop.wait(0.05)


def collect(owner: Owner, since: int, until: int, drain: float) -> list[dict[str, Any]]:
    """The owner's runs scheduled in [since, until] (and its manual runs), once all ended."""
    deadline = time.time() + drain
    while True:
        runs = [r for r in owner.runs() if since <= r["execution_time"] <= until]
        if all(r["status"] in TERMINAL for r in runs) or time.time() > deadline:
            return runs
        time.sleep(5)


def lag_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    lags = [r["start_lag_ms"] for r in runs if r.get("start_lag_ms") is not None]
    return {
        "runs": len(runs),
        "started": len(lags),
        "succeeded": sum(r["status"] == "SUCCEEDED" for r in runs),
        "late": sum(lag > PROMISE_MS for lag in lags),
        "start_lag_ms": summary(lags),
    }


def run(mode: Mode) -> dict[str, Any]:
    minutes = mode.pick(5, 2)
    flood_jobs = mode.pick(150, 60)
    calm_jobs = 3
    runs_quota = flood_jobs * 2 // 3  # the flood asks for 1.5x what it may start a minute
    run_now_quota = 20
    interval = 10
    work: Path = mode.results_dir / "work"
    options = ["--watcher-interval", str(interval)]
    options += ["--function-env", f"QUOTA_RUNS_PER_MINUTE={runs_quota}"]
    options += ["--function-env", f"QUOTA_RUN_NOW_PER_MINUTE={run_now_quota}"]
    answers: Counter[int] = Counter()
    with moto_server(work / "fairness-moto.log") as moto:
        stack = start_stack(work / "fairness", moto.endpoint, moto.pid, *options)
        try:
            flood, calm = Owner(stack, "flood"), Owner(stack, "calm")
            for _ in range(calm_jobs):
                calm.create("* * * * *")
            for _ in range(flood_jobs):
                flood.create("* * * * *")
            began = time.time()
            since = int(began) // 60 * 60 + 60  # the first whole minute after the creates
            until = since + 60 * (minutes - 1)
            say(
                f"fairness: {flood_jobs} flood jobs (runs_per_minute {runs_quota}), "
                f"{calm_jobs} calm jobs; run now flooding (run_now_per_minute {run_now_quota}); "
                f"{minutes} min"
            )
            stop = threading.Event()
            flooding = threading.Thread(target=flood_run_now, args=(flood, stop, answers))
            flooding.start()
            time.sleep(max(0.0, until + 5 - time.time()))
            stop.set()
            flooding.join()
            say("fairness: draining")
            calm_runs = collect(calm, since, until, drain=120)
            flood_runs = collect(flood, since, until + 60, drain=120)
        finally:
            stop_stack(stack)
    scheduled = [
        r for r in flood_runs if r["trigger"] == "SCHEDULE" and r["execution_time"] <= until
    ]
    deferred = [r for r in scheduled if r.get("deferred")]
    manual = [r for r in flood_runs if r["trigger"] == "MANUAL"]
    result = {
        "minutes": minutes,
        "watcher_interval_s": interval,
        "quotas": {"runs_per_minute": runs_quota, "run_now_per_minute": run_now_quota},
        "calm": lag_figures(calm_runs),
        "flood_scheduled": lag_figures(scheduled)
        | {
            "deferred": len(deferred),
            "deferred_by_s": summary([r["not_before"] - r["execution_time"] for r in deferred]),
        },
        "flood_manual": lag_figures(manual),
        "flood_run_now_answers": {str(k): v for k, v in sorted(answers.items())},
    }
    rows = []
    for name in ("calm", "flood_scheduled", "flood_manual"):
        figures = result[name]
        lag = figures["start_lag_ms"]
        rows.append(
            [
                name,
                f"{figures['started']}/{figures['runs']}",
                figures["late"],
                fmt(lag["p50"], 0),
                fmt(lag["p99"], 0),
                fmt(lag["max"], 0),
            ]
        )
    headers = ["owner / runs", "started/due", "late (> 2 s)", "lag p50 ms", "lag p99 ms", "max"]
    flood_figures = result["flood_scheduled"]
    markdown = (
        "## Fairness: one owner floods (`bench/fairness.py`)\n\n"
        f"{flood_jobs} every-minute jobs of `flood` (runs_per_minute quota {runs_quota}) and "
        f"run now called in a loop (run_now_per_minute {run_now_quota}); {calm_jobs} "
        f"every-minute jobs of `calm`; {minutes} min, watcher every {interval} s. Lag: "
        "scheduled second (a deferred run: its deferred start) -> script start.\n\n"
        + table(headers, rows)
        + f"\n\nflood: {flood_figures['deferred']} of {flood_figures['runs']} scheduled runs "
        f"deferred by the quota (by {fmt(flood_figures['deferred_by_s']['p50'], 0)} s p50, "
        f"{fmt(flood_figures['deferred_by_s']['max'], 0)} s max), none dropped; run-now "
        f"answers {result['flood_run_now_answers']}.\n"
    )
    write_result(mode, "fairness", result, markdown)
    return result
