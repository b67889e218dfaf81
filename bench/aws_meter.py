"""Counts the AWS calls our code makes, with botocore event hooks, and prices DynamoDB's
request units from what each call read and wrote.

Hooks go on boto3's default session before any client exists (`AwsMeter.install()`): every
client the handlers build (scheduler/container.py, scheduler/api/container.py) copies the
session's event handlers, so each call passes `before-call` and `after-call` here.

Each call is attributed to a *component*: the function being invoked (set by `component()`
around an invocation), otherwise the name of the calling thread (e.g. an SQS poller standing in
for Lambda's event source mapping).

DynamoDB request units follow the on-demand rules: a read is 1 unit per 4 KB strongly
consistent, half that eventually consistent (per item for GetItem/BatchGetItem, per request on
the bytes a Query returns); a write is 1 unit per 1 KB, twice that inside a transaction, charged
even when its condition fails; each write to a global secondary index is one more unit (two when
an index key changes: a delete and a put). Item sizes follow DynamoDB's rules (attribute names
plus values). Updates, deletes and projected reads do not carry the item: they are priced with
the table's mean item size, measured at the end of the benchmark (`finalize`).
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import boto3

_component: ContextVar[str | None] = ContextVar("bench_component", default=None)

READ_OPS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITE_OPS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
)


@contextmanager
def component(name: str) -> Iterator[None]:
    """Attribute the AWS calls made inside to `name` (e.g. the function being invoked)."""
    token = _component.set(name)
    try:
        yield
    finally:
        _component.reset(token)


def current_component() -> str:
    return _component.get() or threading.current_thread().name


# CPU seconds spent in thread-pool workers on behalf of each component (the watcher fans its
# DynamoDB calls out over a ThreadPoolExecutor: that CPU is the invocation's too).
worker_cpu: Counter[str] = Counter()
_worker_lock = threading.Lock()


def follow_thread_pools() -> None:
    """Make ThreadPoolExecutor tasks run in their submitter's context (so their AWS calls are
    attributed to the same component) and add their thread CPU time to `worker_cpu`."""
    if getattr(ThreadPoolExecutor.submit, "_bench_follows", False):
        return
    original = ThreadPoolExecutor.submit

    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        context = contextvars.copy_context()
        owner = _component.get()

        def run() -> Any:
            began = time.thread_time()
            try:
                return context.run(fn, *args, **kwargs)
            finally:
                if owner is not None:
                    with _worker_lock:
                        worker_cpu[owner] += time.thread_time() - began

        return original(self, run)

    submit._bench_follows = True  # type: ignore[attr-defined]
    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]


# ------------------------------------------------------------------------------- item sizes


def value_size(value: dict[str, Any]) -> int:
    """Bytes of one DynamoDB-JSON value, per the DynamoDB developer guide's item size rules."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":
        digits = len(str(raw).lstrip("-").replace(".", "").lstrip("0")) or 1
        return 1 + math.ceil(digits / 2)
    if kind == "B":
        return len(raw) if isinstance(raw, bytes | bytearray) else len(str(raw)) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in raw.items())
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: v}) for v in raw)
    return 0


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def _rru(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


def _wru(size: int) -> int:
    return max(1, math.ceil(size / 1024))


# ------------------------------------------------------------------------------- indexes


@dataclass(frozen=True)
class IndexSpec:
    name: str
    keys: tuple[str, ...]
    projection: str  # ALL | KEYS_ONLY | INCLUDE
    included: tuple[str, ...] = ()  # INCLUDE's NonKeyAttributes


_CLAUSE = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\b", re.IGNORECASE)


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def updated_attributes(expression: str, names: dict[str, str]) -> tuple[set[str], set[str]]:
    """(attributes set or added, attributes removed) by an UpdateExpression."""
    pieces = _CLAUSE.split(expression)
    set_names: set[str] = set()
    removed: set[str] = set()
    for keyword, body in zip(pieces[1::2], pieces[2::2], strict=False):
        for part in _split_top_level(body):
            target = re.split(r"[=\s]", part.strip(), maxsplit=1)[0].strip()
            target = names.get(target, target).split(".")[0].split("[")[0]
            (removed if keyword.upper() == "REMOVE" else set_names).add(target)
    return set_names, removed


def _projects_a_change(spec: IndexSpec, changed: set[str]) -> bool:
    """Does an update of `changed` (no key among them) rewrite the item's index entry?"""
    if spec.projection == "ALL":
        return bool(changed)
    return spec.projection == "INCLUDE" and bool(changed & set(spec.included))


# ------------------------------------------------------------------------------- the meter


@dataclass
class DynamoUsage:
    """What one component asked of DynamoDB."""

    requests: Counter[str] = field(default_factory=Counter)  # by operation
    rru: float = 0.0
    items_read: int = 0
    # writes priced at the end (size unknown when made): table -> item writes (x1 or x2)
    deferred_writes: Counter[str] = field(default_factory=Counter)
    deferred_reads: Counter[tuple[str, bool]] = field(default_factory=Counter)
    wru_known: int = 0  # writes whose size was known (puts)
    index_wru: int = 0
    # the same units by what the write does (write_label): known units, and deferred item
    # writes by table, priced at the end like the others
    wru_by_label: Counter[str] = field(default_factory=Counter)
    deferred_by_label: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def read_requests(self) -> int:
        return sum(n for op, n in self.requests.items() if op in READ_OPS)

    @property
    def write_requests(self) -> int:
        return sum(n for op, n in self.requests.items() if op in WRITE_OPS)


class AwsMeter:
    def __init__(
        self,
        indexes: dict[str, list[IndexSpec]] | None = None,
        table_keys: dict[str, set[str]] | None = None,
    ) -> None:
        self.indexes = indexes or {}
        self.table_keys = table_keys or {}
        self.calls: Counter[tuple[str, str, str]] = Counter()  # (component, service, op)
        self.dynamo: dict[str, DynamoUsage] = defaultdict(DynamoUsage)
        self.sqs_billed: Counter[str] = Counter()  # component -> 64 KB request chunks
        self.empty_receives: Counter[str] = Counter()
        self.run_task_refs: Counter[str] = Counter()  # run ref -> RunTask calls naming it
        self.manifest_refs: Counter[str] = Counter()  # run ref -> manifests naming it
        self._membership: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        self.enabled = True

    # -- installation ----------------------------------------------------------------------

    def install(self) -> None:
        """Hook boto3's default session; call before any handler builds a client."""
        boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
        assert session is not None
        core = session.events  # botocore's event emitter, shared by every client built
        core.register("before-call", self._before_call, unique_id="bench-meter-before")
        core.register("after-call", self._after_call, unique_id="bench-meter-after")
        # DynamoDB's API parameters (not the serialised request) are kept in the call's
        # context for after-call, which prices the call from them and from the response.
        core.register(
            "before-parameter-build.dynamodb", _keep_params, unique_id="bench-meter-params"
        )
        follow_thread_pools()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.dynamo.clear()
            self.sqs_billed.clear()
            self.empty_receives.clear()
            self.run_task_refs.clear()
            self.manifest_refs.clear()

    def note_item(self, table: str, item: dict[str, Any]) -> None:
        """Register an item written outside the meter (seeding), for index bookkeeping."""
        for spec in self.indexes.get(table, []):
            if all(k in item for k in spec.keys):
                self._membership.setdefault((table, self._key_of(table, item)), set()).add(
                    spec.name
                )

    # -- hooks -------------------------------------------------------------------------------

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if not self.enabled:
            return
        service = model.service_model.service_name
        operation = model.name
        who = current_component()
        body = params.get("body")
        with self._lock:
            self.calls[(who, service, operation)] += 1
            if service == "sqs" and operation in ("SendMessage", "SendMessageBatch"):
                size = len(body) if isinstance(body, bytes | str) else 0
                self.sqs_billed[who] += max(1, math.ceil(size / 65536))
            elif service == "sqs" and operation != "ReceiveMessage":
                self.sqs_billed[who] += 1
            if service == "ecs" and operation == "RunTask":
                for ref in _run_refs_in(body):
                    self.run_task_refs[ref] += 1
            if service == "s3" and operation == "PutObject":
                url = str(params.get("url", ""))
                if "/manifests/" in url:
                    self._count_manifest(body)

    def _count_manifest(self, body: Any) -> None:
        try:
            manifest = json.loads(body if isinstance(body, str | bytes) else body.read())
            if hasattr(body, "seek"):
                body.seek(0)
        except (ValueError, AttributeError, OSError):
            return
        for run in manifest.get("runs", []):
            self.manifest_refs[f"{run['job_id']}/{run['run_key']}/{run['attempt']}"] += 1

    def _after_call(
        self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        if not self.enabled:
            return
        if model.name == "ReceiveMessage" and model.service_model.service_name == "sqs":
            # An empty receive is a poller idling (Lambda's pollers long-poll 20 s on AWS,
            # ours 1 s): counted apart, as a fixed cost, not per run.
            with self._lock:
                key = "sqs_billed" if parsed.get("Messages") else "empty_receives"
                getattr(self, key)[current_component()] += 1
            return
        if model.service_model.service_name != "dynamodb":
            return
        params = context.get("bench_params")
        if params is None:
            return
        usage = self.dynamo[current_component()]
        failed = "Error" in parsed
        with self._lock:
            self._dynamo(usage, model.name, params, parsed, failed)

    def _dynamo(
        self,
        usage: DynamoUsage,
        operation: str,
        params: dict[str, Any],
        parsed: dict[str, Any],
        failed: bool,
    ) -> None:
        usage.requests[operation] += 1
        if operation in READ_OPS:
            self._read(usage, operation, params, parsed)
        elif operation == "TransactWriteItems":
            for entry in params.get("TransactItems", []):
                ((kind, spec),) = entry.items()
                self._write(usage, kind, spec["TableName"], spec, failed, factor=2)
        elif operation == "BatchWriteItem":
            for name, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    ((kind, spec),) = request.items()
                    self._write(usage, kind.removesuffix("Request"), name, spec, failed)
        elif operation in WRITE_OPS:
            kind = operation.removesuffix("Item")
            self._write(usage, kind, params.get("TableName", ""), params, failed)

    @staticmethod
    def _read(
        usage: DynamoUsage, operation: str, params: dict[str, Any], parsed: dict[str, Any]
    ) -> None:
        table = params.get("TableName", "")
        consistent = bool(params.get("ConsistentRead"))
        if operation == "GetItem":
            item = parsed.get("Item")
            usage.items_read += 1 if item else 0
            if "ProjectionExpression" in params or item is None:
                usage.deferred_reads[(table, consistent)] += 1
            else:
                usage.rru += _rru(item_size(item), consistent)
        elif operation == "BatchGetItem":
            for name, items in parsed.get("Responses", {}).items():
                strong = bool(params["RequestItems"].get(name, {}).get("ConsistentRead"))
                for item in items:
                    usage.items_read += 1
                    usage.rru += _rru(item_size(item), strong)
        elif operation in ("Query", "Scan"):
            items = parsed.get("Items", [])
            usage.items_read += int(parsed.get("ScannedCount", len(items)))
            usage.rru += _rru(sum(item_size(i) for i in items), consistent)

    def _write(
        self,
        usage: DynamoUsage,
        kind: str,
        table: str,
        spec: dict[str, Any],
        failed: bool,
        factor: int = 1,
    ) -> None:
        """One item written (Put, Update, Delete or ConditionCheck); `factor` 2 in a
        transaction. Charged even when its condition fails; index writes only on success."""
        label = write_label(kind, spec, factor, failed)
        if kind == "Put":
            units = factor * _wru(item_size(spec["Item"]))
            usage.wru_known += units
            usage.wru_by_label[label] += units
            if not failed:
                index = self._index_put(table, spec["Item"])
                usage.index_wru += index
                usage.wru_by_label[label] += index
            return
        usage.deferred_writes[table] += factor
        usage.deferred_by_label[(label, table)] += factor
        if not failed and kind in ("Update", "Delete"):
            index = self._index_change(table, kind, spec)
            usage.index_wru += index
            usage.wru_by_label[label] += index

    # -- index bookkeeping ---------------------------------------------------------------------

    def _key_of(self, table: str, item_or_key: dict[str, Any]) -> str:
        keys = {k: v for k, v in item_or_key.items() if k in self._key_names(table)}
        return json.dumps(keys, sort_keys=True)

    def _key_names(self, table: str) -> set[str]:
        return self.table_keys.get(table, set())

    def _index_put(self, table: str, item: dict[str, Any]) -> int:
        units = 0
        key = (table, self._key_of(table, item))
        members = self._membership.setdefault(key, set())
        for spec in self.indexes.get(table, []):
            had = spec.name in members
            if all(k in item for k in spec.keys):
                units += 2 if had else 1
                members.add(spec.name)
            elif had:
                units += 1
                members.discard(spec.name)
        return units

    def _index_change(self, table: str, operation: str, params: dict[str, Any]) -> int:
        specs = self.indexes.get(table, [])
        if not specs:
            return 0
        key = (table, self._key_of(table, params["Key"]))
        members = self._membership.setdefault(key, set())
        units = 0
        if operation == "Delete":
            units = len(members)
            members.clear()
            return units
        names = params.get("ExpressionAttributeNames", {})
        set_names, removed = updated_attributes(params.get("UpdateExpression", ""), names)
        for spec in specs:
            had = spec.name in members
            if removed & set(spec.keys):
                if had:
                    units += 1
                    members.discard(spec.name)
            elif set_names & set(spec.keys):
                units += 2 if had else 1
                members.add(spec.name)
            elif had and _projects_a_change(spec, set_names | removed):
                units += 1
        return units

    # -- results -----------------------------------------------------------------------------

    def finalize(self, mean_sizes: dict[str, float]) -> dict[str, dict[str, Any]]:
        """Per component: DynamoDB requests, items read, RRU and WRU (deferred ones priced with
        the tables' mean item sizes)."""
        out: dict[str, dict[str, Any]] = {}
        for who, usage in self.dynamo.items():
            rru = usage.rru + sum(
                n * _rru(int(mean_sizes.get(table, 1024)), consistent)
                for (table, consistent), n in usage.deferred_reads.items()
            )
            wru = usage.wru_known + usage.index_wru
            wru += sum(
                n * _wru(int(mean_sizes.get(table, 1024)))
                for table, n in usage.deferred_writes.items()
            )
            by_label = Counter(usage.wru_by_label)
            for (label, table), n in usage.deferred_by_label.items():
                by_label[label] += n * _wru(int(mean_sizes.get(table, 1024)))
            out[who] = {
                "wru_by_write": dict(by_label),
                "requests": dict(usage.requests),
                "read_requests": usage.read_requests,
                "write_requests": usage.write_requests,
                "items_read": usage.items_read,
                "rru": rru,
                "wru": wru,
                "index_wru": usage.index_wru,
            }
        return out

    def calls_by(self, service: str | None = None) -> dict[str, dict[str, int]]:
        """{component: {operation: calls}} (for one service, or `service.operation` keys)."""
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (who, svc, op), n in self.calls.items():
            if service is None:
                out[who][f"{svc}.{op}"] = n
            elif svc == service:
                out[who][op] = n
        return dict(out)


def write_label(kind: str, spec: dict[str, Any], factor: int, failed: bool) -> str:
    """What a DynamoDB item write does, for the WRU-by-write table: the run status it sets (or
    the attribute), the job's next run, the quota counters, the schedule items, the cursor."""
    key = _plain(spec.get("Key") or spec.get("Item") or {})
    values = _plain(spec.get("ExpressionAttributeValues") or {})
    expression = str(spec.get("UpdateExpression", ""))
    names = spec.get("ExpressionAttributeNames") or {}
    if "job_id" in key and "key" in key:  # the runs table
        label = _run_write_label(kind, spec, values, expression, names)
    elif "bucket" in key:
        label = "watcher cursor" if key.get("bucket") == "watcher" else f"schedule item {kind}"
        if "#place#" in str(key.get("slot", "")):
            label = f"pack place item {kind}"
    else:
        pk = str(key.get("pk", ""))
        label = next(
            (name for prefix, name in _JOBS_TABLE_ITEMS.items() if pk.startswith(prefix)),
            f"{kind} other",
        )
        if pk.startswith("JOB#"):
            label = "job next_run_utc" if "next_run_utc" in expression else "job update"
    if factor > 1:
        label += " [transaction]"
    if failed:
        label += " [condition failed]"
    return label


_JOBS_TABLE_ITEMS = {"QUOTA#": "runs_per_minute counter", "OWNER#": "owner running count"}


def _run_write_label(
    kind: str,
    spec: dict[str, Any],
    values: dict[str, Any],
    expression: str,
    names: dict[str, str],
) -> str:
    if kind == "Put" and str(_plain(spec["Item"]).get("job_id", "")).startswith("dispatch#"):
        return "pack dispatch record Put"
    if kind == "Put":
        return f"run created ({_plain(spec['Item']).get('status', '?')})"
    status = re.search(r"#st = (:\w+)", expression)
    if status and status.group(1) in values:
        return f"run -> {values[status.group(1)]}"
    if "holds_place" in expression:
        return "run: place taken"
    first = re.sub(r"^(SET|ADD|REMOVE)\s+", "", expression).split("=")[0].strip()
    return f"run: {names.get(first, first) or kind}"


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB JSON of strings and numbers, as plain values (enough for labels)."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        if isinstance(value, dict) and len(value) == 1:
            ((kind, raw),) = value.items()
            out[name] = raw if kind in ("S", "N") else kind
    return out


def _run_refs_in(body: Any) -> list[str]:
    """RUN_REFS of a RunTask request body (JSON): `job/run/attempt,...`."""
    try:
        request = json.loads(body)
    except (TypeError, ValueError):
        return []
    refs: list[str] = []
    for override in request.get("overrides", {}).get("containerOverrides", []):
        for variable in override.get("environment", []):
            if variable.get("name") == "RUN_REFS":
                refs += [r for r in str(variable.get("value", "")).split(",") if r]
    return refs


def _keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["bench_params"] = params


def indexes_from_template(stack: Any) -> tuple[dict[str, list[IndexSpec]], dict[str, set[str]]]:
    """{table: [IndexSpec]} and {table: key attribute names} from the template's tables."""
    indexes: dict[str, list[IndexSpec]] = {}
    keys: dict[str, set[str]] = {}
    for logical, resource in stack.of_type("AWS::DynamoDB::Table").items():
        name = stack.physical_names[logical]
        props = resource["Properties"]
        keys[name] = {k["AttributeName"] for k in props["KeySchema"]}
        indexes[name] = [
            IndexSpec(
                gsi["IndexName"],
                tuple(k["AttributeName"] for k in gsi["KeySchema"]),
                gsi.get("Projection", {}).get("ProjectionType", "ALL"),
                tuple(gsi.get("Projection", {}).get("NonKeyAttributes", [])),
            )
            for gsi in props.get("GlobalSecondaryIndexes", [])
        ]
    return indexes, keys
