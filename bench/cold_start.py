"""Cold start: for every function of the template (functions/*/app.py), a fresh interpreter
imports the handler (as Lambda does: code directory and layer on sys.path), invokes it once
with an event of its kind (events/*.json), then once more. Reported: import time (the part of
Lambda's init our code decides), first and second invocation time, and the whole process's
wall time. With `-X importtime`, the top-level imports that dominate each handler's import.

Against moto server (the first invocation creates clients and calls AWS); target: import
< 300 ms per handler.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Mode,
    build_stack,
    fmt,
    moto_server,
    say,
    summary,
    table,
    write_result,
)
from devstack.template import Stack

EVENTS = ROOT / "events"
CHILD = ROOT / "bench" / "cold_child.py"
# Only what a deployed function has: the layer's requirements and boto3 (no dev tools, no
# awscrt, which botocore would import if it were there). `make bench` builds it.
LAMBDA_PYTHON = ROOT / "bench" / ".lambda-venv" / "bin" / "python"
TARGET_MS = 300.0
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def api_event(method: str, path: str) -> dict[str, Any]:
    """An HTTP API event (payload 2.0, events/get_job.json's shape) for one route."""
    event = copy.deepcopy(_load("get_job"))
    job_id = uuid.uuid4().hex
    values = {"job_id": job_id, "key": f"1795800000-{job_id}"}
    names = re.findall(r"\{(\w+)\}", path)
    raw = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = raw
    event["requestContext"]["http"]["method"] = method
    event["pathParameters"] = {n: values.get(n, "x") for n in names} or None
    if method == "POST" and path == "/jobs":
        body = json.loads(_load("create_job")["body"])
        event["body"] = json.dumps(body | {"name": f"cold-{uuid.uuid4().hex[:12]}"})
        event["headers"]["content-type"] = "application/json"
    elif method in ("PATCH", "PUT"):
        event["body"] = json.dumps({"description": "cold start"})
        event["headers"]["content-type"] = "application/json"
    return event


def event_for(stack: Stack, function: str) -> dict[str, Any]:
    events = stack.functions[function]["Properties"].get("Events", {})
    for spec in events.values():
        kind, props = spec["Type"], spec.get("Properties", {})
        if kind == "HttpApi":
            return api_event(props["Method"].upper(), props["Path"])
        if kind == "Schedule":
            return _load("watcher")
        if kind == "EventBridgeRule":
            return _load("task_stopped")
        if kind == "SQS" and "Dispatch" in json.dumps(props):
            return _load("executor")
        if kind == "SQS":
            record = copy.deepcopy(_load("executor")["Records"][0])
            key = f"reports/{uuid.uuid4().hex}/1795800000-x/1/started.json"
            record["body"] = json.dumps(
                {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": key}}}]}
            )
            record["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:reports"
            return {"Records": [record]}
    return {}


def interpreter_name() -> str:
    if LAMBDA_PYTHON.exists():
        return (
            "bench/.lambda-venv (only layers/common/requirements.txt and boto3, as in a "
            "deployed function)"
        )
    return "the dev venv (no bench/.lambda-venv: imports are slower than on Lambda)"


def top_imports(stderr: str, count: int = 6) -> list[tuple[str, float]]:
    """Import time by top-level package (the sum of its modules' own time, from
    `-X importtime`), largest first: which dependency the import time goes to."""
    by_package: dict[str, float] = {}
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            package = match.group(4).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1000
    return sorted(by_package.items(), key=lambda item: -item[1])[:count]


def cold_start(
    stack: Stack, function: str, environment: dict[str, str], work: Path, importtime: bool
) -> dict[str, Any]:
    module, attribute = stack.handler(function)
    event_file = work / f"cold-{function}.json"
    event_file.write_text(json.dumps(event_for(stack, function)))
    command = [str(python())]
    if importtime:
        command += ["-X", "importtime"]
    command += [str(CHILD), str(stack.code_dir(function)), module, attribute, str(event_file)]
    began = time.perf_counter()
    done = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    wall = (time.perf_counter() - began) * 1000
    marker = [line for line in done.stdout.splitlines() if line.startswith("COLD-START ")]
    if not marker:
        raise RuntimeError(f"cold start of {function} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(marker[-1].removeprefix("COLD-START "))
    result["process_wall_ms"] = wall
    if importtime:
        result["top_imports_ms"] = top_imports(done.stderr)
    return result


def python() -> Path:
    """The Lambda-like interpreter if built, else this one (the dev venv: slower imports)."""
    return LAMBDA_PYTHON if LAMBDA_PYTHON.exists() else Path(sys.executable)


def run(mode: Mode) -> dict[str, Any]:
    from bench.scheduling import runner_network

    work = mode.results_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    repeats = mode.pick(2, 1)
    with moto_server(work / "cold_start-moto.log"):
        stack = build_stack("cold", shards=16, parameters=runner_network())
        base = dict(os.environ)
        base["PYTHONPATH"] = str(ROOT / "layers" / "common" / "python")  # the layer: /opt/python
        functions = sorted(stack.functions)
        if mode.quick:
            functions = [f for f in functions if f in ("GetJobFunction", "WatcherFunction")]
        figures: dict[str, Any] = {}
        for function in functions:
            environment = base | stack.environment(function)
            runs = [cold_start(stack, function, environment, work, False) for _ in range(repeats)]
            result = {
                key: summary([r[key] for r in runs])["p50"]
                for key in ("import_ms", "first_invocation_ms", "second_invocation_ms")
            }
            result |= {
                "process_wall_ms": min(r["process_wall_ms"] for r in runs),
                "status": runs[0]["status"],
                "modules_loaded": runs[0]["modules_loaded"],
                "repeats": repeats,
            }
            if not mode.quick:
                traced = cold_start(stack, function, environment, work, True)
                result["top_imports_ms"] = traced["top_imports_ms"]
            figures[function] = result
            say(
                f"cold_start: {function}: import {result['import_ms']:.0f} ms, first call "
                f"{result['first_invocation_ms']:.0f} ms"
            )
        began = time.perf_counter()
        subprocess.run([str(python()), "-c", "pass"], env=base, check=True)
        interpreter_ms = (time.perf_counter() - began) * 1000

    over = {f: r["import_ms"] for f, r in figures.items() if r["import_ms"] >= TARGET_MS}
    rows = [
        (
            f.removesuffix("Function"),
            fmt(r["import_ms"], 0),
            fmt(r["first_invocation_ms"], 0),
            fmt(r["second_invocation_ms"], 1),
            r["status"] if r["status"] is not None else "-",
            ", ".join(f"{name} {ms:.0f}" for name, ms in r.get("top_imports_ms", [])[:5]),
        )
        for f, r in figures.items()
    ]
    imports = [r["import_ms"] for r in figures.values()]
    markdown = "\n\n".join(
        [
            "## Cold start (fresh interpreter per handler, against moto server)",
            f"Interpreter: {interpreter_name()}. Median of {repeats} runs each. Import = loading "
            "functions/<name>/app.py with the layer on sys.path (Lambda's init, less the "
            f"runtime's own start: a bare interpreter starts in {interpreter_ms:.0f} ms here). "
            "First invocation includes building clients and reading settings, and its AWS "
            "calls to moto.",
            f"Import: max {fmt(max(imports), 0)} ms, median {fmt(summary(imports)['p50'], 0)} "
            f"ms; target < {TARGET_MS:.0f} ms: "
            + ("**all below**." if not over else f"**above: {', '.join(over)}**."),
            table(
                [
                    "function",
                    "import ms",
                    "first call ms",
                    "second call ms",
                    "status",
                    "import time by package (ms, -X importtime)",
                ],
                rows,
            ),
        ]
    )
    data = {
        "target_import_ms": TARGET_MS,
        "interpreter_start_ms": interpreter_ms,
        "interpreter": interpreter_name(),
        "functions": figures,
        "above_target": over,
    }
    write_result(mode, "cold_start", data, markdown)
    return data
