"""EventBridge rate(1 minute): move due runs into the dispatch queue."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler import wiring

logger = Logger()
tracer = Tracer()
metrics = Metrics()  # flushes what the watcher records (scheduler/metrics.py)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = wiring.watcher().tick()
    return {"queued": report.queued, "items": report.items}
