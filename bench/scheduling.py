"""Scheduling throughput: thousands of runs due across a few minutes, through watcher -> SQS
FIFO -> executor -> dispatch, with the real handlers in-process against moto server.

How it is driven (what AWS does, done here in this process):
- jobs, their script and their schedule items are written straight into moto (BatchWriteItem,
  the repositories' own item formats): `rate` runs a second, due from `lead` seconds after the
  first tick, for `duration` seconds. Ten consecutive runs share an owner and their second (as
  an owner's cron runs of a minute do), so packing (same owner, same 5 s window, at most 10 a
  task) can fill tasks;
- a fixed-rate timer invokes the watcher every `tick` seconds, like the EventBridge rule (a tick
  still running at the next boundary makes the timer skip it, as reserved concurrency 1 would);
- pollers feed the executor (and, for the local backend, run_reports and task_events) like
  Lambda's event source mappings (the local stack's own pollers, devstack/pipeline.py).

`local`: the runner is a real subprocess per pack (trivial scripts); every run must end
SUCCEEDED, and its start lag is the runner's `start_lag_ms` (script start - scheduled second).
`ecs`: RunTask against moto's ECS (dispatch only: nothing runs); every run must reach
DISPATCHED; the figure of merit is how early it was dispatched (the lead a Fargate task needs).

Counted per run: DynamoDB reads and writes (and request units), SQS requests, RunTask calls, S3
requests (botocore's and the runner's presigned ones, from moto's access log) and our CPU time.
"""

from __future__ import annotations

import os
import resource
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import plots
from bench.aws_meter import AwsMeter
from bench.common import (
    MeteredFunctions,
    Mode,
    MotoLog,
    batch_write,
    build_stack,
    fmt,
    function_logs,
    mean_item_sizes,
    meter_for,
    moto_server,
    plain_client,
    say,
    scan_runs,
    summary,
    table,
    write_result,
)
from devstack import pipeline
from devstack.template import Stack
from scheduler import wiring
from scheduler.aws.dynamo import dump
from scheduler.jobs.job_models import Job, JobStatus
from scheduler.jobs.job_repository import job_item
from scheduler.jobs.script_store import S3ScriptStore
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.schedule.schedule_repository import ScheduleRepository
from scheduler.times import from_epoch

SCRIPT = 'print("ok")\n'
FAR_FUTURE = "0 0 1 1 *"  # after its run, a job's next occurrence is next year's
SHARDS = 4  # as the local stack (moto answers Query slowly; fewer shards, fewer queries)
RUNS_PER_OWNER_BLOCK = 10
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED"}
DISPATCHED_OR_LATER = {"DISPATCHED", "RUNNING"} | TERMINAL


@dataclass(frozen=True)
class Scenario:
    name: str
    backend: str  # local | ecs
    rate: float  # runs due per second
    duration: float  # seconds over which runs are due
    tick: float = 60.0  # EventBridge rate(1 minute)
    lookahead: int = 90  # the watcher's default
    lead: float = 30.0  # first due second, after the first tick (steady state: 30-90 s)
    drain: float = 120.0  # how long after the last due second to wait for the last runs

    @property
    def runs(self) -> int:
        return round(self.rate * self.duration)


# --------------------------------------------------------------------------- EventBridge


@dataclass
class Tick:
    at: float
    started: float
    seconds: float
    result: Any


class FixedRateTimer:
    """Invokes `fire` at first_at + k * period. A boundary that passes while a tick is still
    running is skipped (reserved concurrency 1 and no retries, as in the template)."""

    def __init__(self, period: float, first_at: float, fire: Callable[[], Any]) -> None:
        self.period = period
        self.first_at = first_at
        self.fire = fire
        self.ticks: list[Tick] = []
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventbridge-rule", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=300)

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            at = self.first_at + k * self.period
            if self._stop.wait(max(0.0, at - time.time())):
                return
            started = time.time()
            result = self.fire()
            self.ticks.append(Tick(at, started, time.time() - started, result))
            following = int((time.time() - self.first_at) // self.period) + 1
            self.skipped += max(0, following - k - 1)
            k = following


# --------------------------------------------------------------------------- seeding


def runner_network() -> dict[str, str]:
    """A VPC (DNS hostnames on), a subnet and a security group in moto, as RunTask needs."""
    ec2 = plain_client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="runner", Description="runner", VpcId=vpc)
    return {"RunnerSubnets": subnet, "RunnerSecurityGroups": group["GroupId"]}


@dataclass
class Seeded:
    jobs: dict[str, int] = field(default_factory=dict)  # job_id -> scheduled second
    owners: int = 0
    seconds_jobs: float = 0.0
    seconds_items: float = 0.0


def make_jobs(stack: Stack, count: int) -> tuple[list[Job], str]:
    """`count` jobs with a trivial script (stored); ten consecutive jobs share an owner."""
    s3 = plain_client("s3")
    bucket = stack.physical_names["ScriptsBucket"]
    digest, script_key = S3ScriptStore(s3, bucket).put(SCRIPT)
    now = datetime.now(UTC)
    owners = max(1, count // RUNS_PER_OWNER_BLOCK)
    jobs = [
        Job.model_validate(
            {
                "job_id": uuid.uuid4().hex,
                "user_id": f"owner{(i // RUNS_PER_OWNER_BLOCK) % owners:05d}",
                "name": f"bench-{i:06d}",
                "schedule": FAR_FUTURE,
                "timezone": "UTC",
                "parameters": {"i": i},
                "status": JobStatus.ACTIVE,
                "next_run_at": None,
                "script_sha256": digest,
                "timeout_seconds": 60,
                "max_attempts": 3,
                "created_at": now,
                "updated_at": now,
            }
        )
        for i in range(count)
    ]
    return jobs, script_key


def seed_jobs(
    stack: Stack, meter: AwsMeter, jobs: list[Job], script_key: str, due: list[int]
) -> float:
    """The job items, each showing its schedule item's occurrence as its next run (as the
    API leaves a job: the watcher moves a job on only from the occurrence it shows)."""
    table_name = stack.physical_names["JobsTable"]
    items = [
        dump(job_item(job.model_copy(update={"next_run_at": from_epoch(second)}), script_key))
        for job, second in zip(jobs, due, strict=True)
    ]
    for item in items:
        meter.note_item(table_name, item)
    return batch_write(table_name, items)


def due_seconds(first_due: float, count: int, rate: float) -> list[int]:
    """Each job's due second: `rate` runs a second on average, each owner's ten on one second.
    Cron fires at second 0, so an owner's runs of a minute share their second; spreading them
    evenly (i / rate) split most owners' ten runs over two seconds, and so over two pack
    claims, which no cron schedule does."""
    block = RUNS_PER_OWNER_BLOCK
    return [int(first_due + (i // block) * block / rate) for i in range(count)]


def seed_schedule(stack: Stack, jobs: list[Job], due: list[int]) -> float:
    """One schedule item per job, due at its second."""
    schedule = ScheduleRepository(
        plain_client("dynamodb"), table=stack.physical_names["ScheduleTable"], shards=SHARDS
    )
    items = []
    for job, second in zip(jobs, due, strict=True):
        item = ScheduleItem(
            job_id=job.job_id, user_id=job.user_id, scheduled_at=second, due_at=second
        )
        items.append(dump(schedule.item_of(item)))
    return batch_write(schedule.table, items)


# --------------------------------------------------------------------------- the run


def _cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def prepare(work: Path, scenario: Scenario) -> tuple[Stack, AwsMeter, MeteredFunctions]:
    """The template's resources in moto, the meter on boto3's default session, and the
    pipeline's functions loaded and their services built (a warm container)."""
    parameters = runner_network() if scenario.backend == "ecs" else {}
    stack = build_stack(scenario.name.replace("_", "-"), shards=SHARDS, parameters=parameters)
    meter = meter_for(stack)
    meter.install()
    overrides = {"LOOKAHEAD_SECONDS": str(scenario.lookahead)}
    if scenario.backend == "local":
        stack.overrides = pipeline.local_overrides(
            stack, state_dir=work, retry_base_seconds=30, function_env=overrides
        )
    else:
        stack.overrides = {function: dict(overrides) for function in stack.functions}
    functions = MeteredFunctions(stack)
    pipeline_functions = ["WatcherFunction", "ExecutorFunction"]
    if scenario.backend == "local":
        pipeline_functions += ["RunReportsFunction", "TaskEventsFunction"]
    functions.preload(*pipeline_functions)
    wiring.reset()
    for function, build in (
        ("WatcherFunction", wiring.watcher),
        ("ExecutorFunction", wiring.executor),
        ("RunReportsFunction", wiring.run_outcomes),
    ):
        os.environ.update(stack.environment(function))
        build()
    return stack, meter, functions


def seed(
    stack: Stack, meter: AwsMeter, scenario: Scenario
) -> tuple[dict[str, int], float, dict[str, float]]:
    """Jobs and their schedule items, due from `lead` s after the first tick (planned after
    the writes, estimated). Returns {job_id: due second}, the first tick's time and the
    seconds seeding took."""
    say(f"{scenario.name}: seeding {scenario.runs} jobs")
    jobs, script_key = make_jobs(stack, scenario.runs)
    # Writing a job or an item into moto takes ~0.3-0.6 ms (batches of 25): the first tick is
    # planned after both are written.
    first_tick = time.time() + scenario.runs * 0.0006 * 2 + 1
    first_due = first_tick + scenario.lead
    due = due_seconds(first_due, len(jobs), scenario.rate)
    seconds_items = seed_schedule(stack, jobs, due)
    seconds_jobs = seed_jobs(stack, meter, jobs, script_key, due)
    first_tick = max(first_tick, time.time() + 0.2)
    expected = {job.job_id: second for job, second in zip(jobs, due, strict=True)}
    say(
        f"{scenario.name}: {len(jobs)} jobs in {seconds_jobs:.1f} s, schedule items in "
        f"{seconds_items:.1f} s; runs due from +{first_due - time.time():.0f} s for "
        f"{scenario.duration:.0f} s at {scenario.rate:g}/s"
    )
    return expected, first_tick, {"jobs_s": seconds_jobs, "schedule_items_s": seconds_items}


def run_scenario(mode: Mode, scenario: Scenario) -> dict[str, Any]:
    work = mode.results_dir / "work" / scenario.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with moto_server(work / "moto.log") as moto, function_logs(work / "functions.log"):
        stack, meter, functions = prepare(work, scenario)
        expected, first_tick, seeding = seed(stack, meter, scenario)
        meter.reset()
        functions.stats.clear()
        moto_log = MotoLog(work / "moto.log", stack.physical_names["ScriptsBucket"])
        moto_log.mark()
        moto_cpu, own_cpu = _cpu_of(moto.pid), time.process_time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        watcher = stack.events_of("Schedule")
        (watcher_function,) = watcher
        timer = FixedRateTimer(
            scenario.tick,
            first_tick,
            lambda: functions.invoke(watcher_function, pipeline.scheduled_event()),
        )
        # One batch at a time per queue, in this process: the figures stay comparable with
        # earlier passes (the local stack runs several, in its worker processes).
        pollers = pipeline.sqs_pollers(stack, functions.invoke, concurrency=1)
        if scenario.backend == "local":
            pollers.append(pipeline.task_events_poller(stack, functions.invoke, concurrency=1))
        else:  # dispatch only: no reports will come
            pollers = [p for p in pollers if p.name.startswith("ExecutorFunction")]
        for poller in pollers:
            poller.start()
        timer.start()
        started = time.time()
        runs_table = stack.physical_names["RunsTable"]
        try:
            wait_for_runs(mode, scenario, runs_table, len(expected), max(expected.values()))
        finally:
            timer.stop()
            for poller in pollers:
                poller.stop()
        elapsed = time.time() - started
        own_cpu = time.process_time() - own_cpu
        moto_cpu = _cpu_of(moto.pid) - moto_cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runner_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        s3_requests = moto_log.s3_requests()
        sizes = mean_item_sizes(stack)
        runs = scan_runs(runs_table)
        dynamo = meter.finalize(sizes)
        calls = meter.calls_by()

    return analyse(
        mode,
        scenario,
        expected=expected,
        runs=runs,
        meter=meter,
        dynamo=dynamo,
        calls=calls,
        functions=functions,
        timer=timer,
        s3_requests=s3_requests,
        sizes=sizes,
        cpu={"own_process": own_cpu, "moto": moto_cpu, "runners": runner_cpu},
        elapsed=elapsed,
        seeding=seeding,
    )


def wait_for_runs(
    mode: Mode, scenario: Scenario, runs_table: str, count: int, last_due: float
) -> None:
    """Until every run is done (terminal; dispatched for ecs) or the drain time is over."""
    wanted = TERMINAL if scenario.backend == "local" else DISPATCHED_OR_LATER
    started = time.time()
    while True:
        time.sleep(mode.pick(5.0, 1.0))
        statuses = Counter(run["status"] for run in scan_runs(runs_table))
        done = sum(n for s, n in statuses.items() if s in wanted)
        say(f"{scenario.name}: +{time.time() - started:4.0f} s {dict(statuses)}")
        if done >= count or time.time() > last_due + scenario.drain:
            return


# --------------------------------------------------------------------------- the figures


def analyse(
    mode: Mode,
    scenario: Scenario,
    *,
    expected: dict[str, int],
    runs: list[dict[str, Any]],
    meter: AwsMeter,
    dynamo: dict[str, dict[str, Any]],
    calls: dict[str, dict[str, int]],
    functions: MeteredFunctions,
    timer: FixedRateTimer,
    s3_requests: Counter[str],
    sizes: dict[str, float],
    cpu: dict[str, float],
    elapsed: float,
    seeding: dict[str, float],
) -> dict[str, Any]:
    n = len(expected)
    by_key = {(r["job_id"], int(r["execution_time"])): r for r in runs}
    wanted = TERMINAL if scenario.backend == "local" else DISPATCHED_OR_LATER
    reached = [by_key.get((job, second)) for job, second in expected.items()]
    # Lost: no run record, or a record that left the pipeline without finishing. A run still
    # on its way (queued, dispatched, running) when the drain time ran out is late, not lost.
    on_the_way = {"PENDING", "QUEUED", "DISPATCHING", "DISPATCHED", "RUNNING"} - wanted
    lost = sum(1 for r in reached if r is None or (r["status"] not in wanted | on_the_way))
    unfinished = sum(1 for r in reached if r is not None and r["status"] in on_the_way)
    statuses = Counter(r["status"] if r else "MISSING" for r in reached)
    present = [r for r in reached if r is not None]
    retried = sum(1 for r in present if int(r.get("attempt", 1)) > 1)
    duplicate_manifests = sum(1 for c in meter.manifest_refs.values() if c > 1)
    duplicate_run_tasks = sum(1 for c in meter.run_task_refs.values() if c > 1)

    start_lag = [float(r["start_lag_ms"]) for r in present if "start_lag_ms" in r]
    dispatch_lead = [
        int(r["execution_time"]) - at
        for r in present
        if (at := _epoch(r.get("dispatched_at"))) is not None
    ]
    queued_lead = [
        int(r["execution_time"]) - at
        for r in present
        if (at := _epoch(r.get("queued_at"))) is not None
    ]
    events = [
        at
        for r in present
        if (at := _epoch(r.get("started_at" if scenario.backend == "local" else "dispatched_at")))
    ]
    first_due, last_due = min(expected.values()), max(expected.values())
    achieved = len(events) / max(scenario.duration, max(events) - first_due) if events else 0.0
    dispatch_times = sorted(
        at for r in present if (at := _epoch(r.get("dispatched_at"))) is not None
    )
    peak = _peak_rate(dispatch_times, window=10.0)

    # Per run: calls by service (every component that stands for something billed on AWS).
    billed = {k: v for k, v in calls.items() if _billed_component(k)}
    per_service: Counter[str] = Counter()
    for ops in billed.values():
        for op, count in ops.items():
            per_service[op] += count
    dynamo_billed = {k: v for k, v in dynamo.items() if _billed_component(k)}
    reads = sum(v["read_requests"] for v in dynamo_billed.values())
    writes = sum(v["write_requests"] for v in dynamo_billed.values())
    rru = sum(v["rru"] for v in dynamo_billed.values())
    wru = sum(v["wru"] for v in dynamo_billed.values())
    wru_by_write = {
        who: {label: units / n for label, units in sorted(v.get("wru_by_write", {}).items())}
        for who, v in dynamo_billed.items()
    }
    sqs = sum(c for op, c in per_service.items() if op.startswith("sqs."))
    sqs -= sum(c for who, c in meter.empty_receives.items() if _billed_component(who))
    sqs_billed = sum(c for who, c in meter.sqs_billed.items() if _billed_component(who))
    run_tasks = per_service.get("ecs.RunTask", 0)
    s3_total = sum(s3_requests.values())
    s3_puts = sum(c for k, c in s3_requests.items() if k.startswith(("PUT", "POST")))
    s3_free = sum(c for k, c in s3_requests.items() if k.startswith("DELETE"))  # not billed
    report_objects = sum(c for k, c in s3_requests.items() if k == "PUT reports/")
    functions_cpu = {
        name: {
            "invocations": stats.invocations,
            "cpu_ms_total": stats.cpu_seconds * 1000,
            "cpu_ms_per_run": stats.cpu_seconds * 1000 / n,
            "cpu_ms_per_invocation": stats.cpu_seconds * 1000 / max(1, stats.invocations),
            "wall_ms_per_invocation": stats.wall_seconds * 1000 / max(1, stats.invocations),
        }
        for name, stats in functions.stats.items()
    }
    our_cpu_ms = sum(f["cpu_ms_total"] for f in functions_cpu.values()) / n
    per_run = {
        "dynamodb_reads": reads / n,
        "dynamodb_writes": writes / n,
        "dynamodb_rru": rru / n,
        "dynamodb_wru": wru / n,
        "sqs_requests": sqs / n,  # empty receives (idle pollers) left out
        "sqs_billed_requests": sqs_billed / n,
        "sqs_sends_by_s3_notifications": report_objects / n,
        "run_task_calls": run_tasks / n,
        "s3_requests": s3_total / n,
        "s3_put_class": s3_puts / n,
        "s3_get_class": (s3_total - s3_puts - s3_free) / n,
        "our_cpu_ms": our_cpu_ms,
        "lambda_invocations": {k: v["invocations"] / n for k, v in functions_cpu.items()},
    }
    ticks = [
        {"at": t.at, "late_s": t.started - t.at, "seconds": t.seconds, "result": t.result}
        for t in timer.ticks
    ]
    figures = {
        "scenario": scenario.__dict__ | {"runs": n},
        "backend": scenario.backend,
        "seeding_s": seeding,
        "elapsed_s": elapsed,
        "runs_lost": lost,
        "runs_unfinished_at_cutoff": unfinished,
        "statuses": dict(statuses),
        "retried_runs": retried,
        "duplicate_dispatches": {
            "runs_in_two_or_more_manifests": duplicate_manifests,
            "runs_in_two_or_more_run_task_calls": duplicate_run_tasks,
        },
        "offered_runs_per_s": scenario.rate,
        "achieved_runs_per_s": achieved,
        "peak_dispatch_runs_per_s_10s": peak,
        "start_lag_ms": summary(start_lag),
        "on_time_share_2s": (sum(1 for v in start_lag if v <= 2000) / len(start_lag))
        if start_lag
        else None,
        "dispatch_lead_s": summary(dispatch_lead),
        "queued_lead_s": summary(queued_lead),
        "dispatched_after_due": sum(1 for v in dispatch_lead if v < 0),
        "ticks": ticks,
        "ticks_skipped": timer.skipped,
        "per_run": per_run,
        "calls_by_component": calls,
        "empty_receives": dict(meter.empty_receives),
        "dynamodb_by_component": dynamo,
        "dynamodb_wru_by_write_per_run": wru_by_write,
        "s3_requests_by_kind": dict(s3_requests),
        "functions": functions_cpu,
        "process_cpu_s": cpu,
        "process_cpu_ms_per_run": {k: v * 1000 / n for k, v in cpu.items()},
        "mean_item_bytes": sizes,
        "span_s": {"first_due": first_due, "last_due": last_due},
    }
    figures["plot"] = _plot(mode, scenario, start_lag, dispatch_lead)
    write_result(mode, scenario.name, figures, _markdown(scenario, figures))
    return figures


def _billed_component(name: str) -> bool:
    """Calls made by a function or an event source mapping's poller are billed on AWS; those of
    the local stand-ins (the local backend's task-end reporter) and of the bench are not."""
    return name.endswith(("Function", "-poller")) and name != "task-events-poller"


def _peak_rate(times: list[float], window: float) -> float:
    best, low = 0, 0
    for high, at in enumerate(times):
        while at - times[low] > window:
            low += 1
        best = max(best, high - low + 1)
    return best / window


def _plot(mode: Mode, scenario: Scenario, start_lag: list[float], lead: list[float]) -> str:
    if scenario.backend == "local":
        path = plots.cdf(
            {f"local backend, {scenario.rate:g} runs/s offered": start_lag},
            mode.results_dir / "start_lag_cdf.png",
            "Start lag: scheduled second -> script start (local runner)",
            "start lag (ms)",
        )
    else:
        path = plots.cdf(
            {f"ecs backend, {scenario.rate:g} runs/s offered": lead},
            mode.results_dir / "dispatch_lead_cdf.png",
            "Dispatch lead: RunTask before the scheduled second (moto ECS)",
            "seconds before the scheduled second (negative: late)",
        )
    return path.name


def _markdown(scenario: Scenario, f: dict[str, Any]) -> str:
    per = f["per_run"]
    lag, lead = f["start_lag_ms"], f["dispatch_lead_s"]
    rows = [
        (
            "DynamoDB reads / writes (requests)",
            f"{per['dynamodb_reads']:.2f} / {per['dynamodb_writes']:.2f}",
        ),
        ("DynamoDB RRU / WRU", f"{per['dynamodb_rru']:.2f} / {per['dynamodb_wru']:.2f}"),
        (
            "SQS requests (billed)",
            f"{per['sqs_requests']:.2f} ({per['sqs_billed_requests']:.2f})"
            + (
                f" + {per['sqs_sends_by_s3_notifications']:.2f} sent by S3 notifications"
                if per["sqs_sends_by_s3_notifications"]
                else ""
            ),
        ),
        ("RunTask calls", f"{per['run_task_calls']:.3f}"),
        (
            "S3 requests (PUT-class / GET-class)",
            f"{per['s3_requests']:.2f} ({per['s3_put_class']:.2f} / {per['s3_get_class']:.2f})",
        ),
        ("our CPU ms (all functions)", f"{per['our_cpu_ms']:.2f}"),
    ]
    rows += [
        (
            f"  {name} CPU ms",
            f"{v['cpu_ms_per_run']:.2f} ({v['invocations']} invocations, "
            f"{v['cpu_ms_per_invocation']:.1f} ms CPU / "
            f"{v['wall_ms_per_invocation']:.0f} ms wall each)",
        )
        for name, v in f["functions"].items()
    ]
    process = f["process_cpu_ms_per_run"]
    rows.append(("moto CPU ms (the emulator)", f"{process['moto']:.1f}"))
    if scenario.backend == "local":
        rows.append(("runner + script CPU ms (subprocesses)", f"{process['runners']:.1f}"))
    ticks = f["ticks"]
    tick_text = "; ".join(
        f"{t['seconds']:.1f} s ({(t['result'] or {}).get('items', '?')} items)" for t in ticks
    )
    lines = [
        f"## Scheduling, {scenario.backend} backend: {scenario.rate:g} runs/s offered",
        f"{f['scenario']['runs']} runs due over {scenario.duration:.0f} s, from "
        f"{scenario.lead:.0f} s after the first watcher tick; tick every {scenario.tick:.0f} s, "
        f"lookahead {scenario.lookahead} s; {SHARDS} schedule shards; handlers in-process "
        f"against moto server.",
        f"**Achieved {f['achieved_runs_per_s']:.1f} runs/s** (peak dispatch "
        f"{f['peak_dispatch_runs_per_s_10s']:.1f} runs/s over 10 s); **runs lost "
        f"{f['runs_lost']}** (still on their way when the drain time ended: "
        f"{f['runs_unfinished_at_cutoff']}); duplicate dispatches "
        f"{f['duplicate_dispatches']['runs_in_two_or_more_manifests']}; retried runs "
        f"{f['retried_runs']}; statuses {f['statuses']}.",
    ]
    if scenario.backend == "local":
        lines.append(
            f"Start lag (scheduled second -> script start): p50 {fmt(lag['p50'], 0)} ms, p99 "
            f"{fmt(lag['p99'], 0)} ms, max {fmt(lag['max'], 0)} ms; within 2 s: "
            f"{(f['on_time_share_2s'] or 0) * 100:.1f} %."
        )
    lines.append(
        f"Dispatched (task started) before the scheduled second by: p50 {fmt(lead['p50'])} s, "
        f"least {fmt(lead['min'])} s; dispatched after it: {f['dispatched_after_due']} runs."
    )
    lines.append(f"Watcher ticks: {tick_text}; skipped boundaries {f['ticks_skipped']}.")
    lines.append(table(["per run", "value"], rows))
    lines.append(f"![plot]({f['plot']})")
    return "\n\n".join(lines)


# --------------------------------------------------------------------------- entry points


def run_local(mode: Mode) -> dict[str, Any]:
    scenario = Scenario(
        name="scheduling_local",
        backend="local",
        rate=mode.pick(LOCAL_RATE, 10.0),
        duration=mode.pick(float(os.environ.get("BENCH_LOCAL_DURATION") or 60.0), 6.0),
        tick=mode.pick(60.0, 2.0),
        lookahead=mode.pick(90, 4),
        lead=mode.pick(30.0, 1.5),
        drain=mode.pick(90.0, 10.0),
    )
    return run_scenario(mode, scenario)


def run_ecs(mode: Mode) -> dict[str, Any]:
    scenario = Scenario(
        name="scheduling_ecs",
        backend="ecs",
        rate=100.0,
        duration=mode.pick(30.0, 1.0),
        tick=mode.pick(60.0, 2.0),
        lookahead=mode.pick(90, 4),
        lead=mode.pick(30.0, 1.5),
        drain=mode.pick(180.0, 10.0),
    )
    return run_scenario(mode, scenario)


# The highest rate the local backend carried on time on the 2-core machine (see
# docs/performance.md): runner subprocesses and moto share the two cores.
LOCAL_RATE = float(os.environ.get("BENCH_LOCAL_RATE") or 12.0)
