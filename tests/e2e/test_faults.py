"""Faults injected for real into the local stack (issue 3), over real HTTP with real tokens:

- a runner process is SIGKILLed mid-script: the local backend's ECS-shaped task-stopped event
  fails the attempt, and the run is retried and succeeds;
- every process of ours (the stack: API, watcher, executor, status functions; the runners and
  their scripts) is SIGKILLed while runs are in flight, then the stack is restarted while moto
  stays up: every run that was due still ends SUCCEEDED, none is missing, none was dispatched
  twice for the same attempt.

Both run twice: with runner subprocesses (`local`) and with each runner in a container of the
runner image (`docker`, the runner's pid 1 killed from outside the container). The module starts
its own moto server per backend and runs the stack attached to it (`--aws-endpoint`), so
a restarted stack finds the tables, queues, bucket and runs it left behind. The recovery delays
are shortened, keeping their order (executor claim < dispatch queue visibility < dispatch
grace), so that recovery takes seconds instead of minutes: see FUNCTION_ENV and
DISPATCH_VISIBILITY_SECONDS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from devstack import docker_backend, iam, launcher
from e2e.api_client import (
    FAR_FUTURE,
    HTTP_TIMEOUT,
    TERMINAL,
    create_job,
    output_json,
    start_run,
    unique,
    wait_for,
)
from e2e.conftest import (
    PIPELINE_PACE,
    STARTUP_TIMEOUT,
    LocalStack,
    docker_arguments,
    free_port,
    stop_stack,
)
from scheduler.keys import parse_run_refs

pytestmark = pytest.mark.e2e

# A lost attempt is swept at its deadline: not_before + timeout + DISPATCH_GRACE_SECONDS while
# queued or dispatched (300 s; 30 s is the settings' minimum), started_at + timeout +
# RUNNING_GRACE_SECONDS once running (60 s). An executor's claim on a run expires after
# CLAIM_SECONDS (60 s). Scheduled runs are queued LOOKAHEAD_SECONDS ahead (90 s; 8 s here: the
# next minute's runners are not yet waiting when the stack is killed).
FUNCTION_ENV = {
    "DISPATCH_GRACE_SECONDS": "30",
    "RUNNING_GRACE_SECONDS": "2",
    "CLAIM_SECONDS": "5",
    "LOOKAHEAD_SECONDS": "8",
    # RUNNING 1 s after the start (10 s in production): the tests catch runs RUNNING.
    "STARTED_REPORT_SECONDS": "1",
}
# A message received by an executor that is then killed stays invisible for the dispatch
# queue's visibility timeout (180 s): redelivered, it is dispatched (the claim has expired). It
# must come back before the run's deadline (180 s < 300 s), or the sweep concludes the attempt
# first; 10 s < 30 s here.
DISPATCH_QUEUE = "local-DispatchQueue.fifo"
DISPATCH_VISIBILITY_SECONDS = 10
RUNNER = "entrypoint.py"  # runner/entrypoint.py locally, /app/entrypoint.py in the image
SCRIPT_SECONDS = 8  # long enough to be caught running, short enough to rerun quickly
TIMEOUT_SECONDS = 12
SCRIPT = f"""\
import json, os, time
time.sleep({SCRIPT_SECONDS})
print(json.dumps({{"attempt": os.environ["ATTEMPT"], "run_key": os.environ["RUN_KEY"]}}))
"""
QUICK_SCRIPT = """\
import json, os
print(json.dumps({"attempt": os.environ["ATTEMPT"], "run_key": os.environ["RUN_KEY"]}))
"""


# -- moto, and the stack attached to it -------------------------------------------------------


@dataclass
class Moto:
    endpoint: str
    process: subprocess.Popen[bytes]

    # The stack's state directory: its admin keys (IAM enforced; a restart makes new ones).
    state_dir: Path | None = None

    def client(self, service: str) -> Any:
        assert self.state_dir is not None, "no stack has set up this moto's IAM yet"
        principals = iam.load_credentials(self.state_dir)
        assert principals is not None, "the stack does not enforce IAM"
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=principals.admin.access_key_id,
            aws_secret_access_key=principals.admin.secret_access_key,
        )

    def runs(self, job_ids: set[str]) -> dict[str, dict[str, Any]]:
        """The runs of these jobs as stored, read straight from moto (the stack may be dead)."""
        dynamodb = self.client("dynamodb")
        found = {}
        for job_id in job_ids:
            items = dynamodb.query(
                TableName="local-RunsTable",
                KeyConditionExpression="job_id = :job",
                ExpressionAttributeValues={":job": {"S": job_id}},
                ConsistentRead=True,
            )["Items"]
            for item in items:
                found[item["key"]["S"]] = {
                    "status": item["status"]["S"],
                    "attempt": int(item["attempt"]["N"]),
                }
        return found


@pytest.fixture(scope="module", params=["local", "docker"])
def backend(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """How the stack starts its runner tasks: the `python -m devstack run` arguments."""
    if request.param == "docker":
        return docker_arguments(request.getfixturevalue("runner_image"))
    return ()


@pytest.fixture(scope="module")
def moto(backend: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            # moto server as the stack starts it (presigned URLs authorised under IAM)
            [sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(port)],
            env=launcher.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the stack's process group: it survives the kill
        )
    moto = Moto(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                requests.get(f"{moto.endpoint}/moto-api/", timeout=1)
                break
            except requests.RequestException:  # not listening yet, or too busy to answer
                assert time.monotonic() < deadline, "moto server did not answer"
                time.sleep(0.1)
        yield moto
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class FaultyStack:
    """The local stack attached to `moto`; `kill()` SIGKILLs it and every task it started,
    `restart()` starts it again on the same API port and state directory (same issuer, keys,
    secrets and task logs)."""

    moto: Moto
    state_dir: Path
    api_port: int
    backend: tuple[str, ...] = ()  # the dispatch arguments
    stack: LocalStack | None = None
    job_ids: set[str] = field(default_factory=set)

    @property
    def current(self) -> LocalStack:
        assert self.stack is not None, "the stack is not running"
        return self.stack

    def start(self) -> LocalStack:
        log_path = self.state_dir / "devstack.log"
        overrides = [
            arg
            for name, value in FUNCTION_ENV.items()
            for arg in ("--function-env", f"{name}={value}")
        ]
        with log_path.open("ab") as log:  # appended: one log over every restart
            process = launcher.spawn(
                self.state_dir,
                self.api_port,
                "--aws-endpoint",
                self.moto.endpoint,
                *PIPELINE_PACE,
                *overrides,
                *self.backend,
                log=log,
                new_session=True,  # its own process group, killed as one
            )
        url = f"http://127.0.0.1:{self.api_port}"
        stack = self.stack = LocalStack(url, self.api_port, self.state_dir, process, log_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the local stack exited with {process.returncode}:\n{stack.log()}")
            try:
                answered = requests.get(f"{url}/openapi.json", timeout=2).status_code == 200
                # stack.json is written once every service runs; a killed stack leaves its own.
                if answered and _state_pid(self.state_dir) == process.pid:
                    return stack
            except requests.RequestException:  # not listening yet, or too busy to answer
                pass
            time.sleep(0.1)
        pytest.fail(f"the local stack did not answer within {STARTUP_TIMEOUT:.0f} s")

    def kill(self) -> list[int]:
        """SIGKILL the stack's process group, then every runner and script of our jobs (they
        run in sessions of their own, or containers); returns the task processes found."""
        process = self.current.process
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        self.stack = None
        return kill_tasks(self.job_ids)

    def track(self, job: dict[str, Any]) -> dict[str, Any]:
        self.job_ids.add(job["job_id"])
        return job


def _state_pid(state_dir: Path) -> int | None:
    try:
        pid: int = json.loads((state_dir / "stack.json").read_text())["pid"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return pid


@pytest.fixture(scope="module")
def faulty(
    moto: Moto, backend: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultyStack]:
    faulty = FaultyStack(moto, tmp_path_factory.mktemp("faults"), free_port(), backend)
    faulty.start()
    moto.state_dir = faulty.state_dir
    sqs = moto.client("sqs")
    url = sqs.get_queue_url(QueueName=DISPATCH_QUEUE)["QueueUrl"]
    visibility = str(DISPATCH_VISIBILITY_SECONDS)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": visibility})
    yield faulty
    try:
        if faulty.stack is not None:
            code = stop_stack(faulty.stack, signal.SIGINT)
            assert code == 0, f"the local stack exited with {code}:\n{faulty.stack.log()[-4000:]}"
    finally:
        kill_tasks(faulty.job_ids)  # whatever a failed test left running
        if backend:
            docker_backend.remove_containers(faulty.state_dir / "tasks")


# -- the task processes of the local backend --------------------------------------------------


def _environ(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {name.decode(errors="replace"): value.decode(errors="replace") for name, value in pairs}


def task_processes(job_ids: set[str], *, scripts: bool = True) -> list[int]:
    """Runners whose RUN_REFS name one of these jobs, and (with `scripts`) the scripts they
    started (JOB_ID)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        environment = _environ(entry.name)
        refs = {job_id for job_id, _, _ in parse_run_refs(environment.get("RUN_REFS", ""))}
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        runner = RUNNER in command and bool(refs & job_ids)
        script = scripts and environment.get("JOB_ID") in job_ids
        if runner or script:
            found.append(int(entry.name))
    return found


def kill_tasks(job_ids: set[str]) -> list[int]:
    """SIGKILL them until none is left (a runner being forked as the stack died shows up late);
    returns every task process found. (In a container, the runner is pid 1 of its namespace:
    its end takes its scripts with it, so some are gone before their own signal.)"""
    found: list[int] = []
    for _ in range(5):
        pids = task_processes(job_ids)
        if not pids:
            break
        for pid in pids:
            if pid not in found:
                found.append(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    return found


def task_log_events(state_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(task id, JSON line) of every local runner's log (`tasks/<task id>.log`)."""
    events = []
    for path in sorted((state_dir / "tasks").glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append((path.stem, event))
    return events


# -- the API ----------------------------------------------------------------------------------


def runs_of(stack: LocalStack, job: dict[str, Any]) -> list[dict[str, Any]]:
    response = requests.get(
        f"{stack.url}/jobs/{job['job_id']}/runs",
        params={"limit": 100},
        headers=stack.headers(job["user_id"]),
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["items"]
    return runs


def run_of(stack: LocalStack, job: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((run for run in runs_of(stack, job) if run["key"] == key), None)


def wait_for_status(
    stack: LocalStack, job: dict[str, Any], key: str, statuses: set[str], timeout: float
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run = run_of(stack, job, key)
        return run if run is not None and run["status"] in statuses else None

    return wait_for(f"run {key} reaching {sorted(statuses)}", probe, timeout, stack)


def assert_attempts_consistent(run: dict[str, Any]) -> None:
    """One record per finished attempt, in order, then the current one: no attempt twice."""
    assert 1 <= run["attempt"] <= run["max_attempts"], run
    assert [a["attempt"] for a in run["attempts"]] == list(range(1, run["attempt"])), run
    for failed in run["attempts"]:
        assert failed["status"] in {"FAILED", "TIMED_OUT"}, run
    if run["status"] == "SUCCEEDED":
        assert output_json(run) == {"attempt": str(run["attempt"]), "run_key": run["key"]}, run


def assert_no_attempt_ran_twice(
    state_dir: Path, job_ids: set[str]
) -> dict[tuple[str, str, int], set[str]]:
    """Every (run, attempt) reached at most one runner task; returns the tasks per attempt."""
    tasks: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    started: dict[tuple[str, str, int], int] = defaultdict(int)
    events = task_log_events(state_dir)
    for task_id, event in events:
        if event.get("job_id") not in job_ids:
            continue
        ids = (event["job_id"], event["run_key"], int(event["attempt"]))
        assert event.get("event") != "run_claimed_elsewhere", (task_id, event)
        tasks[ids].add(task_id)
        if event.get("event") == "run_started":
            started[ids] += 1
    twice = {ids: sorted(ids_tasks) for ids, ids_tasks in tasks.items() if len(ids_tasks) > 1}
    assert not twice, f"attempts dispatched to more than one task: {twice}"
    assert all(count == 1 for count in started.values()), started
    return tasks


# -- 1. a runner is killed mid-script ---------------------------------------------------------


@pytest.fixture(scope="module")
def scheduled_jobs(faulty: FaultyStack) -> list[dict[str, Any]]:
    """Three `* * * * *` jobs (two owners, so two tasks a minute), created when the module
    starts so that the wait for a minute boundary overlaps the first test."""
    return [
        faulty.track(
            create_job(
                faulty.current,
                user=user,
                name=unique("every-minute"),
                schedule="* * * * *",
                script=SCRIPT,
                timeout_seconds=TIMEOUT_SECONDS,
                max_attempts=3,
            )
        )
        for user in ("alice", "alice", "bob")
    ]


@pytest.fixture(scope="module", autouse=True)
def _schedule_first(scheduled_jobs: list[dict[str, Any]]) -> None:
    """Creates the scheduled jobs before any test of this module runs."""


def test_runner_killed_mid_script_is_retried(faulty: FaultyStack) -> None:
    stack = faulty.current
    job = faulty.track(create_job(stack, script=SCRIPT, timeout_seconds=60, max_attempts=3))
    key = start_run(stack, job["job_id"])
    wait_for_status(stack, job, key, {"RUNNING"}, timeout=10)

    runners = task_processes({job["job_id"]}, scripts=False)
    assert len(runners) == 1, runners
    os.kill(runners[0], signal.SIGKILL)

    run = wait_for_status(stack, job, key, TERMINAL, timeout=SCRIPT_SECONDS + 20)
    assert run["status"] == "SUCCEEDED", run
    assert run["attempt"] == 2, run
    assert_attempts_consistent(run)
    (first,) = run["attempts"]
    assert first["status"] == "FAILED", first
    assert "task stopped" in first["error"], first
    assert first["exit_code"] in {-signal.SIGKILL, 128 + signal.SIGKILL}, first
    assert_no_attempt_ran_twice(faulty.state_dir, {job["job_id"]})


def test_a_runner_killed_before_its_runs_second_does_not_spend_an_attempt(
    faulty: FaultyStack,
) -> None:
    if faulty.backend:
        pytest.skip("a container's start takes most of the look-ahead: caught by the local one")
    # Given a one-attempt job every minute, and its runner up ahead of the run's second (the
    # run queued LOOKAHEAD_SECONDS ahead), before it claims the run (a second before it). Its
    # owner has no other job: runs are packed per owner, and a pack-mate of another test's job
    # killed with it would start that run's attempt 2 under the next test.
    stack = faulty.current
    job = faulty.track(
        create_job(stack, user="carol", schedule="* * * * *", script=QUICK_SCRIPT, max_attempts=1)
    )

    def waiting_runner() -> dict[str, Any] | None:
        for pid in task_processes({job["job_id"]}, scripts=False):
            refs = parse_run_refs(_environ(str(pid)).get("RUN_REFS", ""))
            (run_key,) = [key for job_id, key, _ in refs if job_id == job["job_id"]]
            if time.time() < int(run_key.split("-")[0]) - 2:  # its claim is still ahead
                return {"pid": pid, "run_key": run_key}
        return None

    runner = wait_for("a runner waiting for its run's second", waiting_runner, 80, stack)
    key = runner["run_key"]

    # When it is killed (SIGKILL: no report, no claim)
    os.kill(runner["pid"], signal.SIGKILL)

    # Then the attempt is not counted (its script never started: its task's stop finds no claim
    # and no finished report, read under the task_events role's grants) and the run runs again
    run = wait_for_status(stack, job, key, TERMINAL, timeout=100)
    assert (run["status"], run["attempt"]) == ("SUCCEEDED", 2), run
    (unstarted,) = run["attempts"]
    assert unstarted["script_started"] is False, run
    assert unstarted["error"].startswith("the script never started"), run
    assert output_json(run) == {"attempt": "2", "run_key": key}


# -- 2. everything of ours is SIGKILLed and restarted while moto stays up ---------------------


def _minutes(after: float, until: float) -> list[int]:
    """The whole minutes in (after, until]."""
    first = int(after) // 60 * 60 + 60
    return list(range(first, int(until) // 60 * 60 + 1, 60))


def _scheduled_key(minute: int, job: dict[str, Any]) -> str:
    return f"{minute:010d}-{job['job_id']}"


def test_everything_killed_and_restarted_loses_no_run(
    faulty: FaultyStack, scheduled_jobs: list[dict[str, Any]]
) -> None:
    stack = faulty.current
    created = max(datetime.fromisoformat(j["created_at"]).timestamp() for j in scheduled_jobs)
    sleeper = faulty.track(
        create_job(stack, script=SCRIPT, timeout_seconds=TIMEOUT_SECONDS, schedule=FAR_FUTURE)
    )
    quick = faulty.track(create_job(stack, script=QUICK_SCRIPT, timeout_seconds=1))

    # In flight at the kill: the scheduled runs of the next minute and a manual run, all
    # RUNNING (scripts sleeping), and a manual run just accepted (queued, being dispatched or
    # waiting in its runner, depending on the moment).
    minute = int(time.time()) // 60 * 60 + 60
    caught = {job["job_id"]: _scheduled_key(minute, job) for job in scheduled_jobs}
    for job in scheduled_jobs:
        wait_for_status(
            stack, job, caught[job["job_id"]], {"RUNNING"}, timeout=minute - time.time() + 10
        )
    caught[sleeper["job_id"]] = start_run(stack, sleeper["job_id"])
    wait_for_status(stack, sleeper, caught[sleeper["job_id"]], {"RUNNING"}, timeout=5)
    just_sent = start_run(stack, quick["job_id"])

    killed = faulty.kill()
    at_kill = faulty.moto.runs(faulty.job_ids)
    for job_id, key in caught.items():
        assert at_kill[key] == {"status": "RUNNING", "attempt": 1}, (job_id, at_kill)
    assert len(killed) >= 2 * len(caught) - 1, killed  # the runners (2 for 3 jobs), the scripts
    assert task_processes(faulty.job_ids) == []

    stack = faulty.start()

    # Every minute that passed since the jobs were created has its run, ended, for every job.
    everything = [*scheduled_jobs, sleeper, quick]
    manual = {sleeper["job_id"]: caught[sleeper["job_id"]], quick["job_id"]: just_sent}

    def all_ended() -> dict[str, Any] | None:
        now = time.time()
        ended: dict[str, Any] = {}
        for job in everything:
            runs = {run["key"]: run for run in runs_of(stack, job)}
            if job["job_id"] in manual:
                expected = {manual[job["job_id"]]}
            else:
                expected = {_scheduled_key(m, job) for m in _minutes(created, now)}
            due = {key for key, run in runs.items() if run["execution_time"] <= now}
            assert due <= expected, f"unexpected runs of {job['job_id']}: {due - expected}"
            if not expected <= runs.keys():
                return None
            if any(runs[key]["status"] not in TERMINAL for key in expected):
                return None
            ended |= {key: runs[key] for key in expected}
        return ended

    ended = wait_for("every due run ending after the restart", all_ended, 75, stack)

    assert {key for key in caught.values()} <= ended.keys()
    for run in ended.values():
        assert run["status"] == "SUCCEEDED", run
        assert_attempts_consistent(run)
    for key in caught.values():
        # Killed mid-script: the watcher's sweep failed attempt 1 at its deadline.
        run = ended[key]
        assert run["attempt"] == 2, run
        assert "deadline" in run["attempts"][0]["error"], run
    assert ended[just_sent]["attempt"] in {1, 2}, ended[just_sent]

    tasks = assert_no_attempt_ran_twice(faulty.state_dir, faulty.job_ids)
    for key, run in ended.items():
        assert (run["job_id"], key, run["attempt"]) in tasks, f"no task ran {key}: {run}"
