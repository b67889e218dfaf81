"""SQS FIFO dispatch queue: claim each message's runs and start their task."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler import wiring
from scheduler.pipeline.dispatch_models import DispatchMessage

logger = Logger()
tracer = Tracer()
metrics = Metrics()  # flushes what the executor record (scheduler/metrics.py)
# A failed record fails the later records of its own message group (one job's runs: FIFO order
# kept); other groups' records are still dispatched, rather than all waiting out the visibility
# timeout behind one throttled call.
processor = SqsFifoPartialProcessor(skip_group_on_error=True)


def dispatch(record: SQSRecord) -> None:
    wiring.executor().handle(DispatchMessage.model_validate_json(record.body))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=dispatch, processor=processor, context=context
    )
