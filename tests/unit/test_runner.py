"""The runner (runner/entrypoint.py and its jobrunner package), driven end to end against a
local HTTP server.

The server plays S3's presigned URLs: it serves the manifest and the scripts, and records every
PUT (started report, output, finished report). Most cases share one manifest, so their runs go
through one runner process concurrently and the whole file stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jobrunner.log import iso_ms, iso_seconds
from jobrunner.manifest import parse_manifest
from jobrunner.supervision import OutputSink
from jobrunner.transfer import TransferError, http_put

ENTRYPOINT = Path(__file__).resolve().parents[2] / "runner" / "entrypoint.py"
SECRET = "sentinel-secret-value-0xC0FFEE"
CAP = 1024 * 1024


# --------------------------------------------------------------------------- fake S3


@dataclass
class Store:
    objects: dict[str, bytes] = field(default_factory=dict)  # GET path -> body
    puts: dict[str, bytes] = field(default_factory=dict)  # PUT path -> body
    put_types: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # path -> 503s still to answer
    # path -> PUTs still to store and then answer 500 (S3 wrote it, the answer was lost)
    lost_answers: dict[str, int] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)  # DELETE paths, in order
    gets: list[str] = field(default_factory=list)  # GET paths, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_first(self, path: str) -> bool:
        with self.lock:
            left = self.failures.get(path, 0)
            if left:
                self.failures[path] = left - 1
            return left > 0


class FakeS3:
    def __init__(self) -> None:
        self.store = Store()
        store = self.store

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]  # the "signature" is not checked
                with store.lock:
                    store.gets.append(path)
                if store.fail_first(path):
                    self.send_error(503)
                    return
                with store.lock:
                    body = store.objects.get(path, store.puts.get(path))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                if store.fail_first(path):
                    self.send_error(500)
                    return
                with store.lock:
                    if self.headers.get("If-None-Match") == "*" and path in store.puts:
                        self.send_error(412)  # S3's conditional write: the object exists
                        return
                    store.puts[path] = body
                    store.put_types[path] = self.headers.get("Content-Type", "")
                    lost = store.lost_answers.get(path, 0)
                    if lost:
                        store.lost_answers[path] = lost - 1
                if lost:
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_DELETE(self) -> None:
                path = self.path.split("?", 1)[0]
                with store.lock:
                    store.puts.pop(path, None)
                    store.objects.pop(path, None)
                    store.deletes.append(path)
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def run(self, name: str, source: str, **overrides: Any) -> dict[str, Any]:
        """A manifest entry for one run whose script is ``source``."""
        self.store.objects[f"/scripts/{name}.py"] = source.encode()
        now = int(time.time())
        entry: dict[str, Any] = {
            "job_id": f"job-{name}",
            "run_key": f"{now}-job-{name}",
            "attempt": 1,
            "scheduled_at": now,
            "not_before": now,
            "timeout_seconds": 30,
            "parameters": {"name": name},
            "script_url": f"{self.base}/scripts/{name}.py?X-Amz-Signature=abc",
            "started_url": f"{self.base}/reports/{name}/started.json?X-Amz-Signature=abc",
            "finished_url": f"{self.base}/reports/{name}/finished.json?X-Amz-Signature=abc",
            "output_url": f"{self.base}/reports/{name}/output.txt?X-Amz-Signature=abc",
        }
        entry.update(overrides)
        return entry

    def manifest(
        self, runs: list[dict[str, Any]], path: str = "/manifest.json", **extra: Any
    ) -> str:
        document = {"version": 1, "pack_id": "pack-test", "runs": runs, **extra}
        self.store.objects[path] = json.dumps(document).encode()
        return f"{self.base}{path}?X-Amz-Signature=secret"

    def report(self, name: str, kind: str) -> dict[str, Any]:
        body = self.store.puts.get(f"/reports/{name}/{kind}.json")
        assert body is not None, f"no {kind} report for {name}"
        result: dict[str, Any] = json.loads(body)
        return result

    def output(self, name: str) -> bytes:
        return self.store.puts[f"/reports/{name}/output.txt"]


def runner_env(manifest_url: str | None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)  # carries the fake AWS_* credentials of conftest
    env["RUNNER_TEST_SECRET"] = SECRET
    env["ECS_CONTAINER_METADATA_URI_V4"] = "http://169.254.170.2/v4/abc"
    env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = "/v2/credentials/abc"
    if manifest_url is not None:
        env["RUNS_MANIFEST_URL"] = manifest_url
    env.update(extra)
    return env


def start_runner(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ENTRYPOINT)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


@pytest.fixture
def s3() -> Iterator[FakeS3]:
    server = FakeS3()
    yield server
    server.close()


# --------------------------------------------------------------------------- one pack, many cases

ECHO = """
import json, os
print(json.dumps({
    "parameters": json.loads(os.environ["JOB_PARAMETERS"]),
    "job_id": os.environ["JOB_ID"], "run_key": os.environ["RUN_KEY"],
    "scheduled_at": os.environ["SCHEDULED_AT"], "attempt": os.environ["ATTEMPT"],
    "cwd": os.getcwd(), "home": os.environ["HOME"],
}))
"""

ENV_DUMP = """
import json, os
try:
    with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
        parent_environ = handle.read().decode(errors="replace")
except OSError as exc:
    parent_environ = f"unreadable: {type(exc).__name__}"
print(json.dumps({"env": dict(os.environ), "uid": os.getuid(), "groups": os.getgroups(),
                  "parent_environ": parent_environ}))
"""

IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(30)
"""

LEAVES_CHILD = """
import subprocess
subprocess.Popen(["sleep", "30"])  # inherits stdout: the pipe stays open unless it is killed
print("parent done")
"""


@dataclass
class PackResult:
    s3: FakeS3
    returncode: int
    stderr: str
    elapsed: float
    not_before: int


@pytest.fixture(scope="module")
def pack() -> Iterator[PackResult]:
    server = FakeS3()
    not_before = int(time.time()) + 2
    runs = [
        server.run("echo", ECHO, parameters={"greeting": "hello", "n": 42}),
        server.run("fail", "import sys\nprint('bad things')\nsys.exit(1)\n"),
        server.run("timeout", "import time\ntime.sleep(30)\n", timeout_seconds=1),
        server.run("stubborn", IGNORES_SIGTERM, timeout_seconds=1),
        server.run(
            "big",
            "import sys\nline = 'x' * 999 + '\\n'\nfor _ in range(10_000):\n"
            "    sys.stdout.write(line)\nprint('THE END')\n",
        ),
        server.run("env", ENV_DUMP),
        server.run("later", "print('on time')\n", not_before=not_before),
        server.run("sleep_a", "import time\ntime.sleep(1)\n"),
        server.run("sleep_b", "import time\ntime.sleep(1)\n"),
        server.run("killed", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"),
        server.run("orphan", LEAVES_CHILD),
        server.run("flaky", "print('made it')\n"),
        server.run("missing", "", script_url=f"{server.base}/scripts/nope.py?X-Amz-Signature=abc"),
    ]
    server.store.failures["/scripts/flaky.py"] = 1
    server.store.failures["/reports/flaky/finished.json"] = 2
    url = server.manifest(runs)
    env = runner_env(url, RUNNER_KILL_GRACE_SECONDS="1")
    began = time.monotonic()
    proc = start_runner(env)
    _, stderr = proc.communicate(timeout=20)
    yield PackResult(
        s3=server,
        returncode=proc.returncode,
        stderr=stderr.decode(),
        elapsed=time.monotonic() - began,
        not_before=not_before,
    )
    server.close()


def test_pack_runner_exits_zero_when_every_run_reported(pack: PackResult) -> None:
    assert pack.returncode == 0, pack.stderr
    assert pack.elapsed < 12


def test_logs_are_json_lines_without_presigned_urls(pack: PackResult) -> None:
    lines = [json.loads(line) for line in pack.stderr.splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    assert {"runner_started", "run_started", "run_finished", "runner_finished"} <= events
    assert "X-Amz-Signature" not in pack.stderr
    assert SECRET not in pack.stderr


def test_successful_script_sees_its_parameters(pack: PackResult) -> None:
    finished = pack.s3.report("echo", "finished")
    assert finished["status"] == "SUCCEEDED"
    assert finished["exit_code"] == 0
    assert finished["output_truncated"] is False
    seen = json.loads(finished["output_tail"])
    assert seen["parameters"] == {"greeting": "hello", "n": 42}
    assert seen["job_id"] == "job-echo"
    assert seen["attempt"] == "1"
    assert seen["scheduled_at"].endswith("Z")
    assert seen["cwd"] == seen["home"]
    # The whole output fits in the tail: no output object is written
    assert finished["output_bytes"] == len(finished["output_tail"].encode())
    assert finished["output_uploaded"] is False
    assert "/reports/echo/output.txt" not in pack.s3.store.puts
    started = pack.s3.report("echo", "started")
    assert started["run_key"] == finished["run_key"]
    assert started["started_at"] == finished["started_at"]
    for path, content_type in pack.s3.store.put_types.items():
        assert content_type == ("text/plain" if path.endswith(".txt") else "application/json")


def test_exit_one_is_failed(pack: PackResult) -> None:
    finished = pack.s3.report("fail", "finished")
    assert finished["status"] == "FAILED"
    assert finished["exit_code"] == 1
    assert "bad things" in finished["output_tail"]


def test_killed_by_signal_reports_negative_exit_code(pack: PackResult) -> None:
    finished = pack.s3.report("killed", "finished")
    assert finished["status"] == "FAILED"
    assert finished["exit_code"] == -signal.SIGKILL


def test_timeout_terminates_the_script(pack: PackResult) -> None:
    finished = pack.s3.report("timeout", "finished")
    assert finished["status"] == "TIMED_OUT"
    assert finished["exit_code"] == -signal.SIGTERM
    assert 900 <= finished["duration_ms"] < 4000


def test_timeout_escalates_to_sigkill(pack: PackResult) -> None:
    finished = pack.s3.report("stubborn", "finished")
    assert finished["status"] == "TIMED_OUT"
    assert finished["exit_code"] == -signal.SIGKILL
    assert "ignoring SIGTERM" in finished["output_tail"]
    assert finished["duration_ms"] < 5000  # 1 s timeout + 1 s grace


def test_large_output_is_drained_and_capped(pack: PackResult) -> None:
    finished = pack.s3.report("big", "finished")
    assert finished["status"] == "SUCCEEDED"
    assert finished["output_bytes"] >= 10_000_000
    assert finished["output_truncated"] is True
    assert finished["output_tail"].endswith("THE END\n")
    assert len(finished["output_tail"].encode()) <= 4096
    assert len(pack.s3.output("big")) == CAP
    assert pack.s3.report("big", "finished")["output_uploaded"] is True


def test_script_environment_is_scrubbed(pack: PackResult) -> None:
    finished = pack.s3.report("env", "finished")
    assert finished["status"] == "SUCCEEDED", finished
    seen = json.loads(finished["output_tail"])
    env = seen["env"]
    assert set(env) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "JOB_PARAMETERS",
        "JOB_ID",
        "RUN_KEY",
        "SCHEDULED_AT",
        "ATTEMPT",
    }
    assert not [name for name in env if name.startswith(("AWS_", "ECS_"))]
    assert "RUNS_MANIFEST_URL" not in env
    assert SECRET not in json.dumps(env)
    if os.geteuid() == 0:  # scripts run as a uid of their own: the runner's environ is closed
        assert seen["uid"] != 0
        assert 0 not in seen["groups"]
        assert seen["parent_environ"].startswith("unreadable")
    # Not root: scripts run as the runner's user and could read /proc/<runner>/environ (see the
    # runner's README: local isolation is weaker than the container's).


def test_waits_for_not_before(pack: PackResult) -> None:
    started = pack.s3.report("later", "started")
    started_at = parse_time(started["started_at"])
    assert started_at >= pack.not_before
    assert 0 <= started["start_lag_ms"] < 500
    assert started["not_before"] == pack.not_before
    finished = pack.s3.report("later", "finished")
    assert finished["status"] == "SUCCEEDED"


def test_runs_of_a_pack_run_concurrently(pack: PackResult) -> None:
    a = pack.s3.report("sleep_a", "finished")
    b = pack.s3.report("sleep_b", "finished")
    assert parse_time(a["started_at"]) < parse_time(b["finished_at"])
    assert parse_time(b["started_at"]) < parse_time(a["finished_at"])


def test_leftover_children_do_not_hold_the_run(pack: PackResult) -> None:
    finished = pack.s3.report("orphan", "finished")
    assert finished["status"] == "SUCCEEDED"
    assert "parent done" in finished["output_tail"]
    assert finished["duration_ms"] < 3000


def test_transient_http_errors_are_retried(pack: PackResult) -> None:
    finished = pack.s3.report("flaky", "finished")
    assert finished["status"] == "SUCCEEDED"
    assert "made it" in finished["output_tail"]


def test_runs_of_one_script_fetch_it_once(s3: FakeS3) -> None:
    # Given three runs of one script (the executor gives them its one URL) and one of another
    shared = s3.run("shared", "print('shared')\n")["script_url"]
    runs = [s3.run(name, "", script_url=shared) for name in ("a", "b", "c")]
    runs.append(s3.run("other", "print('other')\n"))

    # When the runner runs the pack
    proc = start_runner(runner_env(s3.manifest(runs)))
    assert proc.wait(timeout=30) == 0

    # Then each script was fetched once, and every run ran its own script
    assert s3.store.gets.count("/scripts/shared.py") == 1
    assert s3.store.gets.count("/scripts/other.py") == 1
    assert [s3.report(name, "finished")["output_tail"] for name in ("a", "b", "c", "other")] == [
        "shared\n",
        "shared\n",
        "shared\n",
        "other\n",
    ]


def test_missing_script_is_reported_failed(pack: PackResult) -> None:
    finished = pack.s3.report("missing", "finished")
    assert finished["status"] == "FAILED"
    assert finished["exit_code"] is None
    assert "404" in finished["error"]
    assert "/reports/missing/started.json" not in pack.s3.store.puts


# --------------------------------------------------------------------------- runner lifecycle


def test_the_manifest_is_consumed_once_read(s3: FakeS3) -> None:
    # Given a manifest that carries a presigned DELETE of itself, as the executor writes it
    url = s3.manifest([s3.run("once", "print('ran')\n")], "/manifests/once.json")
    document = json.loads(s3.store.objects["/manifests/once.json"])
    document["consume_url"] = f"{s3.base}/manifests/once.json?X-Amz-Signature=del"
    s3.store.objects["/manifests/once.json"] = json.dumps(document).encode()

    # When the runner has read it
    proc = start_runner(runner_env(url))
    assert proc.wait(timeout=30) == 0

    # Then it is gone: the URL in the task's overrides leads nowhere, and the run still ran
    assert s3.store.deletes == ["/manifests/once.json"]
    second = start_runner(runner_env(url))
    _, stderr = second.communicate(timeout=10)
    assert second.returncode == 1
    assert b"manifest_unreadable" in stderr
    assert s3.report("once", "finished")["status"] == "SUCCEEDED"


def test_unreadable_manifest_exits_non_zero(s3: FakeS3) -> None:
    proc = start_runner(runner_env(f"{s3.base}/no-such-manifest.json"))
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert b"manifest_unreadable" in stderr


def test_missing_manifest_variable_exits_non_zero() -> None:
    proc = start_runner(runner_env(None))
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert b"manifest_missing" in stderr


def test_sigterm_stops_scripts_and_reports_them(s3: FakeS3) -> None:
    later = int(time.time()) + 60
    url = s3.manifest(
        [
            s3.run("long", "import time\nprint('working', flush=True)\ntime.sleep(30)\n"),
            s3.run("waiting", "print('never')\n", not_before=later),
        ]
    )
    proc = start_runner(runner_env(url))
    deadline = time.monotonic() + 10
    while "/reports/long/started.json" not in s3.store.puts:
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()
    long = s3.report("long", "finished")
    assert long["status"] == "FAILED"
    assert long["exit_code"] == -signal.SIGTERM
    assert "SIGTERM" in long["error"]
    assert "working" in long["output_tail"]
    waiting = s3.report("waiting", "finished")
    assert waiting["status"] == "FAILED"
    assert waiting["started_at"] is None
    assert "before the script started" in waiting["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the user switch only happens when root")
def test_required_user_switch_fails_closed(s3: FakeS3) -> None:
    url = s3.manifest([s3.run("closed", "print('must not run')\n")])
    env = runner_env(url, RUNNER_RUN_AS="", RUNNER_REQUIRE_USER_SWITCH="1")
    proc = start_runner(env)
    proc.communicate(timeout=10)
    assert proc.returncode == 0
    finished = s3.report("closed", "finished")
    assert finished["status"] == "FAILED"
    assert "cannot drop privileges" in finished["error"]
    assert "/reports/closed/started.json" not in s3.store.puts


# --------------------------------------------------------------------------- pieces, in process


def test_output_sink_caps_and_keeps_the_tail(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as handle:
        sink = OutputSink(handle=handle, cap=10)
        sink.feed(b"0123456")
        sink.feed(b"789abcdef")
        sink.feed(b"z" * 5000)
    assert (tmp_path / "out").read_bytes() == b"0123456789"
    assert sink.total == 5016
    assert sink.truncated
    assert bytes(sink.tail) == (b"0123456789abcdef" + b"z" * 5000)[-4096:]


def test_manifest_parsing_rejects_bad_entries() -> None:
    good = {
        "job_id": "j",
        "run_key": "1-j",
        "attempt": 2,
        "scheduled_at": 100,
        "not_before": 160,
        "timeout_seconds": 5,
        "parameters": {},
        "script_url": "https://s/x",
        "started_url": "https://s/a",
        "finished_url": "https://s/b",
        "output_url": "https://s/c",
    }
    body = json.dumps(
        {
            "version": 1,
            "pack_id": "p",
            "runs": [
                good,
                {**good, "timeout_seconds": "5"},
                {**good, "attempt": True},
                "junk",
            ],
        }
    ).encode()
    manifest = parse_manifest(body)
    assert [run.not_before for run in manifest.runs] == [160]
    assert len(manifest.invalid) == 3
    assert "https://s/x" not in repr(manifest.runs[0])
    with pytest.raises(ValueError, match="version 1"):
        parse_manifest(b'{"version": 2, "runs": []}')


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert iso_ms(1_795_795_200.0125) == "2026-11-27T16:00:00.012Z"
    assert iso_seconds(1_795_795_200) == "2026-11-27T16:00:00Z"


def test_put_refuses_file_urls() -> None:
    with pytest.raises(TransferError, match="scheme"):
        http_put("file:///etc/passwd", b"x", "text/plain")


def test_an_attempt_claimed_by_another_task_is_not_run_twice(s3: FakeS3) -> None:
    # Given two tasks dispatched for the same pack (an executor died after RunTask): the first
    # holds runs a and b, the second a and c (c was not in the first dispatch); all three share
    # the pack's claim of their second, each has a claim of its own
    pack_claim = f"{s3.base}/claims/packs/p/1.json?X-Amz-Signature=abc"

    def entry(name: str) -> dict[str, Any]:
        return s3.run(
            name,
            f"print('{name} ran')\n",
            claim_url=pack_claim,
            claim_read_url=pack_claim,
            run_claim_url=f"{s3.base}/claims/{name}/1.json?X-Amz-Signature=abc",
        )

    a, b, c = entry("a"), entry("b"), entry("c")

    # When both runners start, one after the other
    first = start_runner(runner_env(s3.manifest([a, b], "/m1.json")))
    assert first.wait(timeout=30) == 0
    after_first = dict(s3.store.puts)
    second = start_runner(runner_env(s3.manifest([a, c], "/m2.json")))
    assert second.wait(timeout=30) == 0

    # Then the first took the pack's claim with one PUT, naming a and b, and ran both
    assert json.loads(after_first["/claims/packs/p/1.json"])["runs"] == [
        f"job-a/{a['run_key']}/1",
        f"job-b/{b['run_key']}/1",
    ]
    assert "/claims/a/1.json" not in after_first
    assert "/claims/b/1.json" not in after_first
    assert s3.report("a", "finished")["status"] == "SUCCEEDED"
    assert s3.report("b", "finished")["status"] == "SUCCEEDED"
    # And the second ran only c, which the first did not hold, under c's own claim; a not again
    assert s3.report("c", "finished")["status"] == "SUCCEEDED"
    assert "/claims/c/1.json" in s3.store.puts
    assert "/claims/a/1.json" not in s3.store.puts
    assert s3.store.puts["/reports/a/finished.json"] == after_first["/reports/a/finished.json"]
    stderr = second.stderr.read() if second.stderr else b""
    assert stderr.count(b"run_claimed_elsewhere") == 1, stderr


def test_a_claim_whose_answer_was_lost_is_still_ours(s3: FakeS3) -> None:
    # Given a pack claim that S3 stores but whose answer is lost (the runner retries the PUT)
    claim = f"{s3.base}/claims/packs/p/2.json?X-Amz-Signature=abc"
    s3.store.lost_answers["/claims/packs/p/2.json"] = 1
    entry = s3.run("mine", "print('ran')\n", claim_url=claim, claim_read_url=claim)

    # When the runner runs it
    proc = start_runner(runner_env(s3.manifest([entry])))
    assert proc.wait(timeout=30) == 0

    # Then the retried PUT's 412 is recognised as its own claim (its token), and the run runs
    assert s3.report("mine", "finished")["status"] == "SUCCEEDED"


def test_a_short_run_reports_no_start_and_a_long_one_does(s3: FakeS3) -> None:
    # Given a pack whose runs report a start only when still running 1 s after it
    url = s3.manifest(
        [
            s3.run("short", "print('quick')\n"),
            s3.run("long", "import time\ntime.sleep(2.5)\nprint('slow')\n"),
        ],
        started_report_seconds=1,
    )

    # When it runs
    proc = start_runner(runner_env(url))
    assert proc.wait(timeout=30) == 0

    # Then the short run went straight to its finished report, which carries its start
    assert "/reports/short/started.json" not in s3.store.puts
    short = s3.report("short", "finished")
    assert short["status"] == "SUCCEEDED"
    assert short["started_at"] is not None
    assert short["start_lag_ms"] is not None
    # And the long one reported its start (once past the interval) and then its end
    started, finished = s3.report("long", "started"), s3.report("long", "finished")
    assert started["started_at"] == finished["started_at"]
    assert finished["status"] == "SUCCEEDED"


# ------------------------------------------------------------------- batched finished reports


def batched_pack(s3: FakeS3, scripts: dict[str, str], path: str = "/batched.json") -> str:
    """A manifest whose runs share one pack claim, with a batch key per run."""
    claim = f"{s3.base}/claims/packs/p/3.json?X-Amz-Signature=abc"
    runs = [
        s3.run(name, source, claim_url=claim, claim_read_url=claim, batch="p/3")
        for name, source in scripts.items()
    ]
    batches = {"p/3": [f"{s3.base}/reports/packs/p/3/{i:03d}.json?sig" for i in range(len(runs))]}
    return s3.manifest(runs, path, batches=batches)


def batch(s3: FakeS3, index: int) -> dict[str, dict[str, Any]]:
    """The reports of the claim's `index`-th batch, by job id."""
    body = s3.store.puts[f"/reports/packs/p/3/{index:03d}.json"]
    return {report["job_id"]: report for report in json.loads(body)["reports"]}


def test_runs_of_a_pack_claim_that_end_together_report_in_one_batch(s3: FakeS3) -> None:
    # Given three runs of one pack claim: two end at once, one 4 s later (past the 2 s linger)
    url = batched_pack(
        s3,
        {
            "a": "print('a')\n",
            "b": "import sys\nprint('b')\nsys.exit(3)\n",
            "slow": "import time\ntime.sleep(4)\nprint('slow')\n",
        },
    )

    # When the runner runs them
    proc = start_runner(runner_env(url))
    assert proc.wait(timeout=30) == 0

    # Then a and b's ends travel in the claim's first batch, the slow one's in the second
    first, second = batch(s3, 0), batch(s3, 1)
    assert sorted(first) == ["job-a", "job-b"]
    assert (first["job-a"]["status"], first["job-b"]["status"]) == ("SUCCEEDED", "FAILED")
    assert first["job-b"]["exit_code"] == 3
    assert first["job-a"]["output_tail"] == "a\n"
    assert first["job-a"]["run_key"].endswith("-job-a")
    assert list(second) == ["job-slow"]
    assert second["job-slow"]["status"] == "SUCCEEDED"
    # And no run PUT a finished report of its own
    assert not [path for path in s3.store.puts if path.endswith("/finished.json")]


def test_a_batch_key_another_task_took_is_passed_over(s3: FakeS3) -> None:
    # Given the claim's first batch key already holds another task's batch
    s3.store.puts["/reports/packs/p/3/000.json"] = b'{"reports": []}'
    url = batched_pack(s3, {"a": "print('a')\n", "b": "print('b')\n"})

    # When the runner runs its two runs
    proc = start_runner(runner_env(url))
    assert proc.wait(timeout=30) == 0

    # Then the other batch is left whole, and both ends travel in the next key
    assert s3.store.puts["/reports/packs/p/3/000.json"] == b'{"reports": []}'
    assert sorted(batch(s3, 1)) == ["job-a", "job-b"]


def test_a_batch_that_cannot_be_put_falls_back_to_each_runs_own_report(s3: FakeS3) -> None:
    # Given a batch key that answers 500 to every try
    s3.store.failures["/reports/packs/p/3/000.json"] = 100
    url = batched_pack(s3, {"a": "print('a')\n", "b": "print('b')\n"})

    # When the runner runs the claim's runs
    proc = start_runner(runner_env(url))
    assert proc.wait(timeout=30) == 0

    # Then each run's end went to its own finished report instead, and no batch was stored
    assert s3.report("a", "finished")["status"] == "SUCCEEDED"
    assert s3.report("b", "finished")["status"] == "SUCCEEDED"
    assert not [path for path in s3.store.puts if path.startswith("/reports/packs/")]


# --------------------------------------------------------------------------- cancel and overlap


def lock_urls(s3: FakeS3, job: str, name: str) -> dict[str, str]:
    """The job's lock URLs as the executor presigns them (the fake checks no signature)."""
    lock, slot = f"{s3.base}/locks/{job}.json", f"{s3.base}/locks/{job}.waiting.json"
    return {
        "take": f"{lock}?sig",
        "read": f"{lock}?sig",
        "release": f"{lock}?sig",
        "wait": f"{slot}?sig",
        "read_wait": f"{slot}?sig",
        "release_wait": f"{slot}?sig",
        "waiting_report": f"{s3.base}/reports/{name}/waiting.json?sig",
    }


def hold(s3: FakeS3, path: str, run_key: str, until: float) -> None:
    s3.store.puts[path] = json.dumps({"run_key": run_key, "attempt": 1, "until": until}).encode()


@dataclass
class OverlapResult:
    s3: FakeS3
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def overlap_pack() -> Iterator[OverlapResult]:
    """One runner, the cases running side by side: a run cancelled while its script runs, one
    cancelled before it started, and one case per overlap policy, against locks the test holds
    and lets go of."""
    s3 = FakeS3()
    later = time.time() + 600

    def run(name: str, source: str, overlap: str = "ALLOW", **extra: Any) -> dict[str, Any]:
        entry = s3.run(
            name,
            source,
            cancel_url=f"{s3.base}/cancels/{name}.json?sig",
            claim_url=f"{s3.base}/claims/{name}.json?sig",
            overlap=overlap,
            **extra,
        )
        if overlap != "ALLOW":
            entry["lock"] = lock_urls(s3, f"job-{name}", name)
        return entry

    slow = "import time\nprint('working', flush=True)\ntime.sleep(30)\n"
    runs = [
        run("cancelled", slow),
        run("cancelled_unstarted", "print('must not run')\n"),
        run("forbid", "print('must not run')\n", "FORBID"),
        run("forbid_free", "print('ran alone')\n", "FORBID"),
        run("buffered", "print('ran after the other')\n", "BUFFER_ONE"),
        run("second_waiter", "print('must not run')\n", "BUFFER_ONE"),
        run("replace", "print('replaced the others')\n", "REPLACE"),
        run("stale", "print('ran past a dead lock')\n", "FORBID"),
    ]
    # The cancel was recorded before the run's second: it must never start the script
    s3.store.puts["/cancels/cancelled_unstarted.json"] = b'{"reason": "cancelled by its owner"}'
    # Live holders of the locks of forbid, buffered, second_waiter and replace; a dead one of
    # stale; a waiter already in second_waiter's and replace's slots
    for name in ("forbid", "buffered", "second_waiter", "replace"):
        hold(s3, f"/locks/job-{name}.json", f"1-job-{name}", later)
    hold(s3, "/locks/job-stale.json", "0-job-stale", time.time() - 1)
    hold(s3, "/locks/job-second_waiter.waiting.json", "2-job-second_waiter", later)
    hold(s3, "/locks/job-replace.waiting.json", "2-job-replace", later)

    def meanwhile() -> None:
        time.sleep(1.5)  # the slow script is running: cancel it
        s3.store.puts["/cancels/cancelled.json"] = b'{"reason": "cancelled by its owner"}'
        time.sleep(2.0)  # the previous runs end: their locks go
        for name in ("buffered", "replace"):
            s3.store.puts.pop(f"/locks/job-{name}.json", None)

    helper = threading.Thread(target=meanwhile, daemon=True)
    helper.start()
    env = runner_env(
        s3.manifest(runs), RUNNER_KILL_GRACE_SECONDS="1", RUNNER_CANCEL_POLL_SECONDS="1"
    )
    proc = start_runner(env)
    _, stderr = proc.communicate(timeout=40)
    helper.join()
    yield OverlapResult(s3=s3, returncode=proc.returncode, stderr=stderr.decode())
    s3.close()


def test_the_cancel_objects_are_read_at_the_second_only_under_their_claims_mark(
    s3: FakeS3,
) -> None:
    # Given two pack claims of two runs each: a cancel marked the first claim (one of its runs
    # is cancelled), none marked the second, whose runs have cancel objects no cancel wrote
    def run(name: str, claim: str) -> dict[str, Any]:
        return s3.run(
            name,
            f"print('{name} ran')\n",
            cancel_url=f"{s3.base}/cancels/{name}.json?sig",
            pack_cancel_url=f"{s3.base}/cancels/packs/{claim}.json?sig",
        )

    runs = [run("kept", "p/1"), run("cancelled", "p/1"), run("quiet", "p/2"), run("calm", "p/2")]
    s3.store.puts["/cancels/packs/p/1.json"] = b"{}"
    s3.store.puts["/cancels/cancelled.json"] = b'{"reason": "cancelled by its owner"}'

    # When the runner runs them
    proc = start_runner(runner_env(s3.manifest(runs)))
    assert proc.wait(timeout=30) == 0

    # Then the cancelled run never started and the others ran
    assert "/reports/cancelled/finished.json" not in s3.store.puts
    assert [s3.report(name, "finished")["status"] for name in ("kept", "quiet", "calm")] == [
        "SUCCEEDED"
    ] * 3
    # And each claim's mark was read once; the runs' own objects only under the marked claim
    gets = s3.store.gets
    assert (gets.count("/cancels/packs/p/1.json"), gets.count("/cancels/packs/p/2.json")) == (1, 1)
    assert sorted(path for path in gets if path.count("/") == 2 and "cancels" in path) == [
        "/cancels/cancelled.json",
        "/cancels/kept.json",
    ]


def test_a_cancelled_script_is_stopped_and_reported_cancelled(overlap_pack: OverlapResult) -> None:
    finished = overlap_pack.s3.report("cancelled", "finished")
    assert finished["status"] == "CANCELLED"
    assert finished["exit_code"] == -signal.SIGTERM
    assert finished["error"].startswith("cancelled by its owner")
    assert "working" in finished["output_tail"]
    assert finished["duration_ms"] < 6000  # cancelled at ~1.5 s, polled each 1 s
    assert overlap_pack.returncode == 0, overlap_pack.stderr


def test_a_run_cancelled_before_it_started_never_starts(overlap_pack: OverlapResult) -> None:
    puts = overlap_pack.s3.store.puts
    assert "/reports/cancelled_unstarted/started.json" not in puts
    assert "/reports/cancelled_unstarted/finished.json" not in puts


def test_forbid_skips_a_run_while_the_previous_one_holds_the_lock(
    overlap_pack: OverlapResult,
) -> None:
    finished = overlap_pack.s3.report("forbid", "finished")
    assert finished["status"] == "SKIPPED"
    assert "1-job-forbid" in finished["error"]
    assert "/reports/forbid/started.json" not in overlap_pack.s3.store.puts
    # The holder's lock is left alone
    assert "/locks/job-forbid.json" in overlap_pack.s3.store.puts


def test_a_forbid_run_with_the_lock_free_runs_and_releases_it(overlap_pack: OverlapResult) -> None:
    assert overlap_pack.s3.report("forbid_free", "finished")["status"] == "SUCCEEDED"
    assert "/locks/job-forbid_free.json" in overlap_pack.s3.store.deletes
    assert "/locks/job-forbid_free.json" not in overlap_pack.s3.store.puts


def test_buffer_one_waits_for_the_previous_run_then_runs(overlap_pack: OverlapResult) -> None:
    s3 = overlap_pack.s3
    waiting = s3.report("buffered", "waiting")
    assert waiting["waiting_for"] == "1-job-buffered"
    assert waiting["replaces"] == []
    finished = s3.report("buffered", "finished")
    assert finished["status"] == "SUCCEEDED"
    assert finished["start_lag_ms"] >= 3000  # it started once the lock went, at ~3.5 s
    assert "/locks/job-buffered.waiting.json" not in s3.store.puts  # its slot is freed


def test_buffer_one_skips_a_run_when_one_already_waits(overlap_pack: OverlapResult) -> None:
    finished = overlap_pack.s3.report("second_waiter", "finished")
    assert finished["status"] == "SKIPPED"
    assert "2-job-second_waiter" in finished["error"]
    assert "BUFFER_ONE" in finished["error"]


def test_replace_names_the_runs_to_cancel_and_starts_once_the_lock_is_free(
    overlap_pack: OverlapResult,
) -> None:
    s3 = overlap_pack.s3
    waiting = s3.report("replace", "waiting")
    assert waiting["replaces"] == ["1-job-replace", "2-job-replace"]
    assert s3.report("replace", "finished")["status"] == "SUCCEEDED"


def test_a_stale_lock_is_removed_and_the_run_goes_on(overlap_pack: OverlapResult) -> None:
    assert overlap_pack.s3.report("stale", "finished")["status"] == "SUCCEEDED"


# --------------------------------------------------------------------------- runner limits
# A pack of hostile scripts, each in its own uid; the task's memory (RUNNER_TASK_MEMORY_MB) is
# shared out among the pack's runs: (1264 - 64 reserved) / 6 runs = 200 MiB each.

LIMIT_RUNS = 6
TASK_MEMORY_MB = 64 + LIMIT_RUNS * 200
SHARE = 200 * 1024 * 1024
FILE_LIMIT = 8 * 1024 * 1024

WHO = (
    "import os\n"
    "nnp = [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0]\n"
    "print(f'uid={os.getuid()} nnp={nnp}', flush=True)\n"
)

FORK_BOMB = (
    WHO
    + """
import os, time
me = os.getpid()
told = False
while True:
    try:
        os.fork()
    except OSError:
        if os.getpid() == me and not told:
            print("fork refused: process limit reached", flush=True)
            told = True
        time.sleep(0.01)
"""
)

WRITE_5GB = (
    WHO
    + """
chunk = b"x" * (1 << 20)
with open("big.bin", "wb", buffering=0) as handle:
    for _ in range(5 * 1024):
        handle.write(chunk)
print("wrote 5 GB")
"""
)

WRITE_5GB_COUNTING = (
    WHO
    + """
import errno, os
fd = os.open(os.path.join(os.environ["TMPDIR"], "big.bin"), os.O_WRONLY | os.O_CREAT, 0o600)
chunk, written = b"x" * (1 << 20), 0
try:
    while written < 5 * 1024 ** 3:
        written += os.write(fd, chunk)
except OSError as exc:
    print("stopped:", errno.errorcode[exc.errno], flush=True)
print(f"written={written}", flush=True)
"""
)

ALLOCATE = (
    WHO
    + """
import resource
print(f"as_limit={resource.getrlimit(resource.RLIMIT_AS)[0]}", flush=True)
try:
    hog = b"x" * (400 * 1024 * 1024)
    print("allocated 400 MiB")
except MemoryError:
    print("MemoryError", flush=True)
"""
)

ALLOCATE_IN_CHILDREN = (
    WHO
    + """
import os, time
for _ in range(3):  # 3 x 120 MiB: each process within its limit, the run over its share
    if os.fork() == 0:
        hog = b"x" * (120 * 1024 * 1024)
        time.sleep(60)
        os._exit(0)
time.sleep(60)
"""
)

SETSID_DAEMON = (
    WHO
    + """
import os, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()  # leaves the run's process group and session
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        while True:
            time.sleep(1)
    os._exit(0)
os.close(w)
print(f"daemon={os.read(r, 32).decode()}", flush=True)
"""
)


def _field(finished: dict[str, Any], name: str) -> int:
    for token in finished["output_tail"].split():
        if token.startswith(f"{name}="):
            return int(token.split("=", 1)[1])
    raise AssertionError(f"no {name}= in {finished['output_tail']!r}")


def _alive(pid: int, uid: int | None = None) -> bool:
    """Is the process there and not a zombie (with that real uid, when given)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields["State"].strip().startswith("Z"):
        return False
    return uid is None or int(fields["Uid"].split()[0]) == uid


def _processes_of(uid: int) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _alive(int(p.name), uid)
    ]


@dataclass
class LimitsResult:
    s3: FakeS3
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def limits_pack() -> Iterator[LimitsResult]:
    if os.geteuid() != 0:
        pytest.skip("per-run uids need the runner to be root (as in its container)")
    server = FakeS3()
    runs = [
        server.run("forkbomb", FORK_BOMB, timeout_seconds=2),
        server.run("write5g", WRITE_5GB),
        server.run("write5g_counting", WRITE_5GB_COUNTING),
        server.run("allocate", ALLOCATE),
        server.run("allocate_children", ALLOCATE_IN_CHILDREN, timeout_seconds=20),
        server.run("daemon", SETSID_DAEMON),
    ]
    assert len(runs) == LIMIT_RUNS
    env = runner_env(
        server.manifest(runs),
        RUNNER_KILL_GRACE_SECONDS="1",
        RUNNER_TASK_MEMORY_MB=str(TASK_MEMORY_MB),
        RUNNER_FILE_SIZE_LIMIT_MB=str(FILE_LIMIT // (1024 * 1024)),
        RUNNER_NPROC_LIMIT=str(16 * LIMIT_RUNS),
    )
    proc = start_runner(env)
    _, stderr = proc.communicate(timeout=60)
    yield LimitsResult(s3=server, returncode=proc.returncode, stderr=stderr.decode())
    server.close()


def test_each_run_has_a_uid_of_its_own_and_its_share_of_the_task(limits_pack: LimitsResult) -> None:
    assert limits_pack.returncode == 0, limits_pack.stderr
    started = next(
        json.loads(line) for line in limits_pack.stderr.splitlines() if '"runner_started"' in line
    )
    assert started["run_uids"] is True
    assert started["limits"] == {
        "memory_mb": 200,
        "file_size_mb": 8,
        "nproc_per_run": 16,
        "nofile": 1024,
    }
    names = ["forkbomb", "write5g", "write5g_counting", "allocate", "allocate_children", "daemon"]
    uids = {_field(limits_pack.s3.report(name, "finished"), "uid") for name in names}
    assert len(uids) == LIMIT_RUNS
    # no setuid binary can hand a script another uid (or root) back
    assert {_field(limits_pack.s3.report(name, "finished"), "nnp") for name in names} == {1}
    assert all(uid >= 100_000 for uid in uids)


def test_a_fork_bomb_hits_its_process_limit_and_dies_with_its_run(
    limits_pack: LimitsResult,
) -> None:
    finished = limits_pack.s3.report("forkbomb", "finished")
    assert finished["status"] == "TIMED_OUT"
    assert "process limit reached" in finished["output_tail"]
    assert finished["duration_ms"] < 8000
    assert _processes_of(_field(finished, "uid")) == []


def test_a_5_gb_write_stops_at_the_file_size_limit(limits_pack: LimitsResult) -> None:
    # Python ignores SIGXFSZ: the write past the limit raises (EFBIG), and the script fails
    failed = limits_pack.s3.report("write5g", "finished")
    assert failed["status"] == "FAILED"
    assert failed["exit_code"] == 1
    assert "File too large" in failed["output_tail"]
    assert "wrote 5 GB" not in failed["output_tail"]
    counted = limits_pack.s3.report("write5g_counting", "finished")
    assert "stopped: EFBIG" in counted["output_tail"]
    assert _field(counted, "written") == FILE_LIMIT


def test_an_allocation_beyond_the_runs_share_fails(limits_pack: LimitsResult) -> None:
    finished = limits_pack.s3.report("allocate", "finished")
    assert _field(finished, "as_limit") == SHARE
    assert "MemoryError" in finished["output_tail"]
    assert "allocated" not in finished["output_tail"]


def test_a_runs_processes_together_are_held_to_its_share(limits_pack: LimitsResult) -> None:
    finished = limits_pack.s3.report("allocate_children", "finished")
    assert finished["status"] == "FAILED"
    assert "memory limit" in finished["error"]
    assert finished["duration_ms"] < 10_000
    assert _processes_of(_field(finished, "uid")) == []


def test_a_setsid_daemon_does_not_outlive_its_run(limits_pack: LimitsResult) -> None:
    finished = limits_pack.s3.report("daemon", "finished")
    assert finished["status"] == "SUCCEEDED"
    daemon, uid = _field(finished, "daemon"), _field(finished, "uid")
    deadline = time.monotonic() + 3  # an orphan killed here is reaped by the host's init
    while _alive(daemon, uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(daemon, uid)
    assert _processes_of(uid) == []


def test_scripts_get_a_private_temp_directory(s3: FakeS3) -> None:
    script = (
        "import os, stat, tempfile\n"
        "d = tempfile.gettempdir()\n"
        "st = os.stat(d)\n"
        "mode = oct(stat.S_IMODE(st.st_mode))\n"
        "print(d == os.environ['TMPDIR'], mode, st.st_uid == os.getuid())\n"
    )
    url = s3.manifest([s3.run("tmp_a", script), s3.run("tmp_b", script)])
    proc = start_runner(runner_env(url))
    proc.communicate(timeout=30)
    for name in ("tmp_a", "tmp_b"):
        assert "True 0o700 True" in s3.report(name, "finished")["output_tail"]
