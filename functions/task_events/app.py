"""EventBridge "ECS Task State Change" (STOPPED): runs whose task died before reporting fail."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler import wiring

logger = Logger()
tracer = Tracer()
metrics = Metrics()  # flushes what the run outcomes record (scheduler/metrics.py)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> None:
    wiring.run_outcomes().on_task_stopped(dict(event.detail))
