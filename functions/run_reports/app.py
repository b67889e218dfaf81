"""SQS queue of the bucket's reports/ notifications: runner reports become run status."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler import wiring

logger = Logger()
tracer = Tracer()
metrics = Metrics()  # flushes what the run outcomes record (scheduler/metrics.py)
processor = BatchProcessor(event_type=EventType.SQS)


def apply_report(record: SQSRecord) -> None:
    wiring.run_outcomes().on_s3_notification(record.body)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=apply_report, processor=processor, context=context
    )
