"""API load: an open-loop load generator against the local stack (`python -m devstack run`),
over HTTP, with real bearer tokens for many users.

Open loop: request i is due at start + i / rate, whatever happened to the earlier ones, and its
latency is measured from that intended send time (so a server that stalls is charged for every
request it kept waiting: no coordinated omission). Why a small asyncio + aiohttp generator rather
than a packaged tool: see docs/performance.md ("How the API is loaded").

Mix: 50 % GET /jobs/{id}, 30 % GET /jobs, 20 % POST /jobs (with an Idempotency-Key), each from a
random user among many, each user with its own token.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import plots
from bench.common import (
    Mode,
    fmt,
    free_port,
    moto_server,
    say,
    summary,
    table,
    write_result,
)
from devstack import auth, launcher

TIMEOUT_SECONDS = 10.0  # a request still unanswered then counts as an error (at this latency)
P99_TARGET_MS = 100.0
MAX_CONNECTIONS = 256
SCRIPT = "import json, os\nprint(json.loads(os.environ['JOB_PARAMETERS']))\n"
MIX = {"get": 0.5, "list": 0.3, "create": 0.2}
GETS_ONLY = {"get": 1.0, "list": 0.0, "create": 0.0}


@dataclass
class Sample:
    operation: str
    intended: float  # seconds from the start of the schedule
    latency_ms: float  # from the intended send time to the end of the response
    send_lag_ms: float  # how late the generator actually sent it
    status: int | None  # None: no answer (timeout, connection error)


@dataclass
class StepResult:
    offered_rate: float
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    jobs_before: int = 0

    def figures(self) -> dict[str, Any]:
        latencies = [s.latency_ms for s in self.samples]
        ok = [s for s in self.samples if s.status is not None and s.status < 300]
        errors = Counter(
            "timeout" if s.status is None else str(s.status) for s in self.samples if s not in ok
        )
        last = max((s.intended + s.latency_ms / 1000 for s in self.samples), default=0.0)
        by_operation = {
            op: summary([s.latency_ms for s in self.samples if s.operation == op])
            for op in MIX
            if any(s.operation == op for s in self.samples)
        }
        return {
            "offered_rate": self.offered_rate,
            "duration_s": self.duration_s,
            "requests": len(self.samples),
            "sent_rate": len(self.samples) / self.duration_s,
            "achieved_rate": len(ok) / max(self.duration_s, last),
            "errors": sum(errors.values()),
            "error_kinds": dict(errors),
            "latency_ms": summary(latencies),
            "latency_ms_ok_only": summary([s.latency_ms for s in ok]),
            "latency_ms_by_operation": by_operation,
            "send_lag_ms": summary([s.send_lag_ms for s in self.samples]),
            "client_cpu_s": self.client_cpu_s,
            "server_cpu_s": self.server_cpu_s,
            "jobs_in_table_at_start": self.jobs_before,
        }

    def holds(self) -> bool:
        f = self.figures()
        return (
            f["latency_ms"]["p99"] < P99_TARGET_MS
            and f["errors"] == 0
            and f["achieved_rate"] >= 0.95 * self.offered_rate
        )


# --------------------------------------------------------------------------- the local stack


@dataclass
class LocalStack:
    process: subprocess.Popen[bytes]
    url: str
    api_port: int
    state_dir: Path

    moto_pid: int | None = None

    def pids(self) -> dict[str, int]:
        state = json.loads((self.state_dir / "stack.json").read_text())
        pids = {"devstack": state["pid"], "moto": state.get("moto_pid") or self.moto_pid}
        # The stack's children but moto: its API worker processes.
        for number, child in enumerate(sorted(_children(state["pid"]) - {pids["moto"]})):
            pids[f"worker-{number}"] = child
        return {name: pid for name, pid in pids.items() if pid}

    def token(self, user: str) -> str:
        keys = auth.KeyPair.load_or_create(self.state_dir)
        return keys.mint(user, issuer=auth.issuer_for(self.api_port))


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended between the listing and the read
            continue
        found.update(int(child) for child in children)
    return found


def start_stack(
    state_dir: Path, aws_endpoint: str, moto_pid: int | None, *options: str
) -> LocalStack:
    """`python -m devstack run [OPTIONS]` on free ports, attached to our moto server."""
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    api_port, moto_port = free_port(), free_port()
    log = (state_dir / "devstack.log").open("wb")
    process = launcher.spawn(
        state_dir,
        api_port,
        "--moto-port",
        str(moto_port),
        "--aws-endpoint",
        aws_endpoint,
        *options,
        log=log,
    )
    stack = LocalStack(process, f"http://127.0.0.1:{api_port}", api_port, state_dir, moto_pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local stack exited; see {state_dir / 'devstack.log'}")
        if (state_dir / "stack.json").exists() and _answers(f"{stack.url}/openapi.json"):
            return stack
        time.sleep(0.2)
    stop_stack(stack)
    raise RuntimeError("the local stack did not answer within 60 s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # our own stack
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def stop_stack(stack: LocalStack) -> None:
    stack.process.send_signal(signal.SIGINT)
    try:
        stack.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the workload


class Workload:
    """Users with tokens and the jobs each of them owns (grows as creates succeed)."""

    def __init__(self, stack: LocalStack, users: int, seed: int = 7) -> None:
        self.users = [f"user{i:04d}" for i in range(users)]
        self.headers = {
            u: {"Authorization": f"Bearer {stack.token(u)}", "Content-Type": "application/json"}
            for u in self.users
        }
        self.jobs: dict[str, list[str]] = {u: [] for u in self.users}
        self.random = random.Random(seed)
        self.mix = MIX

    def body(self) -> str:
        return json.dumps(
            {
                "name": f"load-{uuid.uuid4().hex[:16]}",
                "schedule": "0 0 1 1 *",  # once a year: the watcher leaves them alone
                "timezone": "Europe/Paris",
                "parameters": {"region": "eu"},
                "script": SCRIPT,
            }
        )

    def request(self) -> tuple[str, str, str, str, dict[str, str], str | None]:
        """(operation, user, method, path, headers, body) of the next request."""
        roll = self.random.random()
        user = self.random.choice(self.users)
        headers = self.headers[user]
        if roll < self.mix["get"] and self.jobs[user]:
            job = self.random.choice(self.jobs[user])
            return "get", user, "GET", f"/jobs/{job}", headers, None
        if roll < self.mix["get"] + self.mix["list"]:
            return "list", user, "GET", "/jobs", headers, None
        keyed = headers | {"Idempotency-Key": uuid.uuid4().hex}
        return "create", user, "POST", "/jobs", keyed, self.body()


async def seed(stack: LocalStack, workload: Workload, jobs_per_user: int) -> int:
    """Create each user's first jobs (closed loop, a few at a time)."""
    async with aiohttp.ClientSession(stack.url) as client:
        semaphore = asyncio.Semaphore(8)

        async def create(user: str) -> None:
            async with (
                semaphore,
                client.post("/jobs", data=workload.body(), headers=workload.headers[user]) as r,
            ):
                r.raise_for_status()
                workload.jobs[user].append((await r.json())["job_id"])

        await asyncio.gather(*(create(u) for u in workload.users for _ in range(jobs_per_user)))
    return sum(len(j) for j in workload.jobs.values())


async def open_loop(
    stack: LocalStack, workload: Workload, rate: float, duration: float
) -> StepResult:
    result = StepResult(offered_rate=rate, duration_s=duration)
    result.jobs_before = sum(len(j) for j in workload.jobs.values())
    pids = stack.pids()
    server_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    async with aiohttp.ClientSession(stack.url, connector=connector) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        tasks = []

        async def call(method: str, path: str, headers: dict[str, str], body: str | None) -> Any:
            async with client.request(method, path, headers=headers, data=body) as response:
                payload = await response.read()
                return response.status, payload

        async def one(intended: float, request: tuple[Any, ...]) -> None:
            operation, user, method, path, headers, body = request
            sent = loop.time()
            status: int | None = None
            try:
                # The whole deadline counts from the intended send time, waiting for a
                # connection included.
                status, payload = await asyncio.wait_for(
                    call(method, path, headers, body),
                    timeout=TIMEOUT_SECONDS - (sent - intended),
                )
                if operation == "create" and status == 201:
                    workload.jobs[user].append(json.loads(payload)["job_id"])
            except (TimeoutError, aiohttp.ClientError):
                status = None
            done = loop.time()
            result.samples.append(
                Sample(
                    operation,
                    intended - start,
                    (done - intended) * 1000,
                    (sent - intended) * 1000,
                    status,
                )
            )

        count = round(rate * duration)
        for i in range(count):
            intended = start + i / rate
            delay = intended - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(intended, workload.request())))
        await asyncio.gather(*tasks)
    result.client_cpu_s = time.process_time() - client_before
    result.server_cpu_s = {
        name: cpu_seconds(pid) - server_before[name] for name, pid in pids.items()
    }
    return result


def settle(stack: LocalStack, limit: float = 60.0) -> None:
    """Wait until the stack has worked off requests whose clients gave up (the server keeps
    serving them): a probe must come back quickly."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        began = time.monotonic()
        if _answers(f"{stack.url}/openapi.json") and time.monotonic() - began < 0.05:
            return
        time.sleep(0.5)


def describe(step: StepResult) -> str:
    f = step.figures()
    lat = f["latency_ms"]
    return (
        f"offered {f['offered_rate']:.0f}/s: achieved {f['achieved_rate']:.1f}/s, "
        f"p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.0f} ms,"
        f" errors {f['errors']}"
    )


async def step_search(
    stack: LocalStack, workload: Workload, rates: list[float], duration: float
) -> tuple[list[StepResult], float | None]:
    """Raise the offered rate until p99 >= 100 ms (or errors, or the rate is not achieved),
    then try once half-way between the last rate held and the first one missed."""
    steps: list[StepResult] = []
    held: float | None = None
    missed: float | None = None
    for rate in rates:
        settle(stack)
        step = await open_loop(stack, workload, rate, duration)
        steps.append(step)
        say(f"api_load: step {describe(step)}")
        if not step.holds():
            missed = rate
            break
        held = rate
    if missed is not None and held is not None and missed - held > 5:
        middle = float(round((held + missed) / 2 / 5) * 5)
        if held < middle < missed:
            settle(stack)
            step = await open_loop(stack, workload, middle, duration)
            steps.append(step)
            say(f"api_load: step {describe(step)}")
            if step.holds():
                held = middle
    return steps, held


# --------------------------------------------------------------------------- the benchmark


def run(mode: Mode) -> dict[str, Any]:
    rate = 100.0
    duration = mode.pick(60.0, 3.0)
    users = mode.pick(200, 30)
    jobs_per_user = mode.pick(2, 1)
    step_rates = mode.pick([20, 30, 40, 50, 60, 80, 100], [40])
    step_duration = mode.pick(8.0, 2.0)
    gets_duration = mode.pick(15.0, 2.0)
    work = mode.results_dir / "work"
    # moto as `make run` starts it: durable (every write on disk before its answer).
    with moto_server(work / "api_load-moto.log", work / "api_load-aws") as moto:
        return _run(
            mode,
            work,
            moto.endpoint,
            moto.pid,
            users,
            jobs_per_user,
            rate,
            duration,
            step_rates,
            step_duration,
            gets_duration,
        )


def _run(
    mode: Mode,
    work: Path,
    endpoint: str,
    moto_pid: int | None,
    users: int,
    jobs_per_user: int,
    rate: float,
    duration: float,
    step_rates: list[float],
    step_duration: float,
    gets_duration: float,
) -> dict[str, Any]:
    stack = start_stack(work / "api_load-stack", endpoint, moto_pid)
    try:
        workload = Workload(stack, users)
        say(f"api_load: seeding {users * jobs_per_user} jobs for {users} users")
        seeded = asyncio.run(seed(stack, workload, jobs_per_user))
        # Warm every function (the first call imports it: a cold start, not load).
        asyncio.run(open_loop(stack, workload, 10, 1.0))
        say(f"api_load: step search, {step_duration:.0f} s per step")
        steps, highest = asyncio.run(step_search(stack, workload, step_rates, step_duration))
        say(f"api_load: {rate:.0f} req/s for {duration:.0f} s")
        main = asyncio.run(open_loop(stack, workload, rate, duration))
        say(f"api_load: main {describe(main)}")
        settle(stack)
        workload.mix = GETS_ONLY
        gets = asyncio.run(open_loop(stack, workload, rate, gets_duration))
        say(f"api_load: gets only {describe(gets)}")
    finally:
        stop_stack(stack)

    main_figures = main.figures()
    gets_figures = gets.figures()
    step_figures = [s.figures() for s in steps]
    plot = plots.latency_vs_load(
        [*step_figures, main_figures], mode.results_dir / "api_latency_vs_load.png", P99_TARGET_MS
    )
    timeline = plots.latency_timeline(
        [(s.intended, s.latency_ms, s.status) for s in main.samples],
        mode.results_dir / "api_latency_timeline.png",
        f"{rate:.0f} req/s offered, open loop",
    )
    lat = main_figures["latency_ms"]
    per_op = main_figures["latency_ms_by_operation"]
    cpu = main_figures["server_cpu_s"]
    markdown = "\n\n".join(
        [
            "## API load (local stack, open loop)",
            f"{users} users with their own tokens, {seeded} jobs seeded; mix 50 % get, "
            f"30 % list, 20 % create (with Idempotency-Key); latency from the intended send "
            f"time; a request unanswered after {TIMEOUT_SECONDS:.0f} s counts as an error.",
            f"**{rate:.0f} req/s offered for {duration:.0f} s**: achieved "
            f"{main_figures['achieved_rate']:.1f} req/s, p50 {fmt(lat['p50'])} ms, p95 "
            f"{fmt(lat['p95'])} ms, p99 {fmt(lat['p99'])} ms, max {fmt(lat['max'], 0)} ms, "
            f"errors {main_figures['errors']} {main_figures['error_kinds'] or ''}.",
            table(
                ["operation", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                [
                    (op, v["n"], fmt(v["p50"]), fmt(v["p95"]), fmt(v["p99"]), fmt(v["max"], 0))
                    for op, v in per_op.items()
                ],
            ),
            f"CPU during the run: stack process {cpu.get('devstack', 0):.1f} s, its API worker "
            f"processes {sum(v for k, v in cpu.items() if k.startswith('worker-')):.1f} s, moto "
            f"{cpu.get('moto', 0):.1f} s, load generator {main_figures['client_cpu_s']:.1f} s "
            f"(of {duration * (os.cpu_count() or 1):.0f} core-seconds). Generator send lag p99 "
            f"{fmt(main_figures['send_lag_ms']['p99'])} ms.",
            f"**Gets only, {rate:.0f} req/s for {gets_duration:.0f} s** (the cheapest route: "
            f"gateway, authorizer, handler, one GetItem): achieved "
            f"{gets_figures['achieved_rate']:.1f} req/s, p50 "
            f"{fmt(gets_figures['latency_ms']['p50'])} ms, p99 "
            f"{fmt(gets_figures['latency_ms']['p99'])} ms, max "
            f"{fmt(gets_figures['latency_ms']['max'], 0)} ms, errors {gets_figures['errors']}.",
            "**Step search** (highest offered rate with p99 < 100 ms, no errors, rate achieved): "
            + (f"**{highest:.0f} req/s**" if highest else "none of the rates tried"),
            table(
                ["offered/s", "achieved/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"],
                [
                    (
                        f"{f['offered_rate']:.0f}",
                        fmt(f["achieved_rate"]),
                        fmt(f["latency_ms"]["p50"]),
                        fmt(f["latency_ms"]["p95"]),
                        fmt(f["latency_ms"]["p99"]),
                        fmt(f["latency_ms"]["max"], 0),
                        f["errors"],
                    )
                    for f in [*step_figures, main_figures]
                ],
            ),
            f"![latency vs offered load]({plot.name}) ![latency over time]({timeline.name})",
        ]
    )
    data = {
        "users": users,
        "jobs_seeded": seeded,
        "mix": MIX,
        "timeout_s": TIMEOUT_SECONDS,
        "main": main_figures,
        "gets_only": gets_figures,
        "steps": step_figures,
        "highest_rate_p99_under_100ms": highest,
        "plots": [plot.name, timeline.name],
    }
    write_result(mode, "api_load", data, markdown)
    return data
