"""Running one script: start it, drain its output (capped), enforce the timeout and stop
requests with signals to its process group, and tell what it ended as."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jobrunner import reaper
from jobrunner.batching import FinishedBatches
from jobrunner.cancel import CancelMarks, CancelWatch
from jobrunner.claims import PackClaims
from jobrunner.config import (
    HTTP_TIMEOUT_SECONDS,
    MEMORY_POLL_SECONDS,
    PIPE_GRACE_SECONDS,
    POLL_SECONDS,
    READ_CHUNK,
    RETRY_DELAYS,
    TAIL_BYTES,
    Config,
)
from jobrunner.log import log
from jobrunner.manifest import RunSpec
from jobrunner.outcome import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, Outcome
from jobrunner.reporting import report_started_if_still_running
from jobrunner.sandbox import (
    Limits,
    RunDirs,
    RunUser,
    Sandbox,
    child_environment,
    resource_limiter,
)
from jobrunner.scripts import Scripts


@dataclass
class Runtime:
    """Shared by the run threads: settings, sandbox, and the stop request from a signal."""

    config: Config
    sandbox: Sandbox
    limits: Limits | None = None  # set once the pack's size is known
    claims: PackClaims | None = None  # set once the manifest is read
    batches: FinishedBatches | None = None  # set once the manifest is read
    scripts: Scripts = field(default_factory=Scripts)  # each fetched once per task
    cancel_marks: CancelMarks = field(default_factory=CancelMarks)  # read once per pack claim
    started_report_seconds: float | None = None  # the pack's (None: report a start at once)
    stop: threading.Event = field(default_factory=threading.Event)
    stop_signal: int | None = None
    stop_at: float | None = None  # monotonic time of the stop request
    groups: dict[int, None] = field(default_factory=dict)  # process groups of running scripts

    def request_stop(self, signum: int) -> None:
        """Signal-handler safe: set the flag and forward SIGTERM to every running script."""
        if self.stop_signal is None:
            self.stop_signal = signum
            self.stop_at = time.monotonic()
        self.stop.set()
        for pgid in list(self.groups):
            signal_group(pgid, signal.SIGTERM)


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@dataclass
class OutputSink:
    """Writes at most ``cap`` bytes to the file, counts everything, keeps the last bytes."""

    handle: Any
    cap: int
    total: int = 0
    written: int = 0
    tail: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - self.written
        if room > 0:
            part = chunk[:room]
            self.handle.write(part)
            self.written += len(part)
        self.tail += chunk[-TAIL_BYTES:]
        if len(self.tail) > TAIL_BYTES:
            del self.tail[:-TAIL_BYTES]

    @property
    def truncated(self) -> bool:
        return self.total > self.written


@dataclass
class Supervision:
    """State of the drain-and-watch loop of one child."""

    deadline: float
    term_sent_at: float | None = None
    kill_sent: bool = False
    timed_out: bool = False
    stopped: bool = False
    cancelled: bool = False
    exited_at: float | None = None
    eof: bool = False
    memory_exceeded: int | None = None  # bytes the run was found using, over its share
    next_memory_check: float = 0.0


def _exited_unreaped(pid: int) -> bool:
    """Has the child exited? Leaves it a zombie, so its process group id stays reserved."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _end_of_run(proc: subprocess.Popen[bytes], user: RunUser) -> None:
    """The run is over: kill what is left of it. Its process group always; with a uid of its
    own, every process of that uid too (also those that left the group with setsid)."""
    signal_group(proc.pid, signal.SIGKILL)
    if user.own and user.uid is not None:
        leftovers = reaper.kill_user(user.uid, keep=proc.pid)
        if leftovers:  # the script's own process, a zombie by now, is not counted
            log("run_leftovers_killed", pid=proc.pid, uid=user.uid, processes=leftovers)


def _watch_memory(
    proc: subprocess.Popen[bytes], state: Supervision, rt: Runtime, user: RunUser, now: float
) -> None:
    """The run's share of the task's memory holds for all its processes together: sampled over
    its uid, and the run killed (every process of it) when the sum is over the share."""
    limits = rt.limits
    if (
        not user.own
        or user.uid is None
        or limits is None
        or limits.memory_bytes is None
        or state.exited_at is not None
        or state.memory_exceeded is not None
        or now < state.next_memory_check
    ):
        return
    state.next_memory_check = now + MEMORY_POLL_SECONDS
    used = reaper.memory_bytes(user.uid)
    if used > limits.memory_bytes:
        state.memory_exceeded = used
        reaper.kill_user(user.uid, keep=proc.pid)


def _escalate(
    proc: subprocess.Popen[bytes],
    state: Supervision,
    rt: Runtime,
    cancel: threading.Event,
    now: float,
) -> None:
    if state.exited_at is not None:
        return
    if state.term_sent_at is None:
        if now >= state.deadline:
            state.timed_out = True
        elif rt.stop.is_set():
            state.stopped = True
        elif cancel.is_set():
            state.cancelled = True
        if state.timed_out or state.stopped or state.cancelled:
            signal_group(proc.pid, signal.SIGTERM)
            state.term_sent_at = now
    elif not state.kill_sent and now - state.term_sent_at >= rt.config.kill_grace:
        signal_group(proc.pid, signal.SIGKILL)
        state.kill_sent = True


def _drain(fd: int, selector: selectors.BaseSelector, sink: OutputSink, state: Supervision) -> None:
    if state.eof:
        time.sleep(POLL_SECONDS / 2)
        return
    if not selector.select(timeout=POLL_SECONDS):
        return
    while True:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            state.eof = True
            selector.unregister(fd)
            return
        sink.feed(chunk)


def supervise(
    proc: subprocess.Popen[bytes],
    sink: OutputSink,
    rt: Runtime,
    timeout: int,
    cancel: threading.Event,
    user: RunUser | None = None,
) -> Supervision:
    """Drain the output pipe until the script is gone, enforcing timeout, stop and cancel
    requests (SIGTERM to its process group, SIGKILL after the grace)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    user = user or RunUser()
    state = Supervision(deadline=time.monotonic() + timeout)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            _escalate(proc, state, rt, cancel, now)
            _watch_memory(proc, state, rt, user, now)
            _drain(fd, selector, sink, state)
            if state.exited_at is None and _exited_unreaped(proc.pid):
                state.exited_at = time.monotonic()
                _end_of_run(proc, user)  # leftovers: its group, and its uid's processes
            if state.exited_at is not None and (
                state.eof or time.monotonic() - state.exited_at >= PIPE_GRACE_SECONDS
            ):
                break
    rt.groups.pop(proc.pid, None)  # before reaping: the pid may then be reused
    proc.wait()
    proc.stdout.close()
    if user.own and user.uid is not None:
        reaper.kill_user(user.uid)  # anything started after the first sweep
    return state


def run_script(
    spec: RunSpec, dirs: RunDirs, rt: Runtime, cancel: CancelWatch, user: RunUser
) -> Outcome:
    """Start the script now, supervise it to its end, and report it started if it is still
    running after the pack's report interval."""
    sandbox = rt.sandbox
    limits = rt.limits or Limits.for_pack(rt.config, 1)
    started_at = time.time()
    started_mono = time.monotonic()
    lag_ms = round((started_at - spec.not_before) * 1000)
    with open(dirs.output, "wb", opener=_private_opener) as handle:
        sink = OutputSink(handle=handle, cap=rt.config.output_cap)
        try:
            proc = subprocess.Popen(
                [sandbox.interpreter, "script.py"],
                cwd=dirs.work,
                env=child_environment(spec, dirs),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                umask=0o077,
                # Safe with threads here: the function only calls get/setrlimit (no locks, no
                # imports, no logging), and CPython re-initialises its own state after fork.
                preexec_fn=resource_limiter(limits, user),  # noqa: PLW1509
                **user.popen_args(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log("run_start_failed", "error", **spec.ids, error=str(exc))
            return Outcome(status=FAILED, error=f"could not start the script: {exc}")
        rt.groups[proc.pid] = None
        if rt.stop.is_set():  # a stop that raced with the start
            signal_group(proc.pid, signal.SIGTERM)
        log("run_started", **spec.ids, start_lag_ms=lag_ms, pid=proc.pid)
        ended = threading.Event()
        reporter = threading.Thread(
            target=report_started_if_still_running,
            args=(spec, started_at, lag_ms, ended, rt.started_report_seconds),
            daemon=True,
        )
        reporter.start()
        try:
            state = supervise(proc, sink, rt, spec.timeout_seconds, cancel.requested, user)
        finally:
            rt.groups.pop(proc.pid, None)
            ended.set()  # a run shorter than the report interval reports no start of its own
        finished_at = time.time()
        duration_ms = round((time.monotonic() - started_mono) * 1000)
        reporter.join(timeout=HTTP_TIMEOUT_SECONDS * (len(RETRY_DELAYS) + 1))  # started first
    outcome = Outcome(
        status=SUCCEEDED,
        exit_code=proc.returncode,
        started_at=started_at,
        finished_at=finished_at,
        start_lag_ms=lag_ms,
        duration_ms=duration_ms,
        output_bytes=sink.total,
        output_truncated=sink.truncated,
        tail=bytes(sink.tail),
    )
    if state.memory_exceeded is not None:
        outcome.status = FAILED
        share = (limits.memory_bytes or 0) // (1024 * 1024)
        outcome.error = (
            f"memory limit: the run's processes used {state.memory_exceeded // (1024 * 1024)} MiB,"
            f" over its share of {share} MiB; every process of the run was killed"
        )
    elif state.cancelled:
        outcome.status = CANCELLED
        outcome.error = f"{cancel.reason}: the script was sent SIGTERM"
    elif state.timed_out:
        outcome.status = TIMED_OUT
        outcome.error = f"timed out after {spec.timeout_seconds} s"
    elif state.stopped or (
        # the forwarded SIGTERM may end the script before the loop notices the stop request
        rt.stop_at is not None and state.exited_at is not None and rt.stop_at <= state.exited_at
    ):
        outcome.status = FAILED
        outcome.error = "runner stopped (task stopping): the script was sent SIGTERM"
    elif proc.returncode != 0:
        outcome.status = FAILED
    return outcome


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_EXCL, 0o600)
