"""The scheduling pipeline driven locally the way AWS drives it: a timer for the watcher's
EventBridge schedule, pollers for the SQS event source mappings (honouring batchItemFailures),
and a poller for the local backend's ECS-shaped task-stopped events."""

from __future__ import annotations

import json
import math
import random
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import boto3

from devstack import docker_backend, local_backend
from devstack.template import ROOT, Stack

TASK_EVENTS_QUEUE = "local-task-events"
NOTIFICATIONS_QUEUE = "local-notifications"
RUNNER = ROOT / "runner" / "entrypoint.py"

Invoke = Callable[[str, dict[str, Any]], Any]


class Loop:
    """A daemon thread calling `step` until stopped; a failing step is logged, never fatal
    (Lambda would retry the invocation too)."""

    def __init__(self, name: str, step: Callable[[], None], pause: float) -> None:
        self.name = name
        self._step = step
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def failure(self) -> str | None:
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                print(f"devstack: {self.name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            self._stop.wait(self._pause)


DISPATCH_BACKENDS = ("local", "docker")


def local_overrides(
    stack: Stack,
    state_dir: Path,
    retry_base_seconds: int,
    function_env: Mapping[str, str] | None = None,
    task_start_delay: tuple[float, float] = (0.0, 0.0),
    dispatch: str = "local",
) -> dict[str, dict[str, str]]:
    """What the local stack changes in the template's function environments; `function_env`
    (`--function-env`) is set in every function's, last. The executor dispatches through a
    local backend instead of ECS: `local`, a runner subprocess per pack, or `docker`, a
    container of the runner image per pack, shaped like the template's task definition. A task
    starts at once unless `task_start_delay` emulates Fargate's start; the dispatch lead is
    sized for its longest delay, as TASK_START_SECONDS is for Fargate in AWS."""
    if dispatch not in DISPATCH_BACKENDS:
        raise ValueError(f"dispatch backend {dispatch!r}: use one of {DISPATCH_BACKENDS}")
    register_dispatch_backends()
    low, high = task_start_delay
    executor = next(
        name for name in stack.events_of("SQS") if "Dispatch" in name or "Executor" in name
    )
    overrides = {
        executor: {
            "DISPATCH_BACKEND": dispatch,
            "RUNNER_PATH": str(RUNNER),
            "TASK_EVENTS_QUEUE_URL": task_events_queue(),
            "LOCAL_WORK_DIR": str(state_dir / "tasks"),
            "LOCAL_TASK_START_DELAY": f"{low}-{high}",
        }
    }
    for function in stack.functions:
        overrides.setdefault(function, {})["RETRY_BASE_SECONDS"] = str(retry_base_seconds)
        overrides[function]["TASK_START_SECONDS"] = str(math.ceil(high))
        overrides[function].update(function_env or {})
    return overrides


# An outage drill: while this file exists in the state directory, the timer does not invoke
# the watcher, as when EventBridge or Lambda is down (`touch .local/watcher.paused`).
WATCHER_PAUSED = "watcher.paused"


def watcher_timer(
    stack: Stack,
    invoke: Invoke,
    interval_seconds: float,
    second: int | None = None,
    state_dir: Path | None = None,
) -> Loop | MinuteTimer:
    """The EventBridge schedule: rate(1 minute) fires once a minute at some second of it (a
    60 s interval ticks at `second`, random if None, on the wall clock so it never drifts);
    any other interval (tests) simply ticks every `interval_seconds`. Skips its ticks while
    `<state_dir>/watcher.paused` exists."""
    ((function, _),) = stack.events_of("Schedule").items()
    paused = state_dir / WATCHER_PAUSED if state_dir is not None else None

    def tick() -> None:
        if paused is not None and paused.exists():
            return
        invoke(function, scheduled_event())

    if interval_seconds == 60:
        return MinuteTimer(tick, random.randrange(60) if second is None else second)
    return Loop("watcher-timer", tick, interval_seconds)


class MinuteTimer(Loop):
    """Calls `step` at `second` past every minute of the wall clock."""

    def __init__(self, step: Callable[[], None], second: int) -> None:
        super().__init__("watcher-timer", step, 0)
        self.second = second

    def _run(self) -> None:
        print(f"devstack: watcher ticks at :{self.second:02d} of every minute", file=sys.stderr)
        while not self._stop.wait(self._until_next()):
            try:
                self._step()
            except Exception:
                print(f"devstack: {self.name} failed:\n{traceback.format_exc()}", file=sys.stderr)

    def _until_next(self) -> float:
        now = time.time()
        due = now - now % 60 + self.second
        return due - now if due > now else due + 60 - now


def scheduled_event() -> dict[str, Any]:
    """What an EventBridge schedule rule delivers to its target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": "us-east-1",
        "resources": [],
        "detail": {},
    }


class Poller(Loop):
    """Receives from a queue and hands each batch to `handle` on a thread of its own, up to
    `concurrency` batches at once (as Lambda's event source mapping scales out); it receives
    only when a batch may start, so no message waits out its visibility in a local queue."""

    def __init__(
        self,
        name: str,
        receive: Callable[[], list[dict[str, Any]]],
        handle: Callable[[list[dict[str, Any]]], None],
        concurrency: int,
    ) -> None:
        super().__init__(name, self._receive_one, 0.02)
        self._receive = receive
        self._handle = handle
        self._slots = threading.BoundedSemaphore(concurrency)

    def _receive_one(self) -> None:
        if not self._slots.acquire(timeout=1):
            return
        try:
            messages = self._receive()
        except BaseException:
            self._slots.release()
            raise
        if not messages:
            self._slots.release()
            return
        threading.Thread(
            target=self._handle_and_release,
            args=(messages,),
            name=f"{self.name}-batch",
            daemon=True,
        ).start()

    def _handle_and_release(self, messages: list[dict[str, Any]]) -> None:
        try:
            self._handle(messages)
        except Exception:
            print(f"devstack: {self.name} failed:\n{traceback.format_exc()}", file=sys.stderr)
        finally:
            self._slots.release()


def register_dispatch_backends() -> None:
    """The executor's local backends (DISPATCH_BACKEND=local / docker), in every process that
    runs it."""
    local_backend.register()
    docker_backend.register()


def sqs_pollers(stack: Stack, invoke: Invoke, concurrency: int) -> list[Poller]:
    """One poller per SQS event source in the template, like Lambda's event source mapping:
    up to `concurrency` batches at once, or the source's `ScalingConfig.MaximumConcurrency`
    when lower."""
    sqs: Any = boto3.client("sqs")  # its answers are handed on as plain dicts
    pollers = []
    for function, props in stack.events_of("SQS").items():
        arn = str(props["Queue"])
        url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
        batch = min(10, int(props.get("BatchSize", 10)))

        def receive(url: str = url, batch: int = batch) -> list[dict[str, Any]]:
            return list(
                sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=batch,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            )

        handle = _sqs_batch(sqs, url, arn, function, invoke)
        pollers.append(Poller(f"{function}-poller", receive, handle, _capped(props, concurrency)))
    return pollers


def _capped(props: Mapping[str, Any], concurrency: int) -> int:
    """An SQS event source's concurrency: `concurrency`, or its MaximumConcurrency if lower."""
    return min(
        int(props.get("ScalingConfig", {}).get("MaximumConcurrency", concurrency)), concurrency
    )


def event_concurrency(stack: Stack, concurrency: int) -> int:
    """How many invocations the pollers may run at once in all: each SQS source's (capped),
    and the task events poller's."""
    sources = stack.events_of("SQS").values()
    return sum(_capped(props, concurrency) for props in sources) + concurrency


def _sqs_batch(
    sqs: Any, url: str, arn: str, function: str, invoke: Invoke
) -> Callable[[list[dict[str, Any]]], None]:
    """One invocation on a batch; the messages it did not report failed are deleted."""

    def handle(messages: list[dict[str, Any]]) -> None:
        result = invoke(function, {"Records": [_record(m, arn) for m in messages]}) or {}
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )

    return handle


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
    """The queue the local backend reports task ends on (EventBridge's part in AWS)."""
    return str(boto3.client("sqs").create_queue(QueueName=TASK_EVENTS_QUEUE)["QueueUrl"])


def task_events_function(stack: Stack) -> str:
    """The function whose EventBridge rule matches ECS task state changes."""
    (function,) = [
        name
        for name, props in stack.events_of("EventBridgeRule").items()
        if "aws.ecs" in props["Pattern"].get("source", [])
    ]
    return function


def event_functions(stack: Stack) -> list[str]:
    """The functions the pipeline's pollers invoke (all but the watcher's timer)."""
    return [*stack.events_of("SQS"), task_events_function(stack)]


def task_events_poller(stack: Stack, invoke: Invoke, concurrency: int) -> Poller:
    """ECS Task State Change events -> the function whose EventBridge rule matches aws.ecs,
    one invocation per event (as the rule invokes its target), up to `concurrency` at once."""
    function = task_events_function(stack)
    sqs: Any = boto3.client("sqs")  # its answers are handed on as plain dicts
    url = task_events_queue()

    def receive() -> list[dict[str, Any]]:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return list(response.get("Messages", []))

    def handle(messages: list[dict[str, Any]]) -> None:
        for message in messages:
            invoke(function, json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return Poller("task-events-poller", receive, handle, concurrency)


def notifications_sink(stack: Stack) -> str:
    """A queue subscribed to the template's SNS topics, so that run notifications can be read
    locally (in AWS, whoever subscribes reads them). Returns its URL."""
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    url = str(sqs.create_queue(QueueName=NOTIFICATIONS_QUEUE)["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    for logical in stack.of_type("AWS::SNS::Topic"):
        topic = str(stack.resolve({"Ref": logical}))
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    return url
