"""python -m bench [--quick] [name ...]

Runs the benchmarks (all of them, in order, unless names are given) and writes
bench/results/<name>.json and .md (bench/results/quick/ with --quick), plus PNG plots, and an
index, bench/results/README.md, of the latest figures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench.common import Mode, say

# name -> module:function, in the order `make bench` runs them (cost_model reads the others).
BENCHES = {
    "cold_start": "cold_start:run",
    "api_cost": "api_cost:run",
    "api_load": "api_load:run",
    "watcher_scaling": "watcher_scaling:run",
    "scheduling_ecs": "scheduling:run_ecs",
    "scheduling_local": "scheduling:run_local",
    "on_time": "on_time:run",
    "outage": "outage:run",
    "fairness": "fairness:run",
    "cost_model": "cost_model:run",
}


PRODUCTION_PACE = {"on_time"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the < 1 minute variant")
    parser.add_argument("names", nargs="*", choices=[*BENCHES, []], metavar="name")
    arguments = parser.parse_args(argv)
    mode = Mode(quick=arguments.quick)
    names = arguments.names or [
        # on_time runs at the production pace (a tick a minute): minutes by nature, full only.
        name
        for name in BENCHES
        if not (mode.quick and name in PRODUCTION_PACE)
    ]
    started = time.monotonic()
    timings: dict[str, float] = {}
    for name in names:
        say(f"\n=== {name} ({'quick' if mode.quick else 'full'}) ===")
        began = time.monotonic()
        module, function = BENCHES[name].split(":")
        getattr(importlib.import_module(f"bench.{module}"), function)(mode)
        timings[name] = time.monotonic() - began
        say(f"=== {name}: {timings[name]:.0f} s ===")
    total = time.monotonic() - started
    say("\n" + ", ".join(f"{n} {s:.0f} s" for n, s in timings.items()) + f"; total {total:.0f} s")
    if not arguments.names:
        index = mode.results_dir / "README.md"
        parts = [
            (mode.results_dir / f"{name}.md").read_text()
            for name in names
            if (mode.results_dir / f"{name}.md").exists()
        ]
        header = "# Latest benchmark results" + (" (quick)" if mode.quick else "")
        timing = ", ".join(f"{n} {s:.0f} s" for n, s in timings.items())
        index.write_text(f"{header}\n\nRun times: {timing}; total {total:.0f} s.\n\n")
        with index.open("a") as out:
            out.write("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
