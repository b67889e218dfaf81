"""Our own CloudWatch metrics, as embedded metric format through powertools: namespace and the
`service` dimension come from the template's environment, and each handler's `log_metrics`
flushes them. The names are scheduler.metric_names (the dashboard names the same). No per-job
or per-owner dimension: their count would be the bill. What AWS already measures (API Gateway,
Lambda, SQS, DynamoDB) is never re-emitted here."""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit


def count(name: str, value: int = 1) -> None:
    _metrics().add_metric(name=name, unit=MetricUnit.Count, value=value)


def milliseconds(name: str, value: float) -> None:
    _metrics().add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)


def seconds(name: str, value: float) -> None:
    _metrics().add_metric(name=name, unit=MetricUnit.Seconds, value=value)


def _metrics() -> Metrics:
    # powertools keeps one metric set per process, shared by every Metrics instance; one made
    # at each call reads its namespace from the environment then, not at import.
    return Metrics()
