"""The local stack's AWS: moto server, with its state kept on disk.

`python -m devstack.moto_app -H HOST -p PORT [--state-dir DIR]` serves moto's own WSGI
application (moto server, as `python -m moto.server` does) with two additions:

- `devstack.moto_fast`: DynamoDB transactions and queries that cost what they cost on AWS, not
  time in proportion to the table (see that module);
- with `--state-dir`, durability: every request that can change moto's state is appended to a
  journal and the journal is flushed to disk (fdatasync) *before* the answer leaves, so an
  answer the client got is never lost, even to `kill -9` of everything. At start, the last
  snapshot of moto's backends is loaded and the journal since is replayed; then a new
  snapshot is written and the journal starts again (and so every `JOURNAL_RECORDS` records
  while running), so a restart replays at most that many requests, whatever the history.

Replay is exact because moto is made deterministic per request: requests are applied one at a
time (a lock; moto is bound to one core by the GIL anyway), each with moto's clock frozen at
the instant it was applied and moto's random generator seeded with a number drawn for it, and
the instant and seed are journaled with the request. Replayed in order, every request finds the
state it found the first time and makes the same decisions with the same clock and the same
"random" ids: the same conditional writes succeed, SQS receipt handles are the same (so the
journaled DeleteMessage calls that follow find their messages), a received message is
invisible until the same instant, presigned URLs are accepted (moto does not check their
expiry; the request is replayed as it came). SQS long polls do not hold the lock while they
wait: ReceiveMessage is applied as short polls (WaitTimeSeconds 0), repeated until a message
comes or the wait is over, and only the polls that changed something are journaled.

Reads (GetItem, Query, S3 GET, ...) are not journaled, but they too wait until what they may
have seen is on disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import pickle
import random
import signal
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, Any

import devstack.moto_fast  # noqa: F401  # patches moto's DynamoDB on import

SNAPSHOT = "snapshot.pickle"
JOURNAL_PREFIX = "journal-"
JOURNAL_RECORDS = 5000  # records between snapshots: bounds the replay at start
JOURNAL_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload

# Requests that change nothing: not journaled. Anything else is (a read journaled by mistake
# only costs room; a write left out would be lost).
_READ_TARGETS = {
    # DynamoDB
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
    "DescribeTable",
    "ListTables",
    "DescribeTimeToLive",
    "ListTagsOfResource",
    # SQS
    "GetQueueUrl",
    "GetQueueAttributes",
    "ListQueues",
    "ListQueueTags",
    # Secrets Manager
    "GetSecretValue",
    "DescribeSecret",
    "ListSecrets",
    # ECS, STS
    "DescribeTaskDefinition",
    "DescribeClusters",
    "DescribeTasks",
    "ListTasks",
    "ListClusters",
    "GetCallerIdentity",
}
_READ_ACTIONS = {"ListTopics", "ListSubscriptions", "GetTopicAttributes", "GetCallerIdentity"}
_RECEIVE = "ReceiveMessage"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# --------------------------------------------------------------------------- moto, made exact


class Clock:
    """moto's clock (`moto.core.utils.utcnow`, through which its models read the time, e.g.
    SQS visibility), frozen at one instant while a request is applied."""

    def __init__(self) -> None:
        from moto.core import utils

        self._real = utils.utcnow
        self.frozen: float | None = None
        clock = self

        def utcnow() -> dt.datetime:
            if clock.frozen is None:
                return clock._real()  # type: ignore[no-any-return]
            return dt.datetime.fromtimestamp(clock.frozen, dt.UTC).replace(tzinfo=None)

        self._patched = utcnow
        self._modules_seen = 0
        self.install()

    def install(self) -> None:
        """Point every loaded moto module's `utcnow` at the frozen clock (modules import it by
        name); called after each request, it only looks again when modules were loaded (moto
        loads a service's modules on its first request)."""
        if len(sys.modules) == self._modules_seen:
            return
        self._modules_seen = len(sys.modules)
        for name, module in list(sys.modules.items()):
            is_moto = name.startswith("moto") and isinstance(module, ModuleType)
            if is_moto and getattr(module, "utcnow", None) is self._real:
                module.utcnow = self._patched  # type: ignore[attr-defined]


class StateError(RuntimeError):
    """The saved state cannot be restored by this moto."""


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


def _moto_random() -> random.Random:
    from moto.moto_api._internal import mock_random

    return mock_random  # type: ignore[no-any-return]


def _backend_dicts() -> dict[tuple[str, str], Any]:
    """Every moto BackendDict in use, by (module, attribute): what a snapshot holds."""
    from moto.core.base_backend import BackendDict

    found: dict[tuple[str, str], Any] = {}
    instances: list[Any] = BackendDict._instances  # type: ignore[misc]
    for backend_dict in list(instances):
        module_name = backend_dict.backend.__module__
        module = sys.modules[module_name]
        for attribute, value in vars(module).items():
            if value is backend_dict:
                found[(module_name, attribute)] = backend_dict
                break
    return found


def _new_lock(kind: str) -> Any:
    return threading.RLock() if kind == "rlock" else threading.Lock()


_LOCK_TYPES = {type(threading.Lock()): "lock", type(threading.RLock()): "rlock"}


class _Pickler(pickle.Pickler):
    """moto's models hold locks (SQS queues, S3 keys): a snapshot holds fresh ones instead."""

    def reducer_override(self, obj: Any) -> Any:
        kind = _LOCK_TYPES.get(type(obj))
        if kind is not None:
            return _new_lock, (kind,)
        return NotImplemented


def dump_state() -> bytes:
    buffer = io.BytesIO()
    state = {key: dict(value) for key, value in _backend_dicts().items()}
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return buffer.getvalue()


def load_state(data: bytes) -> None:
    import importlib

    from moto.core.base_backend import BackendDict

    state: dict[tuple[str, str], dict[str, Any]] = pickle.loads(data)  # noqa: S301  # our own file
    for (module_name, attribute), accounts in state.items():
        backend_dict = getattr(importlib.import_module(module_name), attribute)
        backend_dict.clear()
        backend_dict.update(accounts)
        instances: list[Any] = BackendDict._instances  # type: ignore[misc]
        if backend_dict not in instances:
            instances.append(backend_dict)


def _sqs_message_count() -> int:
    """Messages in every SQS queue (a receive that moves messages to a dead-letter queue
    changes state without returning any)."""
    return sum(len(queue._messages) for queue in _sqs_queues())


# --------------------------------------------------------------------------- the journal


def _segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"{JOURNAL_PREFIX}*.log"):
        try:
            found.append((int(path.stem.removeprefix(JOURNAL_PREFIX)), path))
        except ValueError:
            continue
    return sorted(found)


def read_records(path: Path) -> Iterator[bytes]:
    """The records of a journal file, up to the first incomplete or damaged one (a write that
    `kill -9` cut short: its request was never answered)."""
    with path.open("rb") as journal:
        while True:
            header = journal.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            length, crc = _HEADER.unpack(header)
            payload = journal.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            yield payload


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Append-only segments `journal-<n>.log` beside `snapshot.pickle`; group commit: one
    fdatasync covers every record written before it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[bytes] | None = None
        self.segment = 0
        self.records = 0  # since the last snapshot
        self.bytes = 0
        self._written = 0  # a position over all segments: bytes appended since start
        self._durable = 0
        self._sync_lock = threading.Lock()

    def open_segment(self, number: int) -> None:
        self.segment = number
        self._file = (self.directory / f"{JOURNAL_PREFIX}{number:08d}.log").open("ab")
        _fsync_directory(self.directory)

    def append(self, payload: bytes) -> int:
        """Write a record (no flush to disk yet); returns the position to sync() up to."""
        assert self._file is not None
        self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        self._file.flush()
        self.records += 1
        self.bytes += _HEADER.size + len(payload)
        self._written += _HEADER.size + len(payload)
        return self._written

    @property
    def written(self) -> int:
        return self._written

    def sync(self, upto: int) -> None:
        """Return once every record up to `upto` is on disk (one fdatasync for all waiting)."""
        if self._durable >= upto:
            return
        with self._sync_lock:
            if self._durable >= upto:
                return
            target, journal = self._written, self._file
            if journal is not None:
                os.fdatasync(journal.fileno())
            self._durable = max(self._durable, target)

    def rotate(self) -> int:
        """Close the current segment (on disk) and start the next; returns the new number.
        The caller holds the application lock: nothing is appended meanwhile."""
        with self._sync_lock:
            if self._file is not None:
                os.fdatasync(self._file.fileno())
                self._file.close()
            self._durable = self._written
            self.open_segment(self.segment + 1)
        self.records = 0
        self.bytes = 0
        return self.segment


# --------------------------------------------------------------------------- the application


def _request_kind(environ: dict[str, Any], body: bytes) -> str:
    """'read', 'receive' (an SQS ReceiveMessage) or 'write'."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    if path.startswith("/moto-api/") and method == "GET":
        return "read"
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    action = target.rsplit(".", 1)[-1] if target else _form_action(environ, body)
    if action == _RECEIVE:
        return "receive"
    if action in _READ_TARGETS or action in _READ_ACTIONS:
        return "read"
    return "write"


def _form_action(environ: dict[str, Any], body: bytes) -> str:
    from urllib.parse import parse_qs

    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return str(query["Action"][0])
    if "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        form = parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return str(form["Action"][0])
    return ""


def _requested_wait(environ: dict[str, Any], body: bytes) -> float:
    """How long a ReceiveMessage asks to wait (JSON protocol; the query protocol's form too)."""
    if environ.get("HTTP_X_AMZ_TARGET"):
        return float(json.loads(body or b"{}").get("WaitTimeSeconds") or 0)
    from urllib.parse import parse_qsl

    return float(dict(parse_qsl(body.decode())).get("WaitTimeSeconds") or 0)


def _replayable_session_tokens() -> None:
    """moto draws an STS session token from os.urandom, which a replay cannot repeat: from its
    seeded generator instead, so that a replayed request signed with a role session's token
    (every call of a function under IAM enforcement, devstack.iam) finds that session."""
    import base64

    from moto.sts import models, utils

    def session_token() -> str:
        raw = bytes(_moto_random().getrandbits(8) for _ in range(266))
        prefix = utils.SESSION_TOKEN_PREFIX
        return prefix + base64.b64encode(raw)[len(prefix) :].decode()

    utils.random_session_token = session_token
    models.random_session_token = session_token  # type: ignore[attr-defined]


def _receive_without_waiting() -> None:
    """moto's ReceiveMessage, always a short poll: DurableApp waits between polls itself,
    without holding its lock. The request's body is left as it came (under IAM enforcement
    moto checks its signature, which covers the body)."""
    from moto.sqs.models import SQSBackend

    receive = SQSBackend.receive_message

    def short_poll(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int, *args: Any, **kw: Any
    ) -> Any:
        return receive(self, queue_name, count, 0, *args, **kw)

    SQSBackend.receive_message = short_poll  # type: ignore[method-assign]


def _sqs_queues() -> Iterator[Any]:
    models = sys.modules.get("moto.sqs.models")
    if models is None:
        return
    for account in models.sqs_backends.values():
        for backend in account.values():
            yield from backend.queues.values()


def _queue_condition(body: bytes) -> threading.Condition | None:
    """The condition moto notifies when a message is added to the queue a ReceiveMessage
    names (JSON protocol), or None."""
    try:
        url = str(json.loads(body or b"{}").get("QueueUrl", ""))
    except (ValueError, AttributeError):
        return None
    name = url.rstrip("/").rsplit("/", 1)[-1]
    for queue in _sqs_queues():
        if queue.name == name:
            condition: threading.Condition = queue._messages_lock
            return condition
    return None


def _notify_queues() -> None:
    """Wake the long polls: an SQS request may have made a message deliverable."""
    for queue in _sqs_queues():
        with queue._messages_lock:
            queue._messages_lock.notify_all()


def _received_any(response: bytes) -> bool:
    if response.startswith(b"{"):
        try:
            return bool(json.loads(response).get("Messages"))
        except ValueError:
            return False
    return b"<Message>" in response


def _recordable(environ: dict[str, Any]) -> dict[str, str]:
    return {
        key: value
        for key, value in environ.items()
        if isinstance(value, str) and not key.startswith(("wsgi.", "werkzeug."))
    }


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bytes(stream.read(int(length)))
    if environ.get("wsgi.input_terminated") or "chunked" in environ.get(
        "HTTP_TRANSFER_ENCODING", ""
    ):
        return bytes(stream.read())
    return b""


def _environ_for(recorded: dict[str, str], body: bytes) -> dict[str, Any]:
    environ: dict[str, Any] = {
        key: value for key, value in recorded.items() if key != "HTTP_TRANSFER_ENCODING"
    }
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.update(
        {
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": recorded.get("wsgi.url_scheme", "http"),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
    )
    return environ


class DurableApp:
    """moto's WSGI application, one request at a time, journaled (see the module's doc)."""

    def __init__(
        self, app: WsgiApp, directory: Path | None, snapshot_every: int = JOURNAL_RECORDS
    ) -> None:
        self.app = app
        self.snapshot_every = snapshot_every
        self.directory = directory
        self.journal = Journal(directory) if directory is not None else None
        self.clock = Clock()
        self._lock = threading.Lock()
        self._compacting = False
        self._sequence = 0

    # -- serving ---------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = _read_body(environ)
        kind = _request_kind(environ, body)
        recorded = _recordable(environ)
        if kind == "receive":
            status, headers, response = self._receive(recorded, body)
        else:
            status, headers, response, position = self._apply(recorded, body, kind == "write")
            if self.journal is not None:
                self.journal.sync(position)
        start_response(status, headers)
        return [response]

    def _receive(
        self, recorded: dict[str, str], body: bytes
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        deadline = time.monotonic() + _requested_wait(recorded, body)
        # The queue's own condition, notified by moto when a message is added to it and by
        # _apply after any SQS request that may make one deliverable (a delete frees a FIFO
        # group, a visibility change): held from the poll to the wait, so none is missed.
        # Once a second, the poll is repeated anyway (a message's visibility timeout ends).
        condition = _queue_condition(body)
        while True:
            status, headers, response, position = self._apply(
                recorded, body, "receive", hold=condition
            )
            remaining = deadline - time.monotonic()
            done = remaining <= 0 or not status.startswith("200") or _received_any(response)
            if condition is not None:
                try:
                    if not done:
                        condition.wait(min(remaining, 1.0))
                finally:
                    condition.release()
            elif not done:
                time.sleep(min(remaining, 0.2))  # no such queue (yet)
            if self.journal is not None:
                self.journal.sync(position)
            if done:
                return status, headers, response

    def _apply(
        self,
        recorded: dict[str, str],
        body: bytes,
        journal: bool | str,
        hold: threading.Condition | None = None,
    ) -> tuple[str, list[tuple[str, str]], bytes, int]:
        """Apply a request; journal it if `journal` (for "receive": if it changed anything).
        `hold` is acquired before the lock is released (the caller releases it)."""
        with self._lock:
            instant, seed = time.time(), int.from_bytes(os.urandom(8)) >> 1
            before = _sqs_message_count() if journal == "receive" else 0
            status, headers, response = self._run(recorded, body, instant, seed)
            if journal == "receive":
                journal = _received_any(response) or _sqs_message_count() != before
            position = 0
            if journal and self.journal is not None:
                self._sequence += 1
                record = (self._sequence, instant, seed, recorded, body)
                position = self.journal.append(pickle.dumps(record, pickle.HIGHEST_PROTOCOL))
                if not self._compacting and (
                    self.journal.records >= self.snapshot_every
                    or self.journal.bytes >= JOURNAL_BYTES
                ):
                    self._compacting = True
                    threading.Thread(target=self.compact, name="moto-compact", daemon=True).start()
            elif self.journal is not None:
                position = self.journal.written  # what this request may have seen
            if journal and recorded.get("HTTP_X_AMZ_TARGET", "").startswith("AmazonSQS."):
                _notify_queues()
            if hold is not None:
                hold.acquire()
        return status, headers, response, position

    def _run(
        self, recorded: dict[str, str], body: bytes, instant: float, seed: int
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """Apply one request to moto with its clock at `instant` and its randomness from
        `seed` (the caller holds the lock)."""
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            captured["status"], captured["headers"] = status, headers

        self.clock.frozen = instant
        _moto_random().seed(seed)
        random.seed(seed)  # a few models use the random module itself
        try:
            result = self.app(_environ_for(recorded, body), start_response)
            try:
                response = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            self.clock.frozen = None
        self.clock.install()  # moto loads a service's modules on its first request
        return captured["status"], captured["headers"], response

    # -- snapshots ---------------------------------------------------------------------------

    def restore(self) -> int:
        """Load the snapshot, replay the journal after it, then snapshot again and start an
        empty journal. Returns the number of requests replayed."""
        assert self.directory is not None
        assert self.journal is not None
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        snapshot = self.directory / SNAPSHOT
        covered = 0
        if snapshot.exists():
            version, covered, state = pickle.loads(snapshot.read_bytes())  # noqa: S301
            if version != _moto_version():
                raise StateError(
                    f"{snapshot} was written by moto {version}, this is moto "
                    f"{_moto_version()}: start with empty state (make run FRESH=1, or --fresh)"
                )
            load_state(state)
            self.clock.install()
        self._sequence = covered
        segments = _segments(self.directory)
        replayed = 0
        for _, path in segments:
            for payload in read_records(path):
                sequence, instant, seed, recorded, body = pickle.loads(payload)  # noqa: S301
                if sequence <= covered:
                    continue
                self._run(recorded, body, instant, seed)
                self._sequence = sequence
                replayed += 1
        last = segments[-1][0] if segments else 0
        for _, path in segments:
            if path.stat().st_size == 0:  # a start that wrote nothing
                path.unlink()
        self.journal.open_segment(last + 1)
        if replayed or not snapshot.exists():
            self._write_snapshot(self._sequence, dump_state(), last + 1)
        return replayed

    def compact(self) -> None:
        """Snapshot moto's state and drop the journal it covers (while running)."""
        assert self.journal is not None
        try:
            with self._lock:
                sequence, state = self._sequence, dump_state()
                segment = self.journal.rotate()
            self._write_snapshot(sequence, state, segment)
        except Exception as error:  # the journal still holds everything
            print(f"moto_app: snapshot failed: {error!r}", file=sys.stderr, flush=True)
        finally:
            self._compacting = False

    def _write_snapshot(self, sequence: int, state: bytes, first_kept: int) -> None:
        assert self.directory is not None
        temporary = self.directory / f"{SNAPSHOT}.tmp"
        with temporary.open("wb") as out:
            pickle.dump((_moto_version(), sequence, state), out, pickle.HIGHEST_PROTOCOL)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.directory / SNAPSHOT)
        _fsync_directory(self.directory)
        for number, path in _segments(self.directory):
            if number < first_kept:
                path.unlink()


# --------------------------------------------------------------------------- the server


def _stop(signum: int, _: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.moto_app", description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="keep moto's state here (default: memory)"
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=JOURNAL_RECORDS,
        metavar="RECORDS",
        help="snapshot the state after this many journaled requests (default %(default)s)",
    )
    arguments = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(arguments.port))

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler  # type: ignore[attr-defined]
    from werkzeug.serving import run_simple

    from devstack import moto_json
    from devstack.moto_server import allow_presigned_requests

    allow_presigned_requests()  # what IAM enforcement needs of moto (devstack.iam)
    moto_json.install()
    _receive_without_waiting()
    _replayable_session_tokens()
    app = DurableApp(
        DomainDispatcherApplication(create_backend_app),
        arguments.state_dir,
        arguments.snapshot_every,
    )
    if arguments.state_dir is not None:
        began = time.monotonic()
        try:
            replayed = app.restore()
        except StateError as error:
            print(f"moto_app: {error}", file=sys.stderr, flush=True)
            return 2
        print(
            f"moto_app: state {arguments.state_dir}: {replayed} requests replayed after the "
            f"snapshot in {time.monotonic() - began:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_simple(
        arguments.host,
        arguments.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
