"""Run metrics, as CloudWatch embedded metric format through powertools (namespace and the
`service` dimension from the template's environment; the handler's `log_metrics` flushes them).
No per-job or per-owner dimension: their count would be the bill."""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

# The promise: a script starts within 2 s of its scheduled second.
LATE_AFTER_MS = 2000

# powertools keeps one metric set per process, shared by every Metrics instance.
_metrics = Metrics()


def record_start(start_lag_ms: int) -> None:
    """One run's script started `start_lag_ms` after its second (counted once per attempt)."""
    _metrics.add_metric(name="StartLag", unit=MetricUnit.Milliseconds, value=start_lag_ms)
    late = 1 if start_lag_ms > LATE_AFTER_MS else 0
    _metrics.add_metric(name="LateRuns", unit=MetricUnit.Count, value=late)
