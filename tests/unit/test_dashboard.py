"""The dashboard of template.yaml names only metrics we emit and resources the template has."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard import (
    SCHEDULER_NAMESPACE,
    all_metric_lines,
    dashboard_body,
    dashboard_resource,
    dimension_values,
    scheduler_metrics,
    template_stack,
)
from devstack.template import Stack
from scheduler.metric_names import ALL

GRID_COLUMNS = 24

# Which resource type each dimension of AWS's own metrics must name.
DIMENSION_TYPES = {
    "FunctionName": "AWS::Serverless::Function",
    "QueueName": "AWS::SQS::Queue",
    "TableName": "AWS::DynamoDB::Table",
    "ApiId": "AWS::Serverless::HttpApi",
}


@pytest.fixture(scope="module")
def stack() -> Stack:
    return template_stack("unit")


@pytest.fixture(scope="module")
def body(stack: Stack) -> dict[str, Any]:
    return dashboard_body(stack)


def test_the_dashboard_is_named_after_the_stack(stack: Stack) -> None:
    _, resource = dashboard_resource(stack)
    assert resource["Properties"]["DashboardName"] == {"Fn::Sub": "${AWS::StackName}-scheduler"}


def test_the_body_renders_to_widgets_with_titles(body: dict[str, Any]) -> None:
    assert body["widgets"]
    for widget in body["widgets"]:
        assert widget["properties"].get("title"), widget
        assert widget["properties"]["region"] == "us-east-1"


def test_widgets_fit_the_grid_without_overlapping(body: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for widget in body["widgets"]:
        x, y, width, height = (widget[k] for k in ("x", "y", "width", "height"))
        assert x >= 0, widget["properties"]["title"]
        assert x + width <= GRID_COLUMNS, widget["properties"]["title"]
        for cell in ((cx, cy) for cx in range(x, x + width) for cy in range(y, y + height)):
            assert cell not in taken, (widget["properties"]["title"], taken.get(cell))
            taken[cell] = widget["properties"]["title"]


def test_every_scheduler_metric_is_one_we_emit(body: dict[str, Any]) -> None:
    assert scheduler_metrics(body) <= ALL, scheduler_metrics(body) - ALL


def test_every_metric_we_emit_is_on_the_dashboard(body: dict[str, Any]) -> None:
    assert ALL - scheduler_metrics(body) == set()


def test_scheduler_metrics_carry_only_the_service_dimension(
    stack: Stack, body: dict[str, Any]
) -> None:
    env = stack.document["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == SCHEDULER_NAMESPACE
    for widget, line in all_metric_lines(body):
        if line.namespace == SCHEDULER_NAMESPACE:
            assert line.dimensions == {"service": env["POWERTOOLS_SERVICE_NAME"]}, widget


@pytest.mark.parametrize("dimension", sorted(DIMENSION_TYPES))
def test_aws_dimensions_name_resources_of_the_template(
    stack: Stack, body: dict[str, Any], dimension: str
) -> None:
    by_physical = {physical: logical for logical, physical in stack.physical_names.items()}
    values = dimension_values(body, dimension)
    assert values
    for value in values:
        assert value in by_physical, f"{dimension}={value} is no resource of the template"
        assert stack.resources[by_physical[value]]["Type"] == DIMENSION_TYPES[dimension]


def test_every_function_is_on_the_lambda_widgets(stack: Stack, body: dict[str, Any]) -> None:
    shown = dimension_values(body, "FunctionName")
    assert {stack.physical_names[name] for name in stack.functions} == shown


def test_alarms_on_our_metrics_name_metrics_we_emit(stack: Stack) -> None:
    named: set[str] = set()
    for alarm in stack.of_type("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props.get("Namespace") == SCHEDULER_NAMESPACE:
            named.add(props["MetricName"])
        for query in props.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == SCHEDULER_NAMESPACE:
                named.add(metric["MetricName"])
    assert named
    assert named <= ALL
