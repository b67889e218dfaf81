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
# Fargate: the task size of the template (RunnerCpu 512, RunnerMemory 1024) and when it runs:
# queued 30-90 s before the scheduled second (lookahead 90 s, ticks 60 s apart: 60 s on
# average), started at once, waits for the second, runs the script, reports (~5 s).
TASK_VCPU, TASK_GB = 0.5, 1.0
MEAN_LEAD_S, REPORT_S, MINIMUM_S = 60.0, 5.0, 60.0


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


def fargate_per_run(script_seconds: float, runs_per_task: float) -> float:
    seconds = max(MINIMUM_S, MEAN_LEAD_S + script_seconds + REPORT_S)
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
            f"second with a 1-minute minimum; a task is started ~{MEAN_LEAD_S:.0f} s before "
            "its runs' second and waits for it):",
            table(
                ["case", "$ per million runs"],
                [(k, f"${v:,.0f}") for k, v in fargate.items()],
            ),
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
                "mean_lead_s": MEAN_LEAD_S,
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
        "control_plane_total_per_million_runs": total,
        "eventbridge_scheduler_per_million": 1.00,
        "fargate_per_million_runs": fargate,
        "fixed_per_month": fixed_month,
        "plot": plot.name,
    }
    write_result(mode, "cost_model", data, markdown)
    return data


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
