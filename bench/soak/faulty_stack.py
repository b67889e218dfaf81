"""`python -m bench.soak.faulty_stack run ...`: `python -m devstack run ...` with AWS errors
injected into the functions' AWS calls, for the chaos soak only.

Activated by SOAK_FAULT_WINDOWS (a JSON file: the soak's start and its AWS-error windows), which
only the soak sets. Nothing in product code or in devstack changes; the stack's function
workers install the same injection (devstack's `DEVSTACK_WORKER_SETUP` hook):

- a botocore `before-send` handler, registered on every botocore session, answers a call made
  by a function (not by the stack's own pollers) inside a window with the service's throttling
  error or a 500, or raises a timeout, after sending the request half of the time (applied,
  answer lost). botocore's retries see these as they would see AWS's;
- RunTask, which the local backend stands in for: its `dispatch` fails the same way (a timeout
  there starts the task, then fails);
- each injection is one JSON line in SOAK_INJECTION_LOG, for the results.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import botocore.session
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

WINDOWS_ENV = "SOAK_FAULT_WINDOWS"
INJECTION_LOG_ENV = "SOAK_INJECTION_LOG"

_current = threading.local()  # the function this thread is invoking, if any
_log_lock = threading.Lock()


class _Raw:
    """A response body for AWSResponse."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body

    def read(self, *_: Any) -> bytes:
        return self._body


# What each service answers, by protocol: status, headers, body.
def _answer(service: str, error: str) -> tuple[int, dict[str, str], bytes]:
    throttle = error == "throttle"
    if service == "s3":
        code, status = ("SlowDown", 503) if throttle else ("InternalError", 500)
        body = f"<Error><Code>{code}</Code><Message>soak</Message></Error>".encode()
        return status, {"Content-Type": "application/xml"}, body
    if service == "dynamodb":
        prefix, content = "com.amazonaws.dynamodb.v20120810#", "application/x-amz-json-1.0"
        code, status = ("ThrottlingException", 400) if throttle else ("InternalServerError", 500)
    else:  # sqs (JSON protocol)
        prefix, content = "com.amazonaws.sqs#", "application/x-amz-json-1.0"
        code, status = ("RequestThrottled", 400) if throttle else ("InternalError", 500)
    headers = {"Content-Type": content, "x-amzn-query-error": f"{code};Sender"}
    return status, headers, json.dumps({"__type": prefix + code, "message": "soak"}).encode()


def _in_function() -> bool:
    """Whether the call comes from a function: on the thread invoking it, or on one of the
    thread pools the functions fan their calls out on (scheduler.fanout); not from the stack's
    own pollers, task threads or startup, which stand for AWS itself."""
    if getattr(_current, "function", None) is not None:
        return True
    return threading.current_thread().name.startswith("ThreadPoolExecutor")


class Injector:
    def __init__(self, windows_file: Path, log_file: Path) -> None:
        self.windows_file = windows_file
        self.log_file = log_file
        self.started = 0.0
        self.windows: list[dict[str, Any]] = []
        self._read_at = 0.0
        self._http = URLLib3Session()
        self._draws: dict[str, random.Random] = {}

    def _current_windows(self) -> list[dict[str, Any]]:
        """The windows file, re-read every few seconds: the soak writes it when its faults
        start, after the stack is up."""
        if time.monotonic() - self._read_at > 2:
            self._read_at = time.monotonic()
            try:
                data = json.loads(self.windows_file.read_text())
                self.started, self.windows = float(data["started"]), data["windows"]
            except (OSError, ValueError, KeyError):
                pass
        return self.windows

    def fault_for(self, service: str) -> dict[str, Any] | None:
        if not _in_function():
            return None
        windows = self._current_windows()
        now = time.time() - self.started
        for window in windows:
            if (
                window["service"] == service
                and window["start"] <= now < window["end"]
                and self.draws(window).random() < window["probability"]
            ):
                return window
        return None

    def draws(self, window: dict[str, Any]) -> random.Random:
        """The window's own random stream, seeded by the window (which the plan's seed fixes):
        the n-th call that meets it fails or not alike in two soaks of one seed (which calls
        meet it depends on timing, which no seed fixes)."""
        key = f"{window['service']}@{window['start']}"
        with _log_lock:
            if key not in self._draws:
                self._draws[key] = random.Random(key)
            return self._draws[key]

    def record(self, service: str, operation: str, window: dict[str, Any], applied: bool) -> None:
        line = {
            "at": time.time(),
            "function": getattr(_current, "function", None) or "(a function's thread pool)",
            "service": service,
            "operation": operation,
            "error": window["error"],
            "window_start": window["start"],
            "applied": applied,
        }
        with _log_lock, self.log_file.open("a") as log:
            log.write(json.dumps(line) + "\n")

    def before_send(self, request: AWSPreparedRequest, **kwargs: Any) -> AWSResponse | None:
        _, service, operation = str(kwargs.get("event_name", "before-send.x.y")).split(".")[:3]
        window = self.fault_for(service)
        if window is None:
            return None
        if window["error"] == "timeout":
            applied = self.draws(window).random() < 0.5
            if applied:  # the request reaches AWS; its answer is lost
                self._http.send(request)
            self.record(service, operation, window, applied)
            if applied:
                raise ReadTimeoutError(endpoint_url=request.url)
            raise ConnectTimeoutError(endpoint_url=request.url)
        self.record(service, operation, window, False)
        status, headers, body = _answer(service, window["error"])
        return AWSResponse(request.url, status, headers, _Raw(body))

    def run_task(self, dispatch: Any) -> Any:
        """The local backend's dispatch, standing for RunTask, failing as RunTask would."""
        window = self.fault_for("ecs")
        if window is None:
            return dispatch()
        error = window["error"]
        if error == "timeout":
            applied = self.draws(window).random() < 0.5
            self.record("ecs", "RunTask", window, applied)
            if applied:
                dispatch()  # the task starts; the answer is lost
                raise ReadTimeoutError(endpoint_url="https://ecs.us-east-1.amazonaws.com")
            raise ConnectTimeoutError(endpoint_url="https://ecs.us-east-1.amazonaws.com")
        self.record("ecs", "RunTask", window, False)
        code = "ThrottlingException" if error == "throttle" else "ServerException"
        raise ClientError({"Error": {"Code": code, "Message": "soak"}}, "RunTask")


def install(injector: Injector) -> None:
    """The botocore hook on every session, RunTask's stand-in, and which function is calling."""
    from devstack import local_backend, stack

    original_init = botocore.session.Session.__init__

    def session_init(self: botocore.session.Session, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.register("before-send", injector.before_send)

    botocore.session.Session.__init__ = session_init  # type: ignore[method-assign]

    original_invoke = stack.Functions.invoke

    def invoke(self: stack.Functions, function: str, event: dict[str, Any]) -> Any:
        _current.function = function
        try:
            return original_invoke(self, function, event)
        finally:
            _current.function = None

    stack.Functions.invoke = invoke  # type: ignore[method-assign]

    original_dispatch = local_backend.TaskBackend.dispatch

    def dispatch(self: local_backend.TaskBackend, *args: Any, **kwargs: Any) -> str:
        # The backend's own signature, whatever it is (it gained the pack's place in issue 12)
        return str(injector.run_task(lambda: original_dispatch(self, *args, **kwargs)))

    local_backend.TaskBackend.dispatch = dispatch  # type: ignore[method-assign]


def install_from_environment() -> None:
    """The injection, when the soak asked for it: in the stack's process and in each of its
    worker processes (which run the API's and the pipeline's functions)."""
    windows = os.environ.get(WINDOWS_ENV)
    if windows:
        log = Path(os.environ.get(INJECTION_LOG_ENV) or Path(windows).with_suffix(".log"))
        install(Injector(Path(windows), log))


def main() -> int:
    from devstack.workers import WORKER_SETUP_ENV

    install_from_environment()
    os.environ[WORKER_SETUP_ENV] = "bench.soak.faulty_stack:install_from_environment"
    from devstack.__main__ import main as devstack_main

    return devstack_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
