"""The CloudWatch dashboard of template.yaml, rendered the way CloudFormation would render it
(intrinsics resolved against the local stack's names), for tests and docs/render_dashboard.py.

    from dashboard import dashboard_body, scheduler_metrics
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from devstack.template import Stack, local_stack

SCHEDULER_NAMESPACE = "Scheduler"


def template_stack(prefix: str = "dash") -> Stack:
    """template.yaml with placeholder values for the parameters that have no default."""
    return local_stack(
        prefix,
        {"JwtIssuer": "https://issuer.test", "JwtAudience": "scheduler"},
        {"PageTokenSecret": "x" * 32},
    )


def dashboard_resource(stack: Stack) -> tuple[str, dict[str, Any]]:
    """(logical id, resource) of the template's one AWS::CloudWatch::Dashboard."""
    ((logical, resource),) = stack.of_type("AWS::CloudWatch::Dashboard").items()
    return logical, resource


def dashboard_body(stack: Stack) -> dict[str, Any]:
    """The DashboardBody as CloudFormation would hand it to CloudWatch, parsed."""
    _, resource = dashboard_resource(stack)
    rendered = stack.resolve(resource["Properties"]["DashboardBody"])
    body: dict[str, Any] = json.loads(rendered)
    return body


@dataclass(frozen=True)
class MetricLine:
    """One line of a metric widget: `[namespace, name, dim, value, ..., {options}]`, with
    CloudWatch's "." shorthand (same as the line above) expanded."""

    namespace: str
    name: str
    dimensions: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)


def metric_lines(widget: dict[str, Any]) -> list[MetricLine]:
    """The metric lines of one widget; expression lines (`[{"expression": ...}]`) are left out."""
    lines: list[MetricLine] = []
    previous: list[Any] = []
    for entry in widget.get("properties", {}).get("metrics", []):
        options = entry[-1] if entry and isinstance(entry[-1], dict) else {}
        parts = entry[:-1] if options else entry
        if not parts:  # an expression line
            continue
        parts = [
            previous[i] if part == "." and i < len(previous) else part
            for i, part in enumerate(parts)
        ]
        previous = parts
        namespace, name, *dims = parts
        lines.append(
            MetricLine(namespace, name, dict(zip(dims[::2], dims[1::2], strict=True)), options)
        )
    return lines


def all_metric_lines(body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], MetricLine]]:
    """(widget, line) for every metric line of the dashboard."""
    for widget in body["widgets"]:
        for line in metric_lines(widget):
            yield widget, line


def scheduler_metrics(body: dict[str, Any]) -> set[str]:
    """Names of our own metrics (namespace Scheduler) that the dashboard shows."""
    return {
        line.name for _, line in all_metric_lines(body) if line.namespace == SCHEDULER_NAMESPACE
    }


def dimension_values(body: dict[str, Any], dimension: str) -> set[str]:
    """Every value the dashboard gives `dimension` (FunctionName, QueueName ...)."""
    return {
        line.dimensions[dimension]
        for _, line in all_metric_lines(body)
        if dimension in line.dimensions
    }
