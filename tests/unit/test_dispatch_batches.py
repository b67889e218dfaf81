"""The executor's batch processor: a real failure holds back the later records of its job's
message group (FIFO order); an early pack held in the queue holds back none."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from scheduler.pipeline.dispatch_batches import DispatchBatches
from scheduler.pipeline.executor import PackNotDue


def sqs_record(message_id: str, group: str, body: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body,
        "attributes": {"MessageGroupId": group},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dispatch.fifo",
        "awsRegion": "us-east-1",
    }


def failed_ids(bodies: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
    """(the ids reported failed, the ids handled) for records (id, group, what happens)."""
    handled: list[str] = []

    def handle(record: SQSRecord) -> None:
        handled.append(record.message_id)
        if record.body == "early":
            raise PackNotDue("held")
        if record.body == "throttled":
            raise RuntimeError("RunTask throttled")

    event = {"Records": [sqs_record(*entry) for entry in bodies]}
    response = process_partial_response(
        event=event, record_handler=handle, processor=DispatchBatches()
    )
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]], handled


def test_a_held_pack_does_not_hold_back_its_jobs_later_packs() -> None:
    # Given job a's early pack, then job a's next pack (due now, after a redelivery)
    failed, handled = failed_ids([("1", "job-a", "early"), ("2", "job-a", "ok")])
    # Then only the early one goes back to the queue; the next one was handled
    assert failed == ["1"]
    assert handled == ["1", "2"]


def test_a_failed_pack_holds_back_its_jobs_later_packs_only() -> None:
    failed, handled = failed_ids(
        [("1", "job-a", "throttled"), ("2", "job-a", "ok"), ("3", "job-b", "ok")]
    )
    assert failed == ["1", "2"]
    assert handled == ["1", "3"]


def test_a_batch_of_held_packs_only_is_no_error_of_the_invocation() -> None:
    failed, _ = failed_ids([("1", "job-a", "early"), ("2", "job-b", "early")])
    assert failed == ["1", "2"]


def test_a_batch_whose_every_pack_failed_for_real_is_an_error() -> None:
    with pytest.raises(BatchProcessingError):
        failed_ids([("1", "job-a", "throttled"), ("2", "job-b", "early")])
