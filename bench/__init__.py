"""Benchmarks: `make bench` (all, ~50 min) and `make bench-quick` (~12 min).

They print and record figures; they are never timed assertions and never run in `make test`.
Results land in bench/results/ (bench/results/quick/ for the quick run); docs/performance.md
explains them.
"""
