"""python -m bench.soak [--quick] [--seed N] [--rate KIND=PER_MINUTE ...] [--plan-only]

The chaos soak (issue 14): see bench/soak/__init__.py and docs/performance.md, "Chaos soak".
Writes bench/results/soak.json (quick: bench/results/quick/soak.json) and the timeline plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from bench.common import Mode, moto_server, say
from bench.soak import report
from bench.soak.chaos import Chaos, SoakStack
from bench.soak.checker import TERMINAL, GroundTruth, check, due_seconds
from bench.soak.plan import DEFAULT_RATES, KINDS, QUICK_RATES, generate, parse_rates
from bench.soak.workload import Workload

# Recovery delays, shortened in their order (claim < dispatch visibility < dispatch grace; see
# docs/architecture.md) so that a killed run is swept in seconds, not minutes.
FUNCTION_ENV = {
    "CLAIM_SECONDS": "10",
    "DISPATCH_GRACE_SECONDS": "30",
    "RUNNING_GRACE_SECONDS": "5",
}
DISPATCH_VISIBILITY_SECONDS = 20
REPORTS_VISIBILITY_SECONDS = 15  # the template's 60 s: a failed report batch comes back sooner
TASK_START_DELAY = "0-3"
# Workload.setup creates 8 at a time: 25-48 a second here on a quiet machine. The jobs' first
# runs are planned for a slower setup: one still under way when they fall due competes with
# them for the 2 cores, and slows down further.
CREATES_PER_SECOND = 15
# The drain's length, and when it first lists the jobs (the runs due last start about a minute
# later, ending seconds after; listing before would only slow the stack down), full and quick:
# the soak stays within 25 minutes, the quick one within 3.
DRAIN_SECONDS = {"full": 180, "quick": 90}
DRAIN_FIRST_LOOK_SECONDS = {"full": 60, "quick": 15}
RETRY_BASE_SECONDS = 10
# Jobs per owner: (owners, every minute, every 5 minutes, hourly, run-now targets); each owner
# also has a flaky, a failing and a timing-out job.
SHAPES = {
    "full": {"owners": 24, "minute": 23, "five": 2, "hourly": 1, "burst": 1},
    "quick": {"owners": 4, "minute": 8, "five": 2, "hourly": 1, "burst": 1},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 3-minute soak")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="KIND=PER_MINUTE",
        help=f"fault rate (per minute); kinds: {', '.join(KINDS)}; all=0 turns all off",
    )
    parser.add_argument("--minutes", type=float, help="minutes of faults and due runs")
    parser.add_argument("--plan-only", action="store_true", help="print the fault plan and stop")
    arguments = parser.parse_args(argv)
    mode = Mode(quick=arguments.quick)
    minutes = arguments.minutes or mode.pick(18.0, 1.0)
    rates = parse_rates(arguments.rate, mode.pick(DEFAULT_RATES, QUICK_RATES))
    plan = generate(arguments.seed, rates, minutes * 60)
    if arguments.plan_only:
        print(json.dumps(plan.to_json(), indent=1))
        return 0
    return soak(mode, plan, minutes)


def soak(mode: Mode, plan, minutes: float) -> int:  # type: ignore[no-untyped-def]
    size = "quick" if mode.quick else "full"
    work = mode.results_dir / "work" / "soak"
    work.mkdir(parents=True, exist_ok=True)
    options = ["--watcher-interval", "60", "--watcher-second", str(plan.tick_second)]
    options += ["--task-start-delay", TASK_START_DELAY]
    options += ["--retry-base-seconds", str(RETRY_BASE_SECONDS)]
    for name, value in FUNCTION_ENV.items():
        options += ["--function-env", f"{name}={value}"]
    began = time.time()
    with moto_server(work / "moto.log") as moto:
        state_dir = work / "stack"
        if state_dir.exists():
            import shutil

            shutil.rmtree(state_dir)
        state_dir.mkdir(parents=True)
        stack = SoakStack(state_dir, moto.endpoint, options)
        stack.start()
        try:
            chaos_events, down, workload, times = drive(stack, plan, size, minutes)
            # The checker reads the API (and the runners' logs): before the stack stops.
            truth = GroundTruth.read(state_dir / "tasks")
            results = check(
                workload,
                truth,
                chaos_events,
                times["faults_from"],
                times["first_due"],
                times["last_due"],
            )
            times |= {"began": began, "checked": time.time()}
        finally:
            stack.stop()
    # Kept before the report is drawn: the soak cannot be re-run cheaply.
    raw = {
        "results": results,
        "events": chaos_events,
        "times": times,
        "down": down,
        "jobs": [asdict(job) for job in workload.jobs.values()],
        "operations": workload.operations,
        "manual": [asdict(manual) for manual in workload.manual],
    }
    (work / "raw.json").write_text(json.dumps(raw, default=str) + "\n")
    report.write(
        mode,
        plan,
        results,
        chaos_events,
        stack.injection_log,
        workload,
        times,
        time.time() - began,
        down,
    )
    return 0


def drive(stack: SoakStack, plan, size: str, minutes: float):  # type: ignore[no-untyped-def]
    from bench.soak.chaos import DISPATCH_QUEUE, REPORTS_QUEUE

    shape = SHAPES[size]
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=DISPATCH_QUEUE)["QueueUrl"]
    sqs.set_queue_attributes(
        QueueUrl=url, Attributes={"VisibilityTimeout": str(DISPATCH_VISIBILITY_SECONDS)}
    )
    reports = sqs.get_queue_url(QueueName=REPORTS_QUEUE)["QueueUrl"]
    sqs.set_queue_attributes(
        QueueUrl=reports, Attributes={"VisibilityTimeout": str(REPORTS_VISIBILITY_SECONDS)}
    )
    workload = Workload.for_stack(
        stack.url, stack.api_port, stack.state_dir, shape["owners"], plan.seed
    )
    # The jobs start once every one of them exists (about CREATES_PER_SECOND here).
    setup_began = time.time()
    per_owner = shape["minute"] + shape["five"] + shape["hourly"] + shape["burst"] + 3
    setup_seconds = len(workload.owners) * per_owner / CREATES_PER_SECOND
    start_at = setup_began + setup_seconds + 15
    start_at = start_at - start_at % 60 + 30  # between two occurrences: no doubt which is first
    if start_at < setup_began + setup_seconds:
        start_at += 60
    workload.setup(shape, start_at)
    setup_ended = time.time()
    say(
        f"soak: {len(workload.jobs)} jobs for {shape['owners']} owners in "
        f"{setup_ended - setup_began:.0f} s; faults for "
        f"{minutes:g} min (seed {plan.seed}, {len(plan.faults)} faults planned)"
    )
    time.sleep(max(0.0, start_at - time.time()))
    faults_from = time.time()
    first_due = int(start_at) + 30
    chaos = Chaos(plan, stack, faults_from)
    chaos.start()
    end = faults_from + minutes * 60
    minute = 0
    while time.time() < end:
        now = time.time()
        at = now - now % 60 + 12  # changes inside seconds 12-48 of the minute
        if at < now:
            at += 60
        if at >= end:
            break  # the last faults of the plan are still to come
        time.sleep(at - now)
        minute += 1
        workload.churn(minute)
        if minute % 2 == 1 and time.time() % 60 < 30:
            workload.run_now_burst(10)
        say(
            f"soak: minute {minute}: {len(chaos.events)} faults so far, "
            f"{workload.api.errors} API errors retried"
        )
    time.sleep(max(0.0, end - time.time()))
    chaos.stop()
    last_due = int(time.time())
    say("soak: faults stopped; waiting for the runs due until now to end")
    workload.last_listed = drain(workload, first_due, last_due, size)
    return (
        chaos.events,
        chaos.down,
        workload,
        {
            "setup_began": setup_began,
            "setup_ended": setup_ended,
            "faults_from": faults_from,
            "first_due": first_due,
            "last_due": last_due,
            "drained": time.time(),
        },
    )


def drain(
    workload: Workload, first_due: int, last_due: int, size: str
) -> dict[str, list[dict[str, Any]]]:
    """Until every run due by `last_due` exists and has ended, for at most DRAIN_SECONDS (the
    last listing stops there too); the jobs go on running, but what falls due after
    `last_due` is not counted. Returns each job's runs as last listed (listing a job's runs
    costs ~0.2 s of the busy stack's time: the checker reuses them)."""
    listings: dict[str, list[dict[str, Any]]] = {}
    deadline = time.time() + DRAIN_SECONDS[size]
    expected: dict[str, set[str]] = {
        job.job_id: {
            f"{second}-{job.job_id}" for second in due_seconds(job, first_due, last_due)[0]
        }
        for job in workload.jobs.values()
        if job.deleted_at is None
    }
    for manual in workload.manual:
        if manual.key is not None and manual.job_id in expected:
            expected[manual.job_id].add(manual.key)
    waiting = [job for job in workload.jobs.values() if expected.get(job.job_id)]
    time.sleep(DRAIN_FIRST_LOOK_SECONDS[size])
    while waiting and time.time() < deadline:
        listed = workload.api.runs_of(waiting, until=deadline)
        listings |= listed
        still = []
        for job in waiting:
            ended = {run["key"] for run in listed.get(job.job_id, []) if run["status"] in TERMINAL}
            if not expected[job.job_id] <= ended:
                still.append(job)
        waiting = still
        say(f"soak: {len(waiting)} jobs with due runs not ended yet")
        time.sleep(max(0.0, min(10.0, deadline - time.time())))
    return listings


if __name__ == "__main__":
    sys.exit(main())
