"""The executor's batches of the dispatch queue (SQS FIFO, one message group per pack)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    ExceptionInfo,
    FailureResponse,
    SqsFifoPartialProcessor,
)

from scheduler.pipeline.executor import PackNotDue


class DispatchBatches(SqsFifoPartialProcessor):
    """A failed record fails the later records of its own message group only (a group is one
    pack, so in practice none); the other records are still dispatched, rather than all waiting
    out the visibility timeout behind one throttled call. A pack held because it came early is
    not a failure of its group, and a batch of held packs only is not an error of the
    invocation (a batch whose every record failed for real still is: the executor's errors
    alarm)."""

    def __init__(self) -> None:
        super().__init__(skip_group_on_error=True)

    def _prepare(self) -> None:
        super()._prepare()  # type: ignore[no-untyped-call]
        self.raise_on_entire_batch_failure = False  # until a record fails for real

    def failure_handler(self, record: Any, exception: ExceptionInfo) -> FailureResponse:
        if exception[0] is PackNotDue:
            return BatchProcessor.failure_handler(self, record, exception)
        self.raise_on_entire_batch_failure = True
        return super().failure_handler(record, exception)
