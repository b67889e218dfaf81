"""Runner: executes one pack of runs inside a Fargate task (or, locally, a subprocess).

Standard library only. The runner holds no AWS credentials: everything it touches is reached
through presigned URLs listed in the manifest that ``RUNS_MANIFEST_URL`` points at.

For every run of the manifest, concurrently (one thread per run, one child process per script):
fetch the script, wait until ``not_before``, start it in a private working directory with a
scrubbed environment (as ``nobody`` when the runner is root), PUT a "started" report, drain
its output (capped), enforce the timeout, PUT the output and then a "finished" report.

Trust boundary: the scripts are untrusted. The child environment is built from scratch (no
``AWS_*``, no container metadata URIs, no manifest URL), ``RUNS_MANIFEST_URL`` is removed from
the runner's own environment as soon as it is read, and when the runner is root the scripts run
as an unprivileged user, so they cannot read ``/proc/<runner>/environ`` or the runner's memory.
Presigned URLs are never logged.

Exit status: 0 every run reported; 1 no or unreadable manifest; 2 a report could not be
delivered; 143 (or 130) the runner was stopped by SIGTERM (SIGINT), after reporting what it could.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Final

MANIFEST_ENV: Final = "RUNS_MANIFEST_URL"
MANIFEST_VERSION: Final = 1
SAFE_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
TAIL_BYTES: Final = 4096
READ_CHUNK: Final = 65536
HTTP_TIMEOUT_SECONDS: Final = 15.0
RETRY_DELAYS: Final = (0.2, 0.5, 1.0, 2.0)
TRANSIENT_HTTP: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_MANIFEST_BYTES: Final = 32 * 1024 * 1024
MAX_SCRIPT_BYTES: Final = 16 * 1024 * 1024
POLL_SECONDS: Final = 0.05
# After the script exits, how long to wait for EOF on its output pipe (a straggler that escaped
# the process group may hold it open).
PIPE_GRACE_SECONDS: Final = 1.0
# After SIGTERM/SIGINT, how long the runner waits for its runs to report, on top of the grace.
STOP_REPORT_SECONDS: Final = 15.0

SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
TIMED_OUT: Final = "TIMED_OUT"

EXIT_OK: Final = 0
EXIT_NO_MANIFEST: Final = 1
EXIT_UNREPORTED: Final = 2


# --------------------------------------------------------------------------- logging and time


_log_lock = threading.Lock()


def iso_ms(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds: ``2026-11-27T16:00:00.012Z``."""
    instant = datetime.fromtimestamp(epoch, UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def iso_seconds(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(event: str, level: str = "info", **fields: Any) -> None:
    """One JSON line per event on stderr. Never pass a presigned URL here."""
    record = {"ts": iso_ms(time.time()), "level": level, "event": event, **fields}
    line = json.dumps(record, default=str, separators=(",", ":"))
    with _log_lock:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


# --------------------------------------------------------------------------- configuration


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        log("config_invalid", "warning", variable=name, using=default)
        return default
    if value < minimum:
        log("config_invalid", "warning", variable=name, using=default)
        return default
    return value


@dataclass(frozen=True)
class Config:
    """Runner settings, from ``RUNNER_*`` environment variables (none of them secret)."""

    output_cap: int = 1024 * 1024
    memory_limit_mb: int = 2048
    nofile_limit: int = 1024
    nproc_limit: int = 512
    kill_grace: float = 5.0
    run_as: str = "nobody"
    require_user_switch: bool = False
    script_python: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            output_cap=_env_int(env, "RUNNER_OUTPUT_CAP_BYTES", cls.output_cap),
            memory_limit_mb=_env_int(env, "RUNNER_MEMORY_LIMIT_MB", cls.memory_limit_mb),
            nofile_limit=_env_int(env, "RUNNER_NOFILE_LIMIT", cls.nofile_limit, minimum=16),
            nproc_limit=_env_int(env, "RUNNER_NPROC_LIMIT", cls.nproc_limit),
            kill_grace=float(_env_int(env, "RUNNER_KILL_GRACE_SECONDS", int(cls.kill_grace))),
            run_as=env.get("RUNNER_RUN_AS", cls.run_as).strip(),
            require_user_switch=env.get("RUNNER_REQUIRE_USER_SWITCH", "") in {"1", "true"},
            script_python=env.get("RUNNER_SCRIPT_PYTHON") or None,
        )


# --------------------------------------------------------------------------- HTTP


class TransferError(Exception):
    """A GET or PUT that failed for good (message never contains the URL)."""


def _check_scheme(url: str, allowed: tuple[str, ...]) -> None:
    scheme = url.split(":", 1)[0].lower()
    if scheme not in allowed:
        raise TransferError(f"unsupported URL scheme {scheme!r}")


def _read_capped(response: Any, limit: int) -> bytes:
    body: bytes = response.read(limit + 1)
    if len(body) > limit:
        raise TransferError(f"response larger than {limit} bytes")
    return body


def http_get(url: str, limit: int) -> bytes:
    _check_scheme(url, ("https", "http", "file"))
    return _with_retries(lambda: _request("GET", url, None, None, limit))


def http_put(url: str, body: bytes, content_type: str) -> None:
    _check_scheme(url, ("https", "http"))
    _with_retries(lambda: _request("PUT", url, body, content_type, 1024 * 1024))


def http_put_if_absent(url: str, body: bytes) -> bool:
    """PUT only if the object does not exist yet (S3 conditional write). False if it did."""
    _check_scheme(url, ("https", "http"))
    try:
        _with_retries(
            lambda: _request(
                "PUT", url, body, "application/json", 1024 * 1024, {"If-None-Match": "*"}
            )
        )
    except TransferError as exc:
        if str(exc) == "HTTP 412":
            return False
        raise
    return True


def _request(
    method: str,
    url: str,
    body: bytes | None,
    content_type: str | None,
    limit: int,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (scheme checked)
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
        return _read_capped(response, limit)


def _with_retries(call: Callable[[], bytes]) -> bytes:
    last = "no attempt"
    for delay in (*RETRY_DELAYS, None):
        try:
            return call()
        except urllib.error.HTTPError as exc:
            if exc.code not in TRANSIENT_HTTP:
                raise TransferError(f"HTTP {exc.code}") from None
            last = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FileNotFoundError | PermissionError):
                raise TransferError("file not readable") from None
            last = f"URL error: {exc.reason}"
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if delay is not None:
            time.sleep(delay)
    raise TransferError(last)


# --------------------------------------------------------------------------- manifest


def _field(raw: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = raw.get(name, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"run field {name!r} missing or not {kind.__name__}")
    return value


@dataclass(frozen=True)
class RunSpec:
    job_id: str
    run_key: str
    attempt: int
    scheduled_at: int
    not_before: int
    timeout_seconds: int
    parameters: Any
    script_url: str = field(repr=False)
    started_url: str = field(repr=False)
    finished_url: str = field(repr=False)
    output_url: str = field(repr=False)
    # Conditional PUT that makes this task the only one to start this attempt (optional).
    claim_url: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: object) -> RunSpec:
        if not isinstance(raw, dict):
            raise ValueError("run entry is not an object")
        scheduled_at = _field(raw, "scheduled_at", int)
        spec = cls(
            job_id=_field(raw, "job_id", str),
            run_key=_field(raw, "run_key", str),
            attempt=_field(raw, "attempt", int, 1),
            scheduled_at=scheduled_at,
            not_before=_field(raw, "not_before", int, scheduled_at),
            timeout_seconds=_field(raw, "timeout_seconds", int),
            parameters=raw.get("parameters") or {},
            script_url=_field(raw, "script_url", str),
            started_url=_field(raw, "started_url", str),
            finished_url=_field(raw, "finished_url", str),
            output_url=_field(raw, "output_url", str),
            claim_url=raw.get("claim_url") if isinstance(raw.get("claim_url"), str) else None,
        )
        if spec.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        return spec

    @property
    def ids(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "run_key": self.run_key, "attempt": self.attempt}


@dataclass(frozen=True)
class Manifest:
    pack_id: str
    runs: list[RunSpec]
    invalid: list[dict[str, Any]]


def parse_manifest(body: bytes) -> Manifest:
    """Valid runs, plus the entries that could not be parsed (reported FAILED where possible)."""
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise ValueError("manifest is not a version 1 object")
    entries = document.get("runs")
    if not isinstance(entries, list):
        raise ValueError("manifest has no runs list")
    runs: list[RunSpec] = []
    invalid: list[dict[str, Any]] = []
    for entry in entries:
        try:
            runs.append(RunSpec.parse(entry))
        except ValueError as exc:
            invalid.append({"entry": entry if isinstance(entry, dict) else {}, "error": str(exc)})
    return Manifest(pack_id=str(document.get("pack_id", "")), runs=runs, invalid=invalid)


# --------------------------------------------------------------------------- sandbox


@dataclass(frozen=True)
class Sandbox:
    """How scripts are started: interpreter, and the unprivileged user to switch to (if any)."""

    interpreter: str
    uid: int | None = None
    gid: int | None = None
    error: str | None = None  # set: the sandbox cannot be built, runs fail closed

    def popen_user_args(self) -> dict[str, Any]:
        if self.uid is None or self.gid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def resource_limiter(config: Config, switching_user: bool) -> Callable[[], None]:
    """The preexec function: lower soft *and* hard limits, so the script cannot raise them."""
    limits: list[tuple[int, int]] = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, config.nofile_limit),
    ]
    if config.memory_limit_mb > 0:
        limits.append((resource.RLIMIT_AS, config.memory_limit_mb * 1024 * 1024))
    if switching_user and config.nproc_limit > 0:
        # Per real uid: shared by every run of the pack (they all run as the same user).
        limits.append((resource.RLIMIT_NPROC, config.nproc_limit))

    def apply() -> None:  # runs in the child between fork and exec: no logging, no imports
        for which, wanted in limits:
            _, hard = resource.getrlimit(which)
            value = hard if hard != resource.RLIM_INFINITY and hard < wanted else wanted
            resource.setrlimit(which, (value, value))

    return apply


@dataclass
class RunDirs:
    """``base`` (runner-only, 0711) holds ``output.log`` (0600) and ``work`` (the script's)."""

    base: str
    work: str
    output: str

    @classmethod
    def create(cls, sandbox: Sandbox) -> RunDirs:
        base = tempfile.mkdtemp(prefix="run-")
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        if sandbox.uid is not None and sandbox.gid is not None:
            # The script may enter its own directory but cannot list or touch the output file,
            # which the runner (root) later reads and uploads.
            os.chmod(base, 0o711)  # noqa: S103 (traverse only, no listing)
            os.chown(work, sandbox.uid, sandbox.gid)
        return cls(base=base, work=work, output=os.path.join(base, "output.log"))

    def write_script(self, source: bytes, sandbox: Sandbox) -> None:
        path = os.path.join(self.work, "script.py")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(source)
        if sandbox.uid is not None and sandbox.gid is not None:
            os.chown(path, sandbox.uid, sandbox.gid)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _probe(interpreter: str, uid: int, gid: int, config: Config) -> bool:
    """Can ``interpreter`` start as uid/gid in a working directory made like the runs' ones?"""
    sandbox = Sandbox(interpreter=interpreter, uid=uid, gid=gid)
    dirs = RunDirs.create(sandbox)
    try:
        completed = subprocess.run(
            [interpreter, "-c", "pass"],
            cwd=dirs.work,
            env={"PATH": SAFE_PATH, "HOME": dirs.work, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=20,
            check=False,
            preexec_fn=resource_limiter(config, switching_user=True),
            **sandbox.popen_user_args(),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        dirs.remove()
    return completed.returncode == 0


def choose_sandbox(config: Config) -> Sandbox:
    """Switch scripts to ``config.run_as`` when root, with an interpreter that user can run."""
    default = config.script_python or sys.executable or shutil.which("python3", path=SAFE_PATH)
    if not default:
        return Sandbox(interpreter="", error="no Python interpreter found for scripts")
    if os.geteuid() != 0:
        return Sandbox(interpreter=default)  # unprivileged already: nothing to switch to
    problem: str
    if not config.run_as:
        problem = "user switch disabled (RUNNER_RUN_AS is empty)"
    else:
        try:
            entry = pwd.getpwnam(config.run_as)
        except KeyError:
            entry = None
        if entry is None:
            problem = f"user {config.run_as!r} does not exist"
        else:
            candidates = (
                [config.script_python]
                if config.script_python
                else [
                    sys.executable,
                    shutil.which("python3", path=SAFE_PATH),
                ]
            )
            for candidate in dict.fromkeys(c for c in candidates if c):
                if _probe(candidate, entry.pw_uid, entry.pw_gid, config):
                    return Sandbox(interpreter=candidate, uid=entry.pw_uid, gid=entry.pw_gid)
            problem = f"no interpreter that user {config.run_as!r} can run"
    if config.require_user_switch:
        return Sandbox(interpreter=default, error=f"cannot drop privileges: {problem}")
    log("user_switch_unavailable", "warning", reason=problem, scripts_run_as_root=True)
    return Sandbox(interpreter=default)


def child_environment(spec: RunSpec, workdir: str) -> dict[str, str]:
    """Built from scratch: nothing of the runner's environment is inherited."""
    return {
        "PATH": SAFE_PATH,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "JOB_PARAMETERS": json.dumps(spec.parameters, separators=(",", ":")),
        "JOB_ID": spec.job_id,
        "RUN_KEY": spec.run_key,
        "SCHEDULED_AT": iso_seconds(spec.scheduled_at),
        "ATTEMPT": str(spec.attempt),
    }


# --------------------------------------------------------------------------- running one script


@dataclass
class Runtime:
    """Shared by the run threads: settings, sandbox, and the stop request from a signal."""

    config: Config
    sandbox: Sandbox
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
class Outcome:
    status: str
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    start_lag_ms: int | None = None
    duration_ms: int | None = None
    output_bytes: int = 0
    output_truncated: bool = False
    tail: bytes = b""
    error: str | None = None


@dataclass
class Supervision:
    """State of the drain-and-watch loop of one child."""

    deadline: float
    term_sent_at: float | None = None
    kill_sent: bool = False
    timed_out: bool = False
    stopped: bool = False
    exited_at: float | None = None
    eof: bool = False


def _exited_unreaped(pid: int) -> bool:
    """Has the child exited? Leaves it a zombie, so its process group id stays reserved."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _escalate(proc: subprocess.Popen[bytes], state: Supervision, rt: Runtime, now: float) -> None:
    if state.exited_at is not None:
        return
    if state.term_sent_at is None:
        if now >= state.deadline:
            state.timed_out = True
        elif rt.stop.is_set():
            state.stopped = True
        if state.timed_out or state.stopped:
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
    proc: subprocess.Popen[bytes], sink: OutputSink, rt: Runtime, timeout: int
) -> Supervision:
    """Drain the output pipe until the script is gone, enforcing timeout and stop requests."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    state = Supervision(deadline=time.monotonic() + timeout)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            _escalate(proc, state, rt, now)
            _drain(fd, selector, sink, state)
            if state.exited_at is None and _exited_unreaped(proc.pid):
                state.exited_at = time.monotonic()
                signal_group(proc.pid, signal.SIGKILL)  # leftovers of the script's group
            if state.exited_at is not None and (
                state.eof or time.monotonic() - state.exited_at >= PIPE_GRACE_SECONDS
            ):
                break
    rt.groups.pop(proc.pid, None)  # before reaping: the pid may then be reused
    proc.wait()
    proc.stdout.close()
    return state


def run_script(spec: RunSpec, dirs: RunDirs, rt: Runtime) -> Outcome:
    """Start the script now, report it started, and supervise it to its end."""
    sandbox = rt.sandbox
    started_at = time.time()
    started_mono = time.monotonic()
    lag_ms = round((started_at - spec.not_before) * 1000)
    with open(dirs.output, "wb", opener=_private_opener) as handle:
        sink = OutputSink(handle=handle, cap=rt.config.output_cap)
        try:
            proc = subprocess.Popen(
                [sandbox.interpreter, "script.py"],
                cwd=dirs.work,
                env=child_environment(spec, dirs.work),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                umask=0o077,
                # Safe with threads here: the function only calls get/setrlimit (no locks, no
                # imports, no logging), and CPython re-initialises its own state after fork.
                preexec_fn=resource_limiter(rt.config, sandbox.uid is not None),  # noqa: PLW1509
                **sandbox.popen_user_args(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log("run_start_failed", "error", **spec.ids, error=str(exc))
            return Outcome(status=FAILED, error=f"could not start the script: {exc}")
        rt.groups[proc.pid] = None
        if rt.stop.is_set():  # a stop that raced with the start
            signal_group(proc.pid, signal.SIGTERM)
        log("run_started", **spec.ids, start_lag_ms=lag_ms, pid=proc.pid)
        reporter = threading.Thread(
            target=_report_started, args=(spec, started_at, lag_ms), daemon=True
        )
        reporter.start()
        try:
            state = supervise(proc, sink, rt, spec.timeout_seconds)
        finally:
            rt.groups.pop(proc.pid, None)
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
    if state.timed_out:
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


# --------------------------------------------------------------------------- reports


def _report_started(spec: RunSpec, started_at: float, lag_ms: int) -> None:
    report = {
        **spec.ids,
        "scheduled_at": spec.scheduled_at,
        "not_before": spec.not_before,
        "started_at": iso_ms(started_at),
        "start_lag_ms": lag_ms,
    }
    try:
        http_put(spec.started_url, json.dumps(report).encode(), "application/json")
    except TransferError as exc:
        log("report_failed", "error", **spec.ids, report="started", error=str(exc))


def finished_report(spec: RunSpec, outcome: Outcome, output_uploaded: bool) -> dict[str, Any]:
    return {
        **spec.ids,
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "scheduled_at": spec.scheduled_at,
        "not_before": spec.not_before,
        "started_at": iso_ms(outcome.started_at) if outcome.started_at is not None else None,
        "finished_at": iso_ms(outcome.finished_at or time.time()),
        "start_lag_ms": outcome.start_lag_ms,
        "duration_ms": outcome.duration_ms,
        "output_tail": outcome.tail.decode("utf-8", errors="replace"),
        "output_bytes": outcome.output_bytes,
        "output_truncated": outcome.output_truncated,
        "output_uploaded": output_uploaded,
        "error": outcome.error,
    }


def deliver(spec: RunSpec, outcome: Outcome, output_path: str | None) -> bool:
    """PUT the output (if the tail does not already hold all of it), then the finished report.
    True when the report arrived."""
    uploaded = False
    if output_path is not None and outcome.output_bytes > len(outcome.tail):
        try:
            with open(output_path, "rb") as handle:
                body = handle.read()
            http_put(spec.output_url, body, "text/plain")
            uploaded = True
        except (OSError, TransferError) as exc:
            log("report_failed", "error", **spec.ids, report="output", error=str(exc))
    report = finished_report(spec, outcome, uploaded)
    try:
        http_put(spec.finished_url, json.dumps(report).encode(), "application/json")
    except TransferError as exc:
        log("report_failed", "error", **spec.ids, report="finished", error=str(exc))
        return False
    log(
        "run_finished",
        **spec.ids,
        status=outcome.status,
        exit_code=outcome.exit_code,
        duration_ms=outcome.duration_ms,
        output_bytes=outcome.output_bytes,
        error=outcome.error,
    )
    return True


# --------------------------------------------------------------------------- one run, end to end


def wait_until(instant: float, stop: threading.Event) -> None:
    """Sleep in small steps until the wall clock reaches ``instant`` (or a stop is requested)."""
    while not stop.is_set():
        remaining = instant - time.time()
        if remaining <= 0:
            return
        stop.wait(min(remaining, 0.25))


def execute(spec: RunSpec, rt: Runtime) -> bool:
    """Everything for one run. True when its finished report was delivered."""
    dirs: RunDirs | None = None
    try:
        if rt.sandbox.error is not None:
            return deliver(spec, Outcome(status=FAILED, error=rt.sandbox.error), None)
        try:
            source = http_get(spec.script_url, MAX_SCRIPT_BYTES)
        except TransferError as exc:
            log("script_fetch_failed", "error", **spec.ids, error=str(exc))
            outcome = Outcome(status=FAILED, error=f"script download failed: {exc}")
            return deliver(spec, outcome, None)
        if not claim(spec):
            # Another task already started this attempt (the executor dispatched it twice,
            # e.g. it died after RunTask): that task runs and reports it.
            log("run_claimed_elsewhere", "warning", **spec.ids)
            return True
        dirs = RunDirs.create(rt.sandbox)
        dirs.write_script(source, rt.sandbox)
        log("run_ready", **spec.ids, script_bytes=len(source), not_before=spec.not_before)
        wait_until(spec.not_before, rt.stop)
        if rt.stop.is_set():
            outcome = Outcome(status=FAILED, error="runner stopped before the script started")
            return deliver(spec, outcome, None)
        outcome = run_script(spec, dirs, rt)
        return deliver(spec, outcome, dirs.output if os.path.exists(dirs.output) else None)
    except Exception as exc:  # a bug of ours: still try to tell the scheduler
        log("run_crashed", "error", **spec.ids, error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            return deliver(spec, Outcome(status=FAILED, error=f"runner error: {exc}"), None)
        return False
    finally:
        if dirs is not None:
            dirs.remove()


def claim(spec: RunSpec) -> bool:
    """Take this attempt for this task. Fails open: if S3 cannot be reached, run anyway
    (at least once matters more than at most once)."""
    if spec.claim_url is None:
        return True
    body = json.dumps({**spec.ids, "pid": os.getpid(), "host": os.uname().nodename}).encode()
    try:
        return http_put_if_absent(spec.claim_url, body)
    except TransferError as exc:
        log("claim_failed", "warning", **spec.ids, error=str(exc))
        return True


def report_invalid(entry: Mapping[str, Any], error: str) -> bool:
    """A manifest entry that could not be parsed: report it FAILED if it names a finished URL."""
    url = entry.get("finished_url")
    log(
        "run_invalid",
        "error",
        job_id=entry.get("job_id"),
        run_key=entry.get("run_key"),
        error=error,
    )
    if not isinstance(url, str):
        return False
    report = {
        "job_id": entry.get("job_id"),
        "run_key": entry.get("run_key"),
        "attempt": entry.get("attempt"),
        "status": FAILED,
        "exit_code": None,
        "finished_at": iso_ms(time.time()),
        "error": f"invalid manifest entry: {error}",
    }
    try:
        http_put(url, json.dumps(report).encode(), "application/json")
    except TransferError:
        return False
    return True


# --------------------------------------------------------------------------- main


def _install_signal_handlers(rt: Runtime) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        rt.request_stop(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _wait_for(threads: list[threading.Thread], rt: Runtime) -> None:
    stop_deadline: float | None = None
    while any(thread.is_alive() for thread in threads):
        if rt.stop.is_set():
            if stop_deadline is None:
                stop_deadline = time.monotonic() + rt.config.kill_grace + STOP_REPORT_SECONDS
            elif time.monotonic() >= stop_deadline:
                log("runner_gave_up_waiting", "error")
                return
        for thread in threads:
            thread.join(timeout=0.2)
            if thread.is_alive():
                break


def main(argv: list[str] | None = None) -> int:
    del argv  # no arguments: everything comes from the environment
    manifest_url = os.environ.pop(MANIFEST_ENV, None)  # never inherited, never logged
    config = Config.from_env(os.environ)
    rt = Runtime(config=config, sandbox=Sandbox(interpreter=""))
    _install_signal_handlers(rt)
    if not manifest_url:
        log("manifest_missing", "error", variable=MANIFEST_ENV)
        return EXIT_NO_MANIFEST
    try:
        manifest = parse_manifest(http_get(manifest_url, MAX_MANIFEST_BYTES))
    except (TransferError, ValueError) as exc:
        log("manifest_unreadable", "error", error=str(exc))
        return EXIT_NO_MANIFEST
    del manifest_url
    rt.sandbox = choose_sandbox(config)
    log(
        "runner_started",
        pack_id=manifest.pack_id,
        runs=len(manifest.runs),
        invalid_runs=len(manifest.invalid),
        interpreter=rt.sandbox.interpreter,
        run_as_uid=rt.sandbox.uid if rt.sandbox.uid is not None else os.geteuid(),
        sandbox_error=rt.sandbox.error,
    )
    results: dict[int, bool] = {}

    def target(index: int, spec: RunSpec) -> None:
        results[index] = execute(spec, rt)

    threads = [
        threading.Thread(target=target, args=(index, spec), name=f"run-{index}", daemon=True)
        for index, spec in enumerate(manifest.runs)
    ]
    for thread in threads:
        thread.start()
    invalid_reported = [report_invalid(item["entry"], item["error"]) for item in manifest.invalid]
    _wait_for(threads, rt)
    reported = sum(results.values()) + sum(invalid_reported)
    expected = len(manifest.runs) + len(manifest.invalid)
    log("runner_finished", pack_id=manifest.pack_id, reported=reported, runs=expected)
    if rt.stop_signal is not None:
        return 128 + rt.stop_signal
    return EXIT_OK if reported == expected else EXIT_UNREPORTED


if __name__ == "__main__":
    sys.exit(main())
