"""The stack's functions in worker processes, as Lambda runs concurrent invocations in
separate execution environments: the HTTP API's functions in one pool, the event-driven ones
(SQS event source mappings, the task-stopped rule) in another.

powertools keeps state in class attributes shared by a process (the current event of every
resolver, a batch processor's records), so two concurrent invocations in one process would mix
their events: within a worker, invocations are one at a time; a pool runs as many at once as
it has workers. Each worker is a process of its own (`spawn`: a fresh interpreter, its own
powertools state and boto3 clients), loads its pool's handlers when it starts (a warm
container), and dies with the stack (`PR_SET_PDEATHSIG`, so even a `kill -9` of the stack
leaves none behind). That signal comes when the *thread* that started the process ends, not
the process: every worker is started by its pool's own long-lived thread, never by the
short-lived thread of an invocation (which killed each worker it started as it returned).
A pool starts `warm` workers and starts one more, up to its size, when an invocation finds none
idle (as Lambda scales out; the invocation takes whichever worker is free
first, the new one or one that finished). A worker that dies is
replaced; the invocation it was serving fails, as a crashed Lambda's would.

`DEVSTACK_WORKER_SETUP=module:function`, when set, is called in each worker before it loads
anything (the chaos soak installs its fault injection this way; nothing else uses it).
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from devstack import iam
from devstack.iam import Principals
from devstack.template import Stack

_PR_SET_PDEATHSIG = 1
WORKER_SETUP_ENV = "DEVSTACK_WORKER_SETUP"


class WorkerCrashed(RuntimeError):
    """The worker serving the invocation died (or raised outside the handler)."""


def _run_setup() -> None:
    setup = os.environ.get(WORKER_SETUP_ENV)
    if setup:
        module, _, function = setup.partition(":")
        getattr(importlib.import_module(module), function)()


def _worker_main(
    stack: Stack,
    functions: list[str],
    principals: Principals | None,
    connection: Connection,
    parent: int,
) -> None:
    """A worker: load the pool's handlers, then invoke one event at a time, for ever."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack stops its workers itself
    from devstack.pipeline import register_dispatch_backends
    from devstack.stack import Functions, quiet_and_whole_lines

    quiet_and_whole_lines()
    _run_setup()
    register_dispatch_backends()  # the executor's local backends, as in the stack's process
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
        name: str,
    ) -> None:
        self.connection, child = multiprocessing.Pipe()
        self.process = context.Process(
            target=_worker_main,
            args=(stack, functions, principals, child, os.getpid()),
            name=name,
            daemon=True,
        )
        self.process.start()
        child.close()
        self._ready = False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until the worker has loaded the handlers (a warm container)."""
        if self._ready:
            return
        if not self.connection.poll(timeout):
            raise RuntimeError(f"worker {self.process.pid} not ready within {timeout:.0f} s")
        try:
            message, _ = self.connection.recv()
        except (EOFError, OSError) as error:
            raise RuntimeError(f"worker {self.process.pid} died while starting") from error
        if message != "ready":
            raise RuntimeError(f"worker {self.process.pid} said {message!r}")
        self._ready = True

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        try:
            self.wait_ready()
            self.connection.send((function, event))
            outcome, value = self.connection.recv()
        except (EOFError, OSError, BrokenPipeError, RuntimeError) as error:
            raise WorkerCrashed(f"worker {self.process.pid} died: {error!r}") from error
        if outcome == "error":
            raise WorkerCrashed(f"the function raised:\n{value}")
        return value

    def stop(self) -> None:
        self.connection.close()
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


class FunctionWorkers:
    """A pool of up to `size` worker processes running `functions`, `warm` of them started
    with the pool; `invoke` takes an idle worker, starts one if the pool is not full, else
    waits for one."""

    def __init__(
        self,
        name: str,
        stack: Stack,
        functions: list[str],
        size: int,
        principals: Principals | None = None,
        warm: int | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"{name}: at least one worker")
        self.name = name
        self.stack = stack
        self.size = size
        self.warm = size if warm is None else min(warm, size)
        self.principals = principals
        self.functions = sorted(functions)
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._spawned = 0
        self._stopped = False
        # The one thread that starts workers: it lives as long as the pool (see the module doc).
        self._starter = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-starter")

    def _spawn(self) -> _Worker | None:
        """A new worker, or None when the pool is full (or stopped)."""
        return self._starter.submit(self._start_worker).result()

    def _start_worker(self) -> _Worker | None:
        with self._lock:
            if self._stopped or len(self._all) >= self.size:
                return None
            self._spawned += 1
            worker = _Worker(
                self._context,
                self.stack,
                self.functions,
                self.principals,
                f"{self.name}-{self._spawned}",
            )
            self._all.append(worker)
            return worker

    def start(self) -> None:
        """Start the warm workers (they load in parallel) and return once they are ready."""
        workers = [worker for _ in range(self.warm) if (worker := self._spawn())]
        for worker in workers:
            worker.wait_ready()
            self._idle.put(worker)

    def _take(self) -> _Worker:
        """An idle worker; when there is none and the pool is not full, one more starts (in
        the background: a worker that frees up sooner than it loads is taken first)."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        worker = self._spawn()
        if worker is not None:
            threading.Thread(
                target=self._warm_up, args=(worker,), name=f"{self.name}-start", daemon=True
            ).start()
        return self._idle.get()

    def _warm_up(self, worker: _Worker) -> None:
        try:
            worker.wait_ready()
        except RuntimeError as error:
            print(f"devstack: {self.name}: {error}", file=sys.stderr)
            with self._lock:
                if worker in self._all:
                    self._all.remove(worker)
            worker.stop()
            return
        self._idle.put(worker)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        worker = self._take()
        try:
            return worker.invoke(function, event)
        except WorkerCrashed:
            if not worker.process.is_alive():  # replaced by a fresh one (a cold start)
                worker.stop()
                with self._lock:
                    if worker in self._all:
                        self._all.remove(worker)
                worker = self._spawn() or worker
            raise
        finally:
            self._idle.put(worker)

    def failure(self) -> str | None:
        return None

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop()
        self._starter.shutdown(wait=False)
