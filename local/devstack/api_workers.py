"""The HTTP API's functions in worker processes, as Lambda runs concurrent invocations in
separate execution environments.

powertools keeps the current event in class attributes shared by every resolver of a process,
so two concurrent API invocations in one process would mix their callers: within a worker,
invocations are one at a time; the pool runs as many at once as it has workers. Each worker is
a process of its own (`spawn`: a fresh interpreter, its own powertools state and boto3
clients), loads the API's handlers when it starts (a warm container), and dies with the stack
(`PR_SET_PDEATHSIG`, so even a `kill -9` of the stack leaves none behind). A worker that dies
is replaced; the request it was serving gets a 500, as a crashed Lambda's would.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from devstack import iam
from devstack.iam import Principals
from devstack.template import Stack

_PR_SET_PDEATHSIG = 1


class WorkerCrashed(RuntimeError):
    """The worker serving the invocation died (or raised outside the handler)."""


def _worker_main(
    stack: Stack,
    functions: list[str],
    principals: Principals | None,
    connection: Connection,
    parent: int,
) -> None:
    """A worker: load the API's handlers, then invoke one event at a time, for ever."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack stops its workers itself
    from devstack.stack import Functions, quiet_and_whole_lines

    quiet_and_whole_lines()

    if principals is not None:  # IAM enforced: sign each call as the invoked function's role
        iam.install(principals)
    invoker = Functions(stack)
    for function in functions:
        invoker.load(function)
    connection.send(("ready", os.getpid()))
    while True:
        try:
            function, event = connection.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", invoker.invoke(function, event))
        except Exception:
            reply = ("error", traceback.format_exc())
        connection.send(reply)


READY_TIMEOUT = 180.0  # loading the handlers: seconds on a quiet machine, more on a busy one


class _Worker:
    def __init__(
        self,
        context: Any,
        stack: Stack,
        functions: list[str],
        principals: Principals | None,
        number: int,
    ) -> None:
        self.connection, child = multiprocessing.Pipe()
        self.process = context.Process(
            target=_worker_main,
            args=(stack, functions, principals, child, os.getpid()),
            name=f"api-worker-{number}",
            daemon=True,
        )
        self.process.start()
        child.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until the worker has loaded the handlers (a warm container)."""
        if not self.connection.poll(timeout):
            raise RuntimeError(f"API worker {self.process.pid} not ready within {timeout:.0f} s")
        try:
            message, _ = self.connection.recv()
        except (EOFError, OSError) as error:
            raise RuntimeError(f"API worker {self.process.pid} died while starting") from error
        if message != "ready":
            raise RuntimeError(f"API worker {self.process.pid} said {message!r}")

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        try:
            self.connection.send((function, event))
            outcome, value = self.connection.recv()
        except (EOFError, OSError, BrokenPipeError) as error:
            raise WorkerCrashed(f"API worker {self.process.pid} died: {error!r}") from error
        if outcome == "error":
            raise WorkerCrashed(f"the function raised:\n{value}")
        return value

    def stop(self) -> None:
        self.connection.close()
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


class ApiWorkers:
    """A pool of `count` worker processes running the API's functions; `invoke` blocks until
    one is free."""

    name = "api-workers"

    def __init__(self, stack: Stack, count: int, principals: Principals | None = None) -> None:
        if count < 1:
            raise ValueError("at least one API worker")
        self.stack = stack
        self.count = count
        self.principals = principals
        self.functions = sorted({route.function for route in stack.routes()})
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._spawned = 0

    def _spawn(self) -> _Worker:
        with self._lock:
            self._spawned += 1
            worker = _Worker(
                self._context, self.stack, self.functions, self.principals, self._spawned
            )
            self._all.append(worker)
            return worker

    def start(self) -> None:
        """Start the workers (they load in parallel) and return once all are ready."""
        workers = [self._spawn() for _ in range(self.count)]
        for worker in workers:
            worker.wait_ready()
            self._idle.put(worker)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        worker = self._idle.get()
        try:
            return worker.invoke(function, event)
        except WorkerCrashed:
            if not worker.process.is_alive():
                worker.stop()
                with self._lock:
                    self._all.remove(worker)
                worker = self._spawn()
                worker.wait_ready()
            raise
        finally:
            self._idle.put(worker)

    def failure(self) -> str | None:
        return None

    def stop(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop()
