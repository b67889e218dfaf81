"""SQS FIFO dispatch queue: claim each message's runs and start their task."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler import wiring
from scheduler.pipeline.dispatch_batches import DispatchBatches
from scheduler.pipeline.dispatch_models import DispatchMessage

logger = Logger()
tracer = Tracer()
metrics = Metrics()  # flushes what the executor record (scheduler/metrics.py)
# A failed record fails the later records of its job's message group, not the others'; an early
# pack held back in the queue fails none (pipeline/dispatch_batches.py).
processor = DispatchBatches()


def dispatch(record: SQSRecord) -> None:
    message = DispatchMessage.model_validate_json(record.body)
    wiring.executor().handle(message, record.receipt_handle)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=dispatch, processor=processor, context=context
    )
