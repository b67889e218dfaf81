"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen


def latency_vs_load(steps: Sequence[dict[str, Any]], path: Path, target_ms: float) -> Path:
    """p50/p95/p99 latency against offered rate (log scale), with the p99 target."""
    ordered = sorted(steps, key=lambda f: f["offered_rate"])
    rates = [f["offered_rate"] for f in ordered]
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        axis.plot(rates, [f["latency_ms"][key] for f in ordered], style, label=key)
    axis.axhline(target_ms, color="red", linestyle="--", linewidth=1, label=f"{target_ms:.0f} ms")
    axis.set_yscale("log")
    axis.set_xlabel("offered load (requests/s, open loop)")
    axis.set_ylabel("latency from intended send (ms)")
    axis.set_title("Job API on the local stack: latency against offered load")
    twin = axis.twinx()
    twin.plot(rates, [f["achieved_rate"] for f in ordered], "k:", marker="x", label="achieved")
    twin.plot(rates, rates, color="grey", linewidth=0.5)
    twin.set_ylabel("achieved requests/s (dotted)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def latency_timeline(
    samples: Sequence[tuple[float, float, int | None]], path: Path, title: str
) -> Path:
    """Each request's latency at its intended send time (errors in red)."""
    figure, axis = plt.subplots(figsize=(7, 3.6), dpi=110)
    ok = [(t, ms) for t, ms, status in samples if status is not None and status < 300]
    bad = [(t, ms) for t, ms, status in samples if status is None or status >= 300]
    if ok:
        axis.scatter(*zip(*ok, strict=True), s=3, label="answered 2xx")
    if bad:
        axis.scatter(*zip(*bad, strict=True), s=3, color="red", label="error or timeout")
    axis.set_yscale("log")
    axis.set_xlabel("intended send time (s from start)")
    axis.set_ylabel("latency (ms)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def cdf(series: dict[str, Sequence[float]], path: Path, title: str, xlabel: str) -> Path:
    """Empirical CDFs of one or more series (e.g. start lag in ms)."""
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    for label, values in series.items():
        ordered = sorted(values)
        if not ordered:
            continue
        n = len(ordered)
        axis.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (n={n})")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("fraction of runs")
    axis.set_ylim(0, 1.01)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def bars(values: dict[str, float], path: Path, title: str, ylabel: str) -> Path:
    figure, axis = plt.subplots(figsize=(7, 3.8), dpi=110)
    axis.bar(list(values), list(values.values()))
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    for label in axis.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def soak_timeline(
    per_minute: dict[str, dict[str, int]],
    events: Sequence[dict[str, Any]],
    injected: Sequence[dict[str, Any]],
    lags: dict[str, dict[str, float]],
    started: float,
    path: Path,
) -> Path:
    """The chaos soak over time: runs due and started per minute, the faults injected (one row
    per kind; AWS errors as the count injected per minute), and the start lag per minute."""
    figure, (runs, faults, lateness) = plt.subplots(
        3, 1, figsize=(9, 7.5), dpi=110, sharex=True, gridspec_kw={"height_ratios": [2, 2, 2]}
    )

    def minutes(second: float) -> float:
        return (second - started) / 60

    xs = [minutes(float(m)) for m in per_minute]
    runs.bar(xs, [v["due"] for v in per_minute.values()], width=0.8, alpha=0.4, label="due")
    runs.plot(xs, [v["started"] for v in per_minute.values()], "k.", label="started")
    runs.set_ylabel("runs per minute")
    runs.legend(fontsize=8, loc="lower right")
    runs.grid(True, alpha=0.3)
    kinds = sorted({e["kind"] for e in events if e["kind"] != "aws_error"})
    for row, kind in enumerate(kinds):
        at = [minutes(e.get("killed_at") or e["at"]) for e in events if e["kind"] == kind]
        faults.scatter(at, [row] * len(at), marker="|", s=120, label=kind)
    per_minute_errors: dict[int, int] = {}
    for item in injected:
        bucket = int(minutes(item["at"]))
        per_minute_errors[bucket] = per_minute_errors.get(bucket, 0) + 1
    faults.set_yticks(range(len(kinds)), kinds, fontsize=7)
    twin = faults.twinx()
    twin.bar(
        [m + 0.5 for m in per_minute_errors],
        list(per_minute_errors.values()),
        width=0.9,
        color="red",
        alpha=0.2,
    )
    twin.set_ylabel("AWS errors injected / min", fontsize=8)
    faults.grid(True, axis="x", alpha=0.3)
    lag_x = [minutes(float(m)) for m in lags]
    lateness.plot(lag_x, [max(1.0, v["p50"]) for v in lags.values()], "o-", ms=3, label="p50")
    lateness.plot(lag_x, [max(1.0, v["max"]) for v in lags.values()], "^-", ms=3, label="max")
    lateness.axhline(2000, color="red", linestyle="--", linewidth=1, label="2 s")
    lateness.set_yscale("log")
    lateness.set_ylabel("start lag (ms)")
    lateness.set_xlabel("minutes from the first fault")
    lateness.legend(fontsize=8)
    lateness.grid(True, which="both", alpha=0.3)
    figure.suptitle("Chaos soak on the local stack: runs, faults, lateness")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
