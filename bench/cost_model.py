"""Cost model: dollars per million runs, from the calls the scheduling benchmarks counted and
AWS list prices (us-east-1). Reads bench/results/scheduling_ecs.json (watcher and executor
with the production backend) and scheduling_local.json (the run-status path: runner reports
through S3 and SQS, run_reports and task_events; and the runner's S3 requests).

What is counted and what is assumed is written into the result: Lambda's billed duration is
not measurable here (moto answers slower than DynamoDB and this CPU is not Lambda's), so it is
our measured CPU time scaled to a 512 MB function's CPU share, plus the counted AWS calls times
an assumed AWS latency each.
"""

from __future__ import annotations

from typing import Any

from bench import plots
from bench.common import Mode, read_result, say, table, write_result

PRICES = {
    "date": "2026-11-27 (us-east-1 list prices as published since the DynamoDB on-demand price "
    "cut of November 2024; free tiers ignored)",
    "lambda_arm64_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "sqs_fifo_request": 0.50 / 1e6,  # per 64 KB chunk
    "sqs_standard_request": 0.40 / 1e6,
    "dynamodb_wru": 0.625 / 1e6,  # on-demand write request unit
    "dynamodb_rru": 0.125 / 1e6,  # on-demand read request unit
    "s3_put_class": 0.005 / 1e3,  # PUT, COPY, POST, LIST
    "s3_get_class": 0.0004 / 1e3,  # GET and others
    "eventbridge_scheduled_rule": 0.0,
    "eventbridge_aws_service_events": 0.0,  # ECS task state changes on the default bus
    "ecs_run_task_api": 0.0,
    "fargate_arm64_vcpu_hour": 0.03238,
    "fargate_arm64_gb_hour": 0.00356,
    "eventbridge_scheduler_invocation": 1.00 / 1e6,
}

LAMBDA_MEMORY_GB = 0.5  # template Globals: MemorySize 512
FULL_VCPU_MB = 1769  # Lambda gives one full vCPU at 1,769 MB; CPU scales with memory
CPU_STRETCH = FULL_VCPU_MB / 512
# Assumed in-region latency of each call (ms); the watcher overlaps its DynamoDB calls over
# 16 threads (watcher_workers), the other functions make them one after another.
LATENCY_MS = {
    "dynamodb.GetItem": 5,
    "dynamodb.PutItem": 6,
    "dynamodb.UpdateItem": 6,
    "dynamodb.DeleteItem": 6,
    "dynamodb.Query": 8,
    "dynamodb.BatchGetItem": 10,
    "dynamodb.TransactWriteItems": 15,
    "sqs.SendMessageBatch": 15,
    "sqs.SendMessage": 10,
    "s3.PutObject": 30,
    "s3.GetObject": 15,
    "ecs.RunTask": 150,
}
CONCURRENCY = {"WatcherFunction": 16}
# Fargate: the task size of the template (RunnerCpu 512, RunnerMemory 1024) and when it runs,
# with the lead in force (docs/architecture.md, "On time"): a run is taken by the first tick
# whose window reaches it, L = S + D + I + J = 170 s ahead at most, ticks I = 60 s apart, so it
# is queued L - I .. L ahead (140 s on average); its task is up D + S = 95 s after that (a task
# that starts in the expected S), then waited for the second: 15-75 s, 45 s on average, until
# 2026-12-02. Since then the executor holds a pack that comes more than A = S + M (M = 20 s)
# before its second back in the queue until A ahead, unless it is less than 10 s early: a held
# pack's task waits A - D - S = 15 s; one queued A .. A + 10 s ahead (a sixth of them) 15-25 s.
TASK_VCPU, TASK_GB = 0.5, 1.0
TASK_START_S, DISPATCH_S, TICK_S, TICK_DELAY_S = 90.0, 5.0, 60.0, 15.0
HOLD_MARGIN_S, MIN_HOLD_S = 20.0, 10.0
LEAD_S = TASK_START_S + DISPATCH_S + TICK_S + TICK_DELAY_S
AHEAD_S = TASK_START_S + HOLD_MARGIN_S
IDLE_MIN_S = AHEAD_S - DISPATCH_S - TASK_START_S
IDLE_MAX_S = IDLE_MIN_S + MIN_HOLD_S
_UNHELD = MIN_HOLD_S / TICK_S
MEAN_IDLE_S = (1 - _UNHELD) * IDLE_MIN_S + _UNHELD * (IDLE_MIN_S + IDLE_MAX_S) / 2
UNHELD_MEAN_IDLE_S = LEAD_S - TICK_S / 2 - DISPATCH_S - TASK_START_S  # before the hold: 45 s
REPORT_S, MINIMUM_S = 5.0, 60.0
# The control plane before issue 12 (docs/performance.md, full `make bench` of 2026-11-27:
# claim, started, output and finished objects per run; six run record writes), per million runs.
BEFORE = {
    "date": "2026-11-27, full make bench (commit of bench/results/cost_model.json then)",
    "per_run": {"s3_put_class": 4.12, "dynamodb_wru": 18.06, "sqs_standard_requests": 2.65},
    "per_million": {
        "Lambda watcher": 0.10,
        "Lambda executor": 0.39,
        "Lambda run_reports + task_events": 0.78,
        "DynamoDB writes": 11.28,
        "DynamoDB reads": 0.63,
        "SQS FIFO (dispatch)": 0.02,
        "SQS standard (reports)": 1.06,
        "S3 PUT-class": 20.58,
        "S3 GET-class": 1.54,
        "EventBridge (rule, ECS events)": 0.0,
    },
    "total": 36.38,
}
# The same code base just before issue 12's changes (commit ffe73a2: the quotas' transactions in
# place, a small output already inside `finished`), measured with `make bench-quick` on
# 2026-11-30: what the changes are measured against.
BASE = {
    "date": "2026-11-30, make bench-quick at ffe73a2 (before issue 12's changes)",
    "per_run": {"s3_put_class": 3.10, "dynamodb_wru": 26.62, "sqs_standard_requests": 2.60},
    "per_million": {
        "Lambda watcher": 0.14,
        "Lambda executor": 0.46,
        "Lambda run_reports + task_events": 0.91,
        "DynamoDB writes": 16.64,
        "DynamoDB reads": 0.70,
        "SQS FIFO (dispatch)": 0.01,
        "SQS standard (reports)": 1.04,
        "S3 PUT-class": 15.50,
        "S3 GET-class": 1.40,
        "EventBridge (rule, ECS events)": 0.0,
    },
    "total": 36.81,
}


def lambda_costs(result: dict[str, Any], functions: list[str]) -> dict[str, dict[str, float]]:
    """Per function: invocations, estimated billed ms and dollars per run."""
    runs = result["scenario"]["runs"]
    out = {}
    for function in functions:
        stats = result["functions"].get(function)
        if not stats:
            continue
        calls = result["calls_by_component"].get(function, {})
        io_ms = sum(LATENCY_MS.get(op, 10) * n for op, n in calls.items()) / runs
        io_ms /= CONCURRENCY.get(function, 1)
        cpu_ms = stats["cpu_ms_per_run"] * CPU_STRETCH
        invocations = stats["invocations"] / runs
        billed_ms = cpu_ms + io_ms
        dollars = (
            invocations * PRICES["lambda_request"]
            + billed_ms / 1000 * LAMBDA_MEMORY_GB * PRICES["lambda_arm64_gb_second"]
        )
        out[function] = {
            "invocations_per_run": invocations,
            "cpu_ms_per_run_measured": stats["cpu_ms_per_run"],
            "billed_ms_per_run_estimated": billed_ms,
            "dollars_per_run": dollars,
        }
    return out


def dynamo_units(result: dict[str, Any], functions: list[str]) -> tuple[float, float]:
    runs = result["scenario"]["runs"]
    usage = result["dynamodb_by_component"]
    rru = sum(usage.get(f, {}).get("rru", 0.0) for f in functions) / runs
    wru = sum(usage.get(f, {}).get("wru", 0.0) for f in functions) / runs
    return rru, wru


def sqs_requests(result: dict[str, Any], components: list[str]) -> float:
    """Billed requests of these components per run (calls minus idle receives)."""
    runs = result["scenario"]["runs"]
    total = 0
    for who in components:
        calls = result["calls_by_component"].get(who, {})
        total += sum(n for op, n in calls.items() if op.startswith("sqs."))
        total -= result.get("empty_receives", {}).get(who, 0)
    return total / runs


def fargate_per_run(
    script_seconds: float, runs_per_task: float, idle_seconds: float = MEAN_IDLE_S
) -> float:
    seconds = max(MINIMUM_S, idle_seconds + script_seconds + REPORT_S)
    hourly = (
        TASK_VCPU * PRICES["fargate_arm64_vcpu_hour"] + TASK_GB * PRICES["fargate_arm64_gb_hour"]
    )
    return seconds / 3600 * hourly / runs_per_task


def run(mode: Mode) -> dict[str, Any]:
    ecs = read_result(mode, "scheduling_ecs")
    local = read_result(mode, "scheduling_local")
    if ecs is None or local is None:
        say("cost_model: needs scheduling_ecs and scheduling_local results; run them first")
        return {}
    dispatch = ["WatcherFunction", "ExecutorFunction"]
    status = ["RunReportsFunction", "TaskEventsFunction"]
    lambdas = lambda_costs(ecs, dispatch) | lambda_costs(local, status)
    rru_d, wru_d = dynamo_units(ecs, dispatch)
    rru_s, wru_s = dynamo_units(local, status)
    fifo = sqs_requests(ecs, ["WatcherFunction", "ExecutorFunction-poller"])
    standard = sqs_requests(local, ["RunReportsFunction-poller"])
    notifications = local["per_run"]["sqs_sends_by_s3_notifications"]
    s3_put, s3_get = local["per_run"]["s3_put_class"], local["per_run"]["s3_get_class"]
    million = 1e6
    items = {
        "Lambda watcher": lambdas["WatcherFunction"]["dollars_per_run"] * million,
        "Lambda executor": lambdas["ExecutorFunction"]["dollars_per_run"] * million,
        "Lambda run_reports + task_events": sum(
            lambdas[f]["dollars_per_run"] for f in status if f in lambdas
        )
        * million,
        "DynamoDB writes": (wru_d + wru_s) * PRICES["dynamodb_wru"] * million,
        "DynamoDB reads": (rru_d + rru_s) * PRICES["dynamodb_rru"] * million,
        "SQS FIFO (dispatch)": fifo * PRICES["sqs_fifo_request"] * million,
        "SQS standard (reports)": (standard + notifications)
        * PRICES["sqs_standard_request"]
        * million,
        "S3 PUT-class": s3_put * PRICES["s3_put_class"] * million,
        "S3 GET-class": s3_get * PRICES["s3_get_class"] * million,
        "EventBridge (rule, ECS events)": 0.0,
    }
    total = sum(items.values())
    runs_per_task = ecs["scenario"]["runs"] / max(
        1, ecs["calls_by_component"].get("ExecutorFunction", {}).get("ecs.RunTask", 1)
    )
    fargate = {
        f"{label}, script {seconds:g} s": fargate_per_run(seconds, per_task) * million
        for seconds in (1.0, 60.0)
        for label, per_task in (("packing on (10 runs/task)", 10.0), ("packing off", 1.0))
    }
    fixed_month = fixed_costs()
    hourly = (
        TASK_VCPU * PRICES["fargate_arm64_vcpu_hour"] + TASK_GB * PRICES["fargate_arm64_gb_hour"]
    )
    idle = {
        "lead_s": LEAD_S,
        "task_idle_s_min_mean_max": [IDLE_MIN_S, MEAN_IDLE_S, IDLE_MAX_S],
        "idle_s_per_run_packed": MEAN_IDLE_S / 10,
        "idle_dollars_per_million_runs_packed": MEAN_IDLE_S / 3600 * hourly / 10 * million,
        "idle_dollars_per_million_runs_unpacked": MEAN_IDLE_S / 3600 * hourly * million,
        "dispatch_ahead_s": AHEAD_S,
        "before_the_hold_mean_idle_s": UNHELD_MEAN_IDLE_S,
        "before_the_hold_idle_dollars_per_million_runs_packed": UNHELD_MEAN_IDLE_S
        / 3600
        * hourly
        / 10
        * million,
    }
    wru_by_write = _wru_by_write(ecs, dispatch) | _wru_by_write(local, status)
    # The same 1 s script run by EventBridge Scheduler invoking a Lambda function (512 MB arm64,
    # the size of ours; 1 s billed): the comparison a platform team makes.
    lambda_1s = (PRICES["lambda_request"] + 1.0 * 0.5 * PRICES["lambda_arm64_gb_second"]) * million
    compare = {
        "EventBridge Scheduler + Lambda (512 MB, 1 s)": PRICES["eventbridge_scheduler_invocation"]
        * million
        + lambda_1s,
        "this scheduler, packed (control plane + Fargate, 1 s script)": total
        + fargate_per_run(1.0, 10.0) * million,
        "this scheduler, unpacked": total + fargate_per_run(1.0, 1.0) * million,
    }
    before_rows = [
        (
            name,
            f"${BEFORE['per_million'].get(name, 0.0):,.2f}",
            f"${BASE['per_million'].get(name, 0.0):,.2f}",
            f"${value:,.2f}",
            f"{value - BASE['per_million'].get(name, 0.0):+,.2f}",
        )
        for name, value in items.items()
    ]
    before_rows.append(
        (
            "**total control plane**",
            f"**${BEFORE['total']:,.2f}**",
            f"**${BASE['total']:,.2f}**",
            f"**${total:,.2f}**",
            f"**{total - BASE['total']:+,.2f}**",
        )
    )
    for label, key in (("S3 PUT-class per run", "s3_put_class"), ("WRU per run", "dynamodb_wru")):
        now = s3_put if key == "s3_put_class" else wru_d + wru_s
        before_rows.append(
            (
                label,
                f"{BEFORE['per_run'][key]:.2f}",
                f"{BASE['per_run'][key]:.2f}",
                f"{now:.2f}",
                f"{now - BASE['per_run'][key]:+.2f}",
            )
        )
    write_rows = [
        (f"{who.removesuffix('Function')}: {label}", f"{units:.2f}")
        for who, labels in wru_by_write.items()
        for label, units in sorted(labels.items(), key=lambda kv: -kv[1])
    ]
    write_rows.append(
        ("**total**", f"**{sum(sum(v.values()) for v in wru_by_write.values()):.2f}**")
    )
    plot = plots.bars(
        items
        | {
            "EventBridge Scheduler (for scale)": PRICES["eventbridge_scheduler_invocation"]
            * million
        },
        mode.results_dir / "cost_per_million_runs.png",
        f"Control plane: ${total:.2f} per million runs (itemised)",
        "$ per million runs",
    )
    rows = [(name, f"${value:,.3f}") for name, value in items.items()]
    rows.append(("**total control plane**", f"**${total:,.2f}**"))
    rows.append(("Amazon EventBridge Scheduler, for comparison (invocations only)", "$1.00"))
    lambda_rows = [
        (
            f.removesuffix("Function"),
            f"{v['invocations_per_run']:.3f}",
            f"{v['cpu_ms_per_run_measured']:.2f}",
            f"{v['billed_ms_per_run_estimated']:.1f}",
        )
        for f, v in lambdas.items()
    ]
    markdown = "\n\n".join(
        [
            "## Cost per million runs (us-east-1 list prices)",
            f"Prices as of {PRICES['date']}: Lambda arm64 $0.0000133334/GB-s and $0.20/M "
            "requests; SQS FIFO $0.50/M and standard $0.40/M requests (64 KB chunks); DynamoDB "
            "on-demand $0.625/M WRU, $0.125/M RRU; S3 $0.005/1k PUT, $0.0004/1k GET; "
            "EventBridge scheduled rule and AWS service events free; Fargate arm64 "
            "$0.03238/vCPU-h, $0.00356/GB-h.",
            f"Per run (counted): DynamoDB {rru_d + rru_s:.2f} RRU and {wru_d + wru_s:.2f} WRU; "
            f"SQS {fifo:.2f} FIFO + {standard + notifications:.2f} standard requests; S3 "
            f"{s3_put:.2f} PUT-class + {s3_get:.2f} GET-class; {runs_per_task:.1f} runs per "
            "RunTask.",
            table(["item", "$ per million runs"], rows),
            f"Before and after issue 12. Documented: {BEFORE['date']}, before the quotas' "
            f"transactions. Base: {BASE['date']}. The change is against the base.",
            table(["item", "documented", "base", "after", "change"], before_rows),
            "DynamoDB WRU per run by write (watcher and executor from the ecs run, the status "
            "path from the local run; updates priced at the table's mean item size):",
            table(["function: write", "WRU per run"], write_rows),
            "Lambda (512 MB) billed time is estimated: measured CPU x "
            f"{CPU_STRETCH:.2f} (a 512 MB function gets 512/1,769 of a vCPU) + counted calls x "
            "assumed latency (DynamoDB 5-15 ms, SQS 15 ms, S3 15-30 ms, RunTask 150 ms; the "
            "watcher's calls overlap 16 at a time).",
            table(
                [
                    "function",
                    "invocations per run",
                    "CPU ms per run (measured)",
                    "billed ms per run (estimated)",
                ],
                lambda_rows,
            ),
            f"Fixed, whatever the number of runs: about ${fixed_month['total']:.2f} a month "
            "(watcher ticks, idle queue polling).",
            "**Fargate compute per million runs** (task 0.5 vCPU / 1 GB arm64, billed per "
            f"second with a 1-minute minimum). With the lead in force (L = {LEAD_S:.0f} s, a "
            f"task that starts in the expected {TASK_START_S:.0f} s) and a pack held in the "
            f"queue until {AHEAD_S:.0f} s before its second, a task waits "
            f"{IDLE_MIN_S:.0f}-{IDLE_MAX_S:.0f} s for its runs' second, {MEAN_IDLE_S:.1f} s "
            f"on average: {idle['idle_s_per_run_packed']:.2f} idle seconds per run packed 10 "
            f"to a task (${idle['idle_dollars_per_million_runs_packed']:,.2f} per million "
            f"runs), {MEAN_IDLE_S:.1f} s unpacked "
            f"(${idle['idle_dollars_per_million_runs_unpacked']:,.2f}); before the hold "
            f"{UNHELD_MEAN_IDLE_S:.0f} s on average "
            f"(${idle['before_the_hold_idle_dollars_per_million_runs_packed']:,.2f} packed):",
            table(
                ["case", "$ per million runs"],
                [(k, f"${v:,.0f}") for k, v in fargate.items()],
            ),
            "The same 1 s script, per million runs, against EventBridge Scheduler invoking a "
            "Lambda function ($1.00 per million invocations + Lambda arm64 512 MB for 1 s):",
            table(["how", "$ per million runs"], [(k, f"${v:,.2f}") for k, v in compare.items()]),
            f"![cost]({plot.name})",
        ]
    )
    data = {
        "prices": PRICES,
        "assumptions": {
            "lambda_memory_gb": LAMBDA_MEMORY_GB,
            "cpu_stretch": CPU_STRETCH,
            "latency_ms": LATENCY_MS,
            "concurrency": CONCURRENCY,
            "fargate": {
                "task_vcpu": TASK_VCPU,
                "task_gb": TASK_GB,
                "lead_s": LEAD_S,
                "dispatch_ahead_s": AHEAD_S,
                "mean_idle_s": MEAN_IDLE_S,
                "report_s": REPORT_S,
                "minimum_s": MINIMUM_S,
            },
        },
        "per_run": {
            "dynamodb_rru": rru_d + rru_s,
            "dynamodb_wru": wru_d + wru_s,
            "sqs_fifo_requests": fifo,
            "sqs_standard_requests": standard + notifications,
            "s3_put_class": s3_put,
            "s3_get_class": s3_get,
            "runs_per_run_task": runs_per_task,
            "lambda": lambdas,
        },
        "control_plane_per_million_runs": items,
        "before": BEFORE,
        "base": BASE,
        "dynamodb_wru_by_write_per_run": wru_by_write,
        "fargate_idle": idle,
        "comparison_1s_script_per_million": compare,
        "control_plane_total_per_million_runs": total,
        "eventbridge_scheduler_per_million": 1.00,
        "fargate_per_million_runs": fargate,
        "fixed_per_month": fixed_month,
        "plot": plot.name,
    }
    write_result(mode, "cost_model", data, markdown)
    return data


def _wru_by_write(result: dict[str, Any], functions: list[str]) -> dict[str, dict[str, float]]:
    found = result.get("dynamodb_wru_by_write_per_run", {})
    return {f: found[f] for f in functions if f in found}


def fixed_costs(shards: int = 16) -> dict[str, float]:
    """A month of ticks with nothing due, and Lambda's pollers idling on the two queues."""
    ticks = 30 * 24 * 60
    queries = shards * 2 + shards  # two hour buckets at worst, plus the in-flight sweep
    rru = ticks * (queries * 0.5 + 1)  # eventually consistent minimum; the cursor's get
    wru = ticks * 1  # the cursor's put
    lambda_dollars = ticks * (
        PRICES["lambda_request"] + 0.2 * LAMBDA_MEMORY_GB * PRICES["lambda_arm64_gb_second"]
    )
    # Lambda's SQS pollers: about 5 long polls of 20 s at a time per queue.
    polls = 5 * 3 * 60 * 24 * 30
    sqs = polls * (PRICES["sqs_fifo_request"] + PRICES["sqs_standard_request"])
    out = {
        "watcher_ticks_dynamodb": rru * PRICES["dynamodb_rru"] + wru * PRICES["dynamodb_wru"],
        "watcher_ticks_lambda": lambda_dollars,
        "idle_queue_polling": sqs,
    }
    out["total"] = sum(out.values())
    return out
