"""What every benchmark shares: where results go, the machine, percentiles, moto server, the
template's resources, seeding DynamoDB quickly, and metering of function invocations."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from bench.aws_meter import (
    AwsMeter,
    component,
    indexes_from_template,
    item_size,
    worker_cpu,
)
from devstack import iam, resources
from devstack.lambda_runtime import context_for, load_handler
from devstack.moto_server import MotoServer
from devstack.stack import Functions, aws_environment
from devstack.template import ROOT, Stack, local_stack
from scheduler.aws.dynamo import load
from scheduler.runs.run_repository import record_claim, with_dispatch_record

RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Mode:
    quick: bool

    @property
    def results_dir(self) -> Path:
        path = RESULTS / "quick" if self.quick else RESULTS
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


def say(text: str) -> None:
    """Progress and results go to the terminal even while the functions' own log lines (on
    sys.stdout) are sent to a file."""
    print(text, file=sys.__stdout__, flush=True)


@contextmanager
def function_logs(path: Path) -> Iterator[None]:
    """The in-process functions log JSON lines on stdout (powertools): keep them in a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:
        saved, sys.stdout = sys.stdout, log
        try:
            yield
        finally:
            sys.stdout = saved


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"Model name:\s*(.+)", lscpu)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    try:
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kb = 0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    import moto

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "moto": moto.__version__,
        "kernel": platform.release(),
        "commit": commit,
    }


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered) + 0.5 - 1e-9))
    return float(ordered[min(len(ordered), rank) - 1])


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "min": min(values) if values else float("nan"),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


def fmt(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def write_result(mode: Mode, name: str, data: dict[str, Any], markdown: str) -> Path:
    data = {"name": name, "quick": mode.quick, "machine": machine()} | data
    path = mode.results_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    (mode.results_dir / f"{name}.md").write_text(markdown.rstrip() + "\n")
    say(markdown)
    return path


def read_result(mode: Mode, name: str) -> dict[str, Any] | None:
    path = mode.results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- moto and stacks


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def moto_server(log_path: Path, state_dir: Path | None = None) -> Iterator[MotoServer]:
    """moto server as `make run` starts it (`devstack.moto_app`: transactions and queries that
    do not cost in proportion to the table; with `state_dir`, durable as `make run` is) on a
    free port, with this process's AWS environment pointing at it."""
    if state_dir is not None and state_dir.exists():
        shutil.rmtree(state_dir)
    server = MotoServer(HOST, free_port(), log_path, state_dir=state_dir)
    server.start()
    saved = dict(os.environ)
    os.environ.update(aws_environment(server.endpoint))
    try:
        yield server
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)


def build_stack(
    prefix: str,
    *,
    shards: int,
    parameters: dict[str, str] | None = None,
    page_token_secret: str = "bench-page-token-secret-0123456789",  # noqa: S107
) -> Stack:
    """The template's resources under `prefix`, created in moto (through an unmetered session)."""
    stack = local_stack(
        prefix,
        {"JwtIssuer": "https://issuer.bench", "JwtAudience": "scheduler"}
        | {"ScheduleShards": str(shards)}
        | (parameters or {}),
        {"PageTokenSecret": page_token_secret},
    )
    resources.create_all(stack)
    return stack


def meter_for(stack: Stack) -> AwsMeter:
    indexes, keys = indexes_from_template(stack)
    return AwsMeter(indexes, keys)


def plain_client(service: str) -> Any:
    """A client outside the metered default session (for seeding and reading results)."""
    return boto3.session.Session().client(service)  # type: ignore[call-overload]


def admin_client(service: str, state_dir: Path, endpoint_url: str | None = None) -> Any:
    """A client as a running local stack's admin: IAM is enforced, and each start of the stack
    makes new admin keys (`<state dir>/aws-credentials.json`), so it is built from the current
    ones."""
    principals = iam.load_credentials(state_dir)
    if principals is None:
        raise RuntimeError(f"no AWS credentials in {state_dir}: is IAM enforced?")
    return boto3.session.Session(
        aws_access_key_id=principals.admin.access_key_id,
        aws_secret_access_key=principals.admin.secret_access_key,
        region_name="us-east-1",
    ).client(service, endpoint_url=endpoint_url)  # type: ignore[call-overload]


def batch_write(table: str, items: Sequence[dict[str, Any]], threads: int = 2) -> float:
    """BatchWriteItem (25 items a call) from a few threads; returns the seconds it took."""
    started = time.perf_counter()
    chunks = [items[i : i + 25] for i in range(0, len(items), 25)]
    local = threading.local()

    def write(chunk: Sequence[dict[str, Any]]) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = plain_client("dynamodb")
        request = {table: [{"PutRequest": {"Item": item}} for item in chunk]}
        while request:
            response = client.batch_write_item(RequestItems=request)
            request = response.get("UnprocessedItems") or {}

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, chunks))
    return time.perf_counter() - started


def scan_all(table: str, **kwargs: Any) -> list[dict[str, Any]]:
    client = plain_client("dynamodb")
    items: list[dict[str, Any]] = []
    args: dict[str, Any] = {"TableName": table, **kwargs}
    while True:
        page = client.scan(**args)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def scan_runs(table: str) -> list[dict[str, Any]]:
    """Every run of the runs table, as the pipeline reads it (plain values): a run in a
    recorded dispatch is DISPATCHED in its task (run_repository.with_dispatch_record)."""
    items = [load(raw) for raw in scan_all(table)]
    records = {claim: item for item in items if (claim := record_claim(item))}
    return [
        with_dispatch_record(item, records.get(item.get("claim_id", "")))
        for item in items
        if record_claim(item) is None
    ]


def mean_item_sizes(stack: Stack, sample: int = 2000) -> dict[str, float]:
    """Mean item size (bytes) of each of the stack's tables, from a scan of up to `sample`."""
    sizes: dict[str, float] = {}
    client = plain_client("dynamodb")
    for logical in stack.of_type("AWS::DynamoDB::Table"):
        name = stack.physical_names[logical]
        items = client.scan(TableName=name, Limit=sample).get("Items", [])
        if items:
            sizes[name] = sum(item_size(i) for i in items) / len(items)
    return sizes


# --------------------------------------------------------------------------- invocations


@dataclass
class InvocationStats:
    invocations: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    samples_ms: list[float] = field(default_factory=list)


class MeteredFunctions(Functions):
    """The local stack's in-process functions, with each invocation's thread CPU time, wall
    time and AWS calls (via the meter's `component`) recorded per function."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self.stats: dict[str, InvocationStats] = {}
        self._stats_lock = threading.Lock()

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        with self._locks[function]:
            os.environ.update(self.stack.environment(function))
            handler = self._handlers.get(function)
            if handler is None:
                handler = self._handlers[function] = load_handler(self.stack, function)
            context = context_for(self.stack, function)
            with component(function):
                workers = worker_cpu[function]
                cpu, wall = time.thread_time(), time.perf_counter()
                try:
                    return handler(event, context)
                finally:
                    wall = time.perf_counter() - wall
                    # The invoking thread's CPU plus its thread pools' (the watcher's).
                    cpu = time.thread_time() - cpu + worker_cpu[function] - workers
                    with self._stats_lock:
                        stats = self.stats.setdefault(function, InvocationStats())
                        stats.invocations += 1
                        stats.cpu_seconds += cpu
                        stats.wall_seconds += wall
                        stats.samples_ms.append(cpu * 1000)

    def preload(self, *functions: str) -> None:
        """Import handlers now (a warm container), so that imports are not counted as work."""
        for function in functions:
            with self._locks[function]:
                os.environ.update(self.stack.environment(function))
                self._handlers.setdefault(function, load_handler(self.stack, function))


# --------------------------------------------------------------------------- moto's access log


# moto (werkzeug) colours the lines of 4xx answers and DELETEs: S3 bills those requests too.
_ACCESS = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|DELETE|HEAD) (/[^ ?"]*)')


class MotoLog:
    """S3 requests as moto server logged them (it logs one line per HTTP request): counts the
    runner's presigned requests, which no botocore hook sees."""

    def __init__(self, path: Path, bucket: str) -> None:
        self.path = path
        self.bucket = bucket
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def s3_requests(self) -> Counter[str]:
        """`METHOD prefix/` -> count, since the last mark."""
        counts: Counter[str] = Counter()
        with self.path.open("rb") as log:
            log.seek(self._offset)
            text = log.read().decode(errors="replace")
        for method, path in _ACCESS.findall(text):
            parts = path.lstrip("/").split("/")
            if parts[0] != self.bucket:
                continue
            prefix = parts[1] + "/" if len(parts) > 2 else "(bucket)"
            counts[f"{method} {prefix}"] += 1
        return counts


def epoch_now() -> float:
    return time.time()


def ensure_path() -> None:
    """The domain package and the local stack on sys.path (make sets PYTHONPATH too)."""
    for part in ("layers/common/python", "local"):
        path = str(ROOT / part)
        if path not in sys.path:
            sys.path.insert(0, path)
