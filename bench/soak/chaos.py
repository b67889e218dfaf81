"""The soak's stack and the faults injected from outside it: SIGKILL and restart of the stack
process (the watcher, executor and pollers are threads of that one process locally), SIGKILL or
SIGSTOP of runner tasks, an S3 notification dropped or an SQS message delivered twice (through
SQS itself), and a watcher tick skipped (devstack's `watcher.paused` file). Each fault carried
out is one event in `events`, with what it hit, for the checker and the plot."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.common import admin_client, free_port
from bench.soak.faulty_stack import INJECTION_LOG_ENV, WINDOWS_ENV
from bench.soak.plan import Fault, Plan
from devstack import launcher
from devstack.pipeline import WATCHER_PAUSED
from devstack.template import ROOT
from scheduler.keys import parse_run_refs

DISPATCH_QUEUE = "local-DispatchQueue.fifo"
REPORTS_QUEUE = "local-ReportsQueue"
RUNNER = "runner/entrypoint.py"
STARTUP_TIMEOUT = 90


@dataclass
class SoakStack:
    """The local stack under `bench.soak.faulty_stack`, attached to a moto server that outlives
    its kills; restarted on the same port and state directory (same keys, task logs)."""

    state_dir: Path
    aws_endpoint: str
    options: list[str]
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def windows_file(self) -> Path:
        return self.state_dir / "soak-windows.json"

    @property
    def injection_log(self) -> Path:
        return self.state_dir / "soak-injections.jsonl"

    def client(self, service: str) -> Any:
        """A client as the stack's admin."""
        return admin_client(service, self.state_dir, self.aws_endpoint)

    def start(self) -> None:
        command = [sys.executable, "-m", "bench.soak.faulty_stack", "run"]
        command += ["--api-port", str(self.api_port), "--state-dir", str(self.state_dir)]
        command += ["--aws-endpoint", self.aws_endpoint, *self.options]
        environment = launcher.environment() | {
            "PYTHONPATH": os.pathsep.join([launcher.PYTHONPATH, str(ROOT)]),
            WINDOWS_ENV: str(self.windows_file),
            INJECTION_LOG_ENV: str(self.injection_log),
        }
        with (self.state_dir / "devstack.log").open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killed as a group; the runners have sessions of their own
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited; see {self.state_dir / 'devstack.log'}")
            with contextlib.suppress(requests.RequestException, OSError, ValueError, KeyError):
                answered = requests.get(f"{self.url}/openapi.json", timeout=2).ok
                state = json.loads((self.state_dir / "stack.json").read_text())
                if answered and state["pid"] == self.process.pid:
                    return
            time.sleep(0.2)
        raise RuntimeError("the stack did not answer in time")

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def runners() -> list[tuple[int, list[tuple[str, str, int]]]]:
    """(pid, run refs) of every runner task on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if RUNNER not in command:
            continue
        refs = parse_run_refs(_environ(int(entry.name)).get("RUN_REFS", ""))
        if refs:
            found.append((int(entry.name), refs))
    return sorted(found)


def _second_of(run_key: str) -> int:
    return int(run_key.split("-", 1)[0])


class Chaos:
    """Carries out the plan's faults on their seconds, on a thread of its own."""

    def __init__(self, plan: Plan, stack: SoakStack, started: float) -> None:
        self.plan = plan
        self.stack = stack
        self.started = started
        self.events: list[dict[str, Any]] = []
        self.down: list[tuple[float, float]] = []  # stack down (killed) from, to
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one fault on the stack process at a time
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        sqs = stack.client("sqs")
        self._queues = {
            "dispatch": sqs.get_queue_url(QueueName=DISPATCH_QUEUE)["QueueUrl"],
            "reports": sqs.get_queue_url(QueueName=REPORTS_QUEUE)["QueueUrl"],
        }

    def start(self) -> None:
        self.stack.windows_file.write_text(
            json.dumps({"started": self.started, "windows": self.plan.aws_windows()})
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def record(self, fault: Fault, **what: Any) -> None:
        event = {"at": time.time(), "planned_at": fault.at, "kind": fault.kind, **what}
        self.events.append(event)

    def _run(self) -> None:
        for fault in self.plan.faults:
            when = self.started + fault.at
            if self._stop.wait(max(0.0, when - time.time())):
                return
            if fault.kind == "aws_error":  # carried out inside the stack by its hook
                self.record(fault, **fault.params)
                continue
            threading.Thread(target=self._carry_out, args=(fault,), daemon=True).start()

    def _carry_out(self, fault: Fault) -> None:
        try:
            getattr(self, fault.kind)(fault)
        except Exception as error:  # a fault that could not be carried out is recorded so
            self.record(fault, failed=repr(error))

    # -- the stack process --------------------------------------------------------------

    def _next_tick(self, after: float) -> float:
        tick = after - after % 60 + self.plan.tick_second
        return tick if tick > after else tick + 60

    def _kill_and_restart(self, fault: Fault, at: float) -> None:
        time.sleep(max(0.0, at - time.time()))
        with self._lock:
            killed = time.time()
            self.stack.kill()
            time.sleep(fault.params["restart_after_s"])
            self.stack.start()
            self.down.append((killed, time.time()))
            self.record(fault, killed_at=killed, back_at=time.time())

    def kill_watcher(self, fault: Fault) -> None:
        self._kill_and_restart(fault, self._next_tick(time.time()) + fault.params["offset_s"])

    def kill_executor(self, fault: Fault) -> None:
        # The executor dispatches what a tick queued in the seconds after it.
        at = self._next_tick(time.time()) + 2 + 2 * fault.params["offset_s"]
        self._kill_and_restart(fault, at)

    def kill_pollers(self, fault: Fault) -> None:
        # Runs end, and their reports arrive, in the seconds after each minute.
        now = time.time()
        self._kill_and_restart(fault, now - now % 60 + 60 + fault.params["offset_s"])

    def skip_tick(self, fault: Fault) -> None:
        tick = self._next_tick(time.time() + 3)
        paused = self.stack.state_dir / WATCHER_PAUSED
        time.sleep(max(0.0, tick - 2 - time.time()))
        paused.touch()
        time.sleep(max(0.0, tick + 3 - time.time()))
        paused.unlink(missing_ok=True)
        self.record(fault, tick_at=tick)

    # -- runner tasks ---------------------------------------------------------------------

    def kill_runner(self, fault: Fault) -> None:
        # A runner whose script runs (its run's second has passed), else any.
        now = time.time()
        candidates = runners()
        running = [r for r in candidates if min(_second_of(k) for _, k, _ in r[1]) < now]
        chosen = running or candidates
        if not chosen:
            self.record(fault, target=None)
            return
        pid, refs = chosen[int(fault.params["pick"] * len(chosen))]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.record(fault, pid=pid, runs=[[j, k, a] for j, k, a in refs])

    def late_runner(self, fault: Fault) -> None:
        """Freeze a runner whose first run is due in the next seconds, past that second."""
        deadline = time.time() + 90
        while time.time() < deadline and not self._stop.is_set():
            now = time.time()
            soon = [r for r in runners() if 0.5 < min(_second_of(k) for _, k, _ in r[1]) - now < 8]
            if soon:
                pid, refs = soon[int(fault.params["pick"] * len(soon))]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                time.sleep(fault.params["late_s"])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                self.record(fault, pid=pid, runs=[[j, k, a] for j, k, a in refs], stopped_at=now)
                return
            time.sleep(0.5)
        self.record(fault, target=None)

    # -- SQS ------------------------------------------------------------------------------

    @property
    def _sqs(self) -> Any:
        # Built per fault: a restarted stack has made new admin keys.
        return self.stack.client("sqs")

    def _receive_one(self, queue: str) -> dict[str, Any] | None:
        """A message of the queue (for reports, one that carries S3 records), taken for 30 s."""
        deadline = time.time() + 90
        while time.time() < deadline and not self._stop.is_set():
            messages = self._sqs.receive_message(
                QueueUrl=self._queues[queue],
                MaxNumberOfMessages=1,
                WaitTimeSeconds=1,
                VisibilityTimeout=30,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                continue
            message: dict[str, Any] = messages[0]
            if queue == "reports" and not _s3_keys(message["Body"]):
                self._sqs.change_message_visibility(
                    QueueUrl=self._queues[queue],
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
                continue
            return message
        return None

    def drop_notification(self, fault: Fault) -> None:
        message = self._receive_one("reports")
        if message is None:
            self.record(fault, target=None)
            return
        self._sqs.delete_message(
            QueueUrl=self._queues["reports"], ReceiptHandle=message["ReceiptHandle"]
        )
        self.record(fault, objects=_s3_keys(message["Body"]))

    def duplicate_delivery(self, fault: Fault) -> None:
        queue = fault.params["queue"]
        message = self._receive_one(queue)
        if message is None:
            self.record(fault, target=None)
            return
        url = self._queues[queue]
        copy: dict[str, Any] = {"QueueUrl": url, "MessageBody": message["Body"]}
        group = message.get("Attributes", {}).get("MessageGroupId")
        if group is not None:
            copy |= {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
        self._sqs.send_message(**copy)
        self._sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
        if queue == "reports":
            self.record(fault, queue=queue, objects=_s3_keys(message["Body"]))
        else:
            self.record(fault, queue=queue, runs=_dispatched(message["Body"]))


def _s3_keys(body: str) -> list[str]:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        records = json.loads(body).get("Records", [])
        return [urllib.parse.unquote(r["s3"]["object"]["key"]) for r in records]
    return []


def _dispatched(body: str) -> list[str]:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return [str(run["key"]) for run in json.loads(body)["runs"]]
    return []
