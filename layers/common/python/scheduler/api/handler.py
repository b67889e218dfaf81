"""Every API function's Lambda handler, built the same way: powertools' Logger (with the request
id as correlation id), Tracer and Metrics around a resolver holding that function's routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler.api.resolver import make_resolver

LambdaHandler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def api_handler(*routers: Router) -> LambdaHandler:
    logger = Logger()
    tracer = Tracer()
    metrics = Metrics()
    app = make_resolver()
    for router in routers:
        app.include_router(router)

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return app.resolve(event, context)

    return lambda_handler
