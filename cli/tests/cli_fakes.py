"""A scripted HTTP API on 127.0.0.1 for the CLI's tests, and what the real API returns."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from click.testing import Result

JOB_ID = "0123456789abcdef0123456789abcdef"
RUN_KEY = f"1796000000-{JOB_ID}"
TOKEN = "test-token"

# `scheduler ARGS` run in-process: (*args, env=None, stdin=None) -> click Result
Scheduler = Callable[..., Result]


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeApi:
    """Answers per (method, path): the replies queued for it in turn, the last one repeating.
    Anything else is API Gateway's 404."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[Seen] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, method: str, path: str, *replies: Reply | dict[str, Any]) -> None:
        queued = [r if isinstance(r, Reply) else Reply(200, r) for r in replies]
        self.replies[(method, path)] = queued

    def calls(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if (method is None or s.method == method) and (path is None or s.path == path)
        ]

    def _answer(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        queued = self.replies.get((seen.method, seen.path))
        if not queued:
            return Reply(404, {"message": "Not Found"})
        return queued.pop(0) if len(queued) > 1 else queued[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    {key.lower(): value for key, value in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                reply = api._answer(seen)
                text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                payload = b"" if reply.body is None else text.encode()
                self.send_response(reply.status)
                content_type = "text/plain" if isinstance(reply.body, str) else "application/json"
                self.send_header("Content-Type", content_type)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def job(**fields: Any) -> dict[str, Any]:
    """A job as the API returns it."""
    return {
        "job_id": JOB_ID,
        "user_id": "alice",
        "name": "report",
        "schedule": "30 2 * * *",
        "timezone": "Europe/Paris",
        "parameters": {"region": "eu"},
        "description": None,
        "status": "ACTIVE",
        "next_run_at": "2026-12-01T02:30:00+01:00",
        "script_sha256": "ab" * 32,
        "timeout_seconds": 300,
        "max_attempts": 3,
        "concurrency_policy": "ALLOW",
        "notifications": {
            "on_failure": True,
            "late_after_seconds": None,
            "missed_after_seconds": 900,
        },
        "catch_up": {"policy": "ALL", "window_seconds": 3600},
        "start_at": None,
        "end_at": None,
        "jitter_seconds": 0,
        "dst": {"gap": None, "repeat": None},
        "pause_after_failures": None,
        "paused_reason": None,
        "created_at": "2026-11-30T10:00:00Z",
        "updated_at": "2026-11-30T10:00:00Z",
        "last_run": None,
    } | fields


def run(**fields: Any) -> dict[str, Any]:
    """A run as the API returns it."""
    return {
        "key": RUN_KEY,
        "job_id": JOB_ID,
        "user_id": "alice",
        "execution_time": 1796000000,
        "scheduled_at": "2026-11-30T01:33:20Z",
        "trigger": "MANUAL",
        "status": "QUEUED",
        "attempt": 1,
        "max_attempts": 3,
        "timeout_seconds": 300,
        "not_before": 1796000000,
        "created_at": "2026-11-30T01:33:20Z",
        "updated_at": "2026-11-30T01:33:20Z",
        "output_tail": None,
        "output_key": None,
        "exit_code": None,
        "error": None,
        "attempts": [],
    } | fields


def error(code: str, message: str, *details: dict[str, str]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": list(details)}}
