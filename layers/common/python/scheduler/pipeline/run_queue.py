"""The dispatch queue (SQS FIFO): watcher and "run now" send, the executor receives."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.aws.client_errors import raise_if_throttled
from scheduler.pipeline.dispatch_models import DispatchMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SQS_BATCH = 10
logger = Logger(child=True)


class SqsRunQueue:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, messages: list[DispatchMessage]) -> list[bool]:
        """Send every message; for each, whether SQS accepted it."""
        accepted = [False] * len(messages)
        for offset in range(0, len(messages), SQS_BATCH):
            chunk = messages[offset : offset + SQS_BATCH]
            entries = [
                {
                    "Id": str(index),
                    "MessageBody": message.model_dump_json(),
                    # One group per pack: FIFO serialises nothing, so no pack waits behind
                    # another one held back in the queue by the executor (a run now, a retry
                    # behind its job's next occurrence); claims, not order, keep runs single.
                    "MessageGroupId": message.pack_id,
                    "MessageDeduplicationId": dedup_id(message),
                }
                for index, message in enumerate(chunk)
            ]
            try:
                response = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)  # type: ignore[arg-type]
            except ClientError as exc:
                raise_if_throttled(exc)
                raise
            for ok in response.get("Successful", []):
                accepted[offset + int(ok["Id"])] = True
        return accepted

    def hold(self, receipt_handle: str, seconds: int) -> bool:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("a pack could not be held in the queue", error=str(exc))
            return False
        return True


def dedup_id(message: DispatchMessage) -> str:
    runs = ",".join(f"{run.key}#{run.attempt}" for run in message.runs)
    return hashlib.sha256(runs.encode()).hexdigest()
