"""The soak's results: bench/results/soak.json (and .md), and the timeline plot."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import Mode, fmt, table, write_result
from bench.plots import soak_timeline
from bench.soak.plan import Plan
from bench.soak.workload import Workload


def injections(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def write(
    mode: Mode,
    plan: Plan,
    results: dict[str, Any],
    events: list[dict[str, Any]],
    injection_log: Path,
    workload: Workload,
    times: dict[str, float],
    seconds: float,
    down: list[tuple[float, float]],
) -> Path:
    injected = injections(injection_log)
    injected_by = Counter(f"{i['service']} {i['operation']} {i['error']}" for i in injected)
    carried_out = Counter(
        e["kind"] for e in events if "failed" not in e and e.get("target", "x") is not None
    )
    twice = results["ran_twice"]
    causes = Counter(
        "the script failed on purpose (flaky and failing jobs)" if t["by_design"] else _cause(t)
        for t in twice
    )
    plot = soak_timeline(
        results["per_minute"],
        events,
        injected,
        results["lags_by_minute"],
        times["faults_from"],
        mode.results_dir / "soak_timeline.png",
    )
    data = {
        "seed": plan.seed,
        "rates_per_minute": plan.rates,
        "fault_minutes": plan.duration_s / 60,
        "tick_second": plan.tick_second,
        # Same seed, rates and minutes: same plan, same digest (compare two soaks' results).
        "plan_sha256": hashlib.sha256(
            json.dumps(plan.to_json(), sort_keys=True).encode()
        ).hexdigest(),
        "plan": plan.to_json()["faults"],
        "faults_planned": plan.counts(),
        "faults_carried_out": dict(carried_out),
        "fault_events": events,
        "aws_errors_injected": dict(injected_by),
        "aws_errors_injected_total": len(injected),
        "stack_down": down,
        "jobs": len(workload.jobs),
        "owners": len(workload.owners),
        "operations": Counter(o["op"] for o in workload.operations if not o.get("failed")),
        "manual_runs_requested": len(workload.manual),
        "api_errors_retried": workload.api.errors,
        "seconds": seconds,
        "times": times,
        "duplicate_causes": dict(causes),
        "plot": plot.name,
    } | results
    s = results["start_lag_ms"]
    rows = [
        ["runs due", results["runs_due"]],
        ["runs started (runner logs)", results["runs_started"]],
        ["**lost**", len(results["lost"])],
        ["ran twice (attempt > 1 on the run)", len(twice)],
        ["  of which unexplained or unmarked", len(results["ran_twice_unexplained"])],
        ["run now made twice by a client retry", len(results["manual_twice"])],
        ["**wrong final status**", len(results["wrong_status"])],
        [
            "SUCCEEDED with no end in the runner's log (killed between its report and its log)",
            len(results.get("end_unlogged_runner_killed", [])),
        ],
        ["unfinished at the end", len(results["unfinished"])],
        [
            "due before their job was deleted, no run in the snapshot before the delete, none "
            "started (unobservable: the API hides a deleted job's runs)",
            len(results.get("unobservable_after_delete", [])),
        ],
        ["scheduled runs that were not due", len(results["unexpected_runs"])],
        ["second task stopped by the runner claim", results["claimed_elsewhere"]],
    ]
    lag_rows = [
        [name, f["n"], fmt(f["p50"], 0), fmt(f["p99"], 0), fmt(f["max"], 0)]
        for name, f in (
            ("outside fault windows", s["outside_faults"]),
            ("inside fault windows", s["inside_faults"]),
        )
    ]
    markdown = "\n\n".join(
        [
            "## Chaos soak (`bench/soak`)",
            f"Seed {plan.seed}, {plan.duration_s / 60:g} min of faults and due runs, "
            f"{len(workload.jobs)} jobs of {len(workload.owners)} owners, "
            f"{seconds / 60:.1f} min in all ({_phases(times)}). Rates per minute: "
            + ", ".join(f"{k} {v:g}" for k, v in sorted(plan.rates.items()))
            + ".",
            "Faults carried out: "
            + ", ".join(f"{k} {v}" for k, v in sorted(carried_out.items()))
            + f"; AWS errors injected into the functions' calls: {len(injected)} ("
            + ", ".join(f"{k} {v}" for k, v in injected_by.most_common(8))
            + ").",
            table(["", "runs"], rows),
            "Start lag (scheduled second -> script start, first attempt that started, ms):",
            table(["", "runs", "p50", "p99", "max"], lag_rows),
            "Why runs ran twice: "
            + (", ".join(f"{k} {v}" for k, v in causes.most_common()) or "none")
            + ".",
            f"![soak timeline]({plot.name})",
        ]
    )
    return write_result(mode, "soak", data, markdown)


def _phases(times: dict[str, float]) -> str:
    """Where the soak's minutes went: before the faults (the stack's start, the jobs' setup
    and the wait for their first runs), the faults, the drain, and the check."""
    spans = [
        ("before the faults", times["faults_from"] - times["began"]),
        ("of which the setup", times.get("setup_ended", 0) - times.get("setup_began", 0)),
        ("faults", times["last_due"] - times["faults_from"]),
        ("drain", times["drained"] - times["last_due"]),
        ("check", times["checked"] - times["drained"]),
    ]
    return ", ".join(f"{name} {span / 60:.1f} min" for name, span in spans)


def _cause(twice: dict[str, Any]) -> str:
    faults = [c for c in twice["causes"] if c.startswith("fault:")]
    if faults:
        return faults[0]
    errors = [c.split(": ", 1)[1] for c in twice["causes"] if not c.startswith("fault:")]
    text = errors[0] if errors else "unknown"
    for known in ("deadline", "task stopped", "exit code", "timed out"):
        if known in text:
            return f"attempt failed: {known}"
    return f"attempt failed: {text[:60]}"
