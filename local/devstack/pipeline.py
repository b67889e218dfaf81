"""The scheduling pipeline driven locally the way AWS drives it: a timer for the watcher's
EventBridge schedule, and pollers for the SQS event source mappings (honouring
batchItemFailures) and for the local backend's task-stopped events."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3

from devstack.lambda_runtime import Handler, context_for, load_handler
from devstack.template import Stack

log = logging.getLogger("devstack.pipeline")

TASK_EVENTS_QUEUE = "local-task-events"


class _Loop:
    """A daemon thread calling `step` until stopped; an exception is logged, never fatal."""

    def __init__(self, name: str, step: Callable[[], None], pause: float) -> None:
        self._name = name
        self._step = step
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                log.exception("%s failed", self._name)
            self._stop.wait(self._pause)


def _invoke(stack: Stack, function: str) -> Callable[[dict[str, Any]], Any]:
    handler: Handler = load_handler(stack, function)

    def call(event: dict[str, Any]) -> Any:
        return handler(event, context_for(stack, function))

    return call


def watcher_timer(stack: Stack, interval_seconds: float) -> _Loop:
    """EventBridge `rate(1 minute)` (locally every `interval_seconds`) -> the watcher."""
    ((function, _),) = stack.events_of("Schedule").items()
    call = _invoke(stack, function)

    def tick() -> None:
        call(
            {
                "version": "0",
                "id": hashlib.md5(str(time.time()).encode()).hexdigest(),  # noqa: S324
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "region": "us-east-1",
                "resources": [],
                "detail": {},
            }
        )

    return _Loop("watcher-timer", tick, interval_seconds)


def sqs_pollers(stack: Stack) -> list[_Loop]:
    """One poller per SQS event source in the template, like Lambda's event source mapping."""
    sqs = boto3.client("sqs")
    loops = []
    for function, props in stack.events_of("SQS").items():
        queue_name = str(props["Queue"]).rsplit(":", 1)[1]
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        loops.append(
            _Loop(
                f"poller-{function}",
                _sqs_step(
                    sqs,
                    url,
                    str(props["Queue"]),
                    int(props.get("BatchSize", 10)),
                    _invoke(stack, function),
                ),
                0.05,
            )
        )
    return loops


def _sqs_step(
    sqs: Any, url: str, arn: str, batch_size: int, call: Callable[[dict[str, Any]], Any]
) -> Callable[[], None]:
    def step() -> None:
        response = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, batch_size),
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return
        event = {"Records": [_record(m, arn) for m in messages]}
        result = call(event) or {}
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for offset in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(done[offset : offset + 10])
                ],
            )

    return step


def _record(message: dict[str, Any], arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


def task_events_queue() -> str:
    """The queue the local backend reports task ends on (EventBridge's role in AWS)."""
    return str(boto3.client("sqs").create_queue(QueueName=TASK_EVENTS_QUEUE)["QueueUrl"])


def task_events_poller(stack: Stack, url: str) -> _Loop:
    functions = [
        name
        for name, props in stack.events_of("EventBridgeRule").items()
        if "aws.ecs" in props["Pattern"].get("source", [])
    ]
    (function,) = functions
    call = _invoke(stack, function)
    sqs = boto3.client("sqs")

    def step() -> None:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            call(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return _Loop("task-events", step, 0.05)
