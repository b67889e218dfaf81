"""The soak's checker: what was due (from the workload's ledger of schedules, computed here
without the scheduler's code), what ran (the runners' own logs, `tasks/*.log`: ground truth),
and what the API says about every run. Nothing else is read."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import summary
from bench.soak.workload import YEARLY, JobRecord, Workload

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED", "CANCELLED"}
EXPECTED_STATUS = {
    "ok": "SUCCEEDED",
    "flaky": "SUCCEEDED",
    "fail": "FAILED",
    "timeout": "TIMED_OUT",
}
# Faults that touch the runs due while they last (and for this long after them).
WINDOW_AFTER_S = {"aws_error": 60.0, "skip_tick": 90.0, "kill": 120.0}


def fires(schedule: str, timezone: str, second: int) -> bool:
    """Whether a schedule of the soak's shapes (minute field `*`, `*/n` or `m`, every hour)
    fires at this UTC minute, in its zone."""
    if schedule == YEARLY:
        return False
    minute_field = schedule.split(maxsplit=1)[0]
    minute = datetime.fromtimestamp(second, ZoneInfo(timezone)).minute
    if minute_field == "*":
        return True
    if minute_field.startswith("*/"):
        return minute % int(minute_field[2:]) == 0
    return minute == int(minute_field)


def due_seconds(job: JobRecord, first: int, last: int) -> tuple[list[int], list[int]]:
    """(occurrences due in [first, last], occurrences that may or may not have run)."""
    due, maybe = [], []
    for segment in job.segments:
        end = last if segment.end is None else min(last, int(segment.end))
        start = max(first, int(segment.start) - int(segment.start) % 60 + 60)
        for second in range(start, end + 1, 60):
            if second <= segment.start or not fires(segment.schedule, segment.timezone, second):
                continue
            grey = any(a < second <= b for a, b in job.grey)
            if job.deleted_at is not None and second > job.deleted_at - 120:
                grey = True
            (maybe if grey else due).append(second)
    return due, maybe


@dataclass
class GroundTruth:
    """From the runners' logs: per (run key, attempt), each start (task, lag) and the end."""

    started: dict[tuple[str, int], list[tuple[str, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    finished: dict[tuple[str, int], str] = field(default_factory=dict)
    report_failed: set[tuple[str, int]] = field(default_factory=set)
    claimed_elsewhere: int = 0

    @classmethod
    def read(cls, tasks_dir: Path) -> GroundTruth:
        truth = cls()
        for path in sorted(tasks_dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict) or "run_key" not in event:
                    continue
                ids = (str(event["run_key"]), int(event.get("attempt") or 0))
                name = event.get("event")
                if name == "run_started":
                    truth.started[ids].append((path.stem, int(event.get("start_lag_ms") or 0)))
                elif name == "run_finished":
                    truth.finished[ids] = str(event.get("status"))
                elif name == "report_failed":
                    truth.report_failed.add(ids)
                elif name == "run_claimed_elsewhere":
                    truth.claimed_elsewhere += 1
        return truth

    def attempts_started(self, key: str) -> list[int]:
        return sorted(attempt for (k, attempt) in self.started if k == key)


def fault_windows(events: list[dict[str, Any]], started: float) -> list[tuple[float, float]]:
    windows = []
    for event in events:
        kind = event["kind"]
        if kind.startswith("kill_") and "killed_at" in event:
            windows.append((event["killed_at"], event["back_at"] + WINDOW_AFTER_S["kill"]))
        elif kind == "aws_error":
            start = started + event["planned_at"]
            windows.append((start, start + event["seconds"] + WINDOW_AFTER_S["aws_error"]))
        elif kind == "skip_tick":
            windows.append((event["tick_at"] - 60, event["tick_at"] + WINDOW_AFTER_S["skip_tick"]))
    return windows


def check(  # noqa: PLR0912, PLR0915  # one pass over the due runs, each rule in turn
    workload: Workload,
    truth: GroundTruth,
    events: list[dict[str, Any]],
    started: float,
    first_due: int,
    last_due: int,
) -> dict[str, Any]:
    api = workload.api
    windows = fault_windows(events, started)
    touched: dict[str, list[str]] = defaultdict(list)  # run key -> faults that named it
    for event in events:
        for ref in event.get("runs") or []:
            key = ref[1] if isinstance(ref, list) else str(ref)
            touched[key].append(event["kind"])
        for obj in event.get("objects") or []:
            parts = obj.split("/")  # reports/<job>/<run>/<attempt>/...
            if len(parts) > 2:
                touched[parts[2]].append(event["kind"])

    live = [job for job in workload.jobs.values() if job.deleted_at is None]
    listed = dict(workload.last_listed)
    listed |= api.runs_of([job for job in live if job.job_id not in listed])
    runs: dict[str, dict[str, Any]] = {}
    for job in workload.jobs.values():
        for run in (job.snapshot if job.deleted_at is not None else listed[job.job_id]) or []:
            runs[run["key"]] = run
    # The drain's listings are up to minutes older than the runners' logs read since: a job
    # whose listing is behind what its runners started (a run it did not show yet, an attempt
    # it had not recorded yet) is listed again, so the API is judged on what it shows now.
    behind = {
        key.split("-")[1]  # <second>-<job id>[-m<token>]
        for key, attempt in truth.started
        if (run := runs.get(key)) is None or int(run["attempt"]) < attempt
    }
    for again in api.runs_of([job for job in live if job.job_id in behind]).values():
        for run in again:
            runs[run["key"]] = run

    due: list[tuple[str, JobRecord | None, int]] = []  # key, job, scheduled second
    maybe = 0
    for job in workload.jobs.values():
        seconds, grey = due_seconds(job, first_due, last_due)
        maybe += len(grey)
        due += [(f"{second}-{job.job_id}", job, second) for second in seconds]
    behaviour = {j.job_id: j.behaviour for j in workload.jobs.values()}
    for manual in workload.manual:
        if manual.key is not None:
            due.append((manual.key, workload.jobs[manual.job_id], int(manual.requested_at)))

    lost, unfinished, wrong, twice, skipped = [], [], [], [], Counter()
    unobservable: list[str] = []  # due before its job was deleted, not in the last snapshot
    end_unlogged: list[str] = []  # SUCCEEDED, its runner killed between its report and its log
    lags_in, lags_out, by_minute = [], [], defaultdict(lambda: {"due": 0, "started": 0})
    started_count = 0
    lags_by_minute: dict[int, list[int]] = defaultdict(list)
    for key, job, second in due:
        minute = second - second % 60
        by_minute[minute]["due"] += 1
        run = runs.get(key)
        attempts = truth.attempts_started(key)
        if attempts:
            started_count += 1
            by_minute[minute]["started"] += 1
            lag = truth.started[(key, attempts[0])][0][1]
            inside = any(a <= second <= b for a, b in windows) or key in touched
            (lags_in if inside else lags_out).append(lag)
            lags_by_minute[minute].append(lag)
        if run is None and job is not None and job.deleted_at is not None and attempts:
            continue  # started (the runner logs say so), after the snapshot taken before delete
        if run is None and job is not None and job.deleted_at is not None:
            # Its job was deleted: the API no longer shows its runs, and the snapshot taken
            # just before the delete cannot show a run the delete itself made (it takes an
            # occurrence no tick took yet, which then ends SKIPPED) or a late tick made.
            unobservable.append(key)
            continue
        if run is None:
            lost.append(
                {
                    "key": key,
                    "why": "no run recorded",
                    "started_by_runner": bool(attempts),
                    "job": _job_as_the_api_shows_it(workload, job),
                }
            )
            continue
        if run["status"] == "SKIPPED":
            skipped[str(run.get("error"))] += 1
            continue
        if run["status"] not in TERMINAL:
            unfinished.append({"key": key, "status": run["status"], "attempt": run["attempt"]})
        if not attempts:
            if run["status"] in TERMINAL:
                lost.append(
                    {
                        "key": key,
                        "why": f"{run['status']} without its script ever starting",
                        "error": run.get("error"),
                    }
                )
            continue
        if len(attempts) > 1 or any(len(truth.started[(key, a)]) > 1 for a in attempts):
            earlier = [
                f"attempt {a['attempt']}: " + (a.get("error") or f"exit code {a.get('exit_code')}")
                for a in run.get("attempts") or []
            ]
            same = [a for a in attempts if len(truth.started[(key, a)]) > 1]
            twice.append(
                {
                    "key": key,
                    "attempts_started": attempts,
                    "same_attempt_twice": same,
                    "marked": run["attempt"] > 1 and not same,
                    "causes": earlier + [f"fault: {kind}" for kind in touched.get(key, [])],
                    "by_design": behaviour.get(job.job_id if job else "") in {"flaky", "fail"},
                }
            )
        final = (key, int(run["attempt"]))
        logged = truth.finished.get(final)
        status = run["status"]
        problem = None
        if (
            status == "SUCCEEDED"
            and logged is None
            and truth.started.get(final)
            and "kill_runner" in touched.get(key, [])
        ):
            # The runner PUTs its `finished` report, then logs the end: killed in between, the
            # status came from the report and the log has no end to compare it with (whether
            # it is what the script asked for is checked below, from the job's behaviour).
            end_unlogged.append(key)
        elif status == "SUCCEEDED" and logged != "SUCCEEDED":
            problem = f"SUCCEEDED but the runner logged {logged} for attempt {run['attempt']}"
        elif status in {"FAILED", "TIMED_OUT"} and logged is not None and logged != status:
            problem = f"{status} but the runner logged {logged} for attempt {run['attempt']}"
        if problem:
            wrong.append({"key": key, "problem": problem, "run": _brief(run)})

    # Scheduled runs of occurrences that were not due (nor may have been): a job running while
    # paused, or on a schedule it no longer had.
    counted = {key for key, _, _ in due}
    unexpected = [
        _brief(run)
        for key, run in runs.items()
        if key not in counted
        and run["trigger"] == "SCHEDULE"
        and first_due <= run["execution_time"] <= last_due
        and truth.attempts_started(key)
        and not _maybe(workload, run)
    ]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for run in runs.values():
        if run["trigger"] == "MANUAL" and run.get("reason"):
            by_reason[run["reason"]].append(run["key"])
    manual_retried = {m.reason: m.failed_tries for m in workload.manual}
    manual_twice = [
        {"reason": reason, "keys": keys, "client_retries": manual_retried.get(reason, 0)}
        for reason, keys in by_reason.items()
        if len(keys) > 1
    ]
    final_statuses = Counter(runs[k]["status"] for k, _, _ in due if k in runs)
    behaviours_wrong = [
        {"key": key, "behaviour": job.behaviour, "status": runs[key]["status"]}
        for key, job, _ in due
        if job is not None
        and key in runs
        and runs[key]["status"] in TERMINAL - {"SKIPPED"}
        and runs[key]["status"] != EXPECTED_STATUS[job.behaviour]
    ]
    return {
        "runs_due": len(due),
        "runs_started": started_count,
        "maybe_due": maybe,
        "lost": lost,
        "ran_twice": twice,
        "ran_twice_unexplained": [t for t in twice if not t["marked"] or not t["causes"]],
        "manual_twice": manual_twice,
        "unfinished": unfinished,
        "unobservable_after_delete": unobservable,
        "wrong_status": wrong,
        "end_unlogged_runner_killed": end_unlogged,
        "not_what_the_script_asked": behaviours_wrong,
        "unexpected_runs": unexpected,
        "skipped": dict(skipped),
        "final_statuses": dict(final_statuses),
        "claimed_elsewhere": truth.claimed_elsewhere,
        "start_lag_ms": {"outside_faults": summary(lags_out), "inside_faults": summary(lags_in)},
        "per_minute": {str(m): v for m, v in sorted(by_minute.items())},
        "lags_by_minute": {str(m): summary(v) for m, v in sorted(lags_by_minute.items())},
        "fault_windows": windows,
    }


def _job_as_the_api_shows_it(workload: Workload, job: JobRecord | None) -> Any:
    """The job, for a lost run's diagnosis, with the ledger's view of its schedules."""
    if job is None:
        return None
    response = workload.api.call("GET", f"/jobs/{job.job_id}", job.user)
    shown = response.json() if response is not None and response.status_code == 200 else None
    return {"api": shown, "ledger": asdict(job)}


def _maybe(workload: Workload, run: dict[str, Any]) -> bool:
    job = workload.jobs.get(run["job_id"])
    if job is None:
        return False
    second = run["execution_time"]
    return any(a < second <= b for a, b in job.grey) or (
        job.deleted_at is not None and second > job.deleted_at - 120
    )


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    fields = ("key", "status", "attempt", "trigger", "error", "execution_time", "attempts")
    return {name: run.get(name) for name in fields}
