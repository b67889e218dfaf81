"""The scheduling pipeline end to end, over real HTTP with real tokens: jobs created through the
API run on time (watcher -> queue -> executor -> runner), "run now", retries, timeouts, large
output, the script's environment, and ownership of runs.

The stack runs with `--watcher-interval 2 --retry-base-seconds 1` (see conftest.py). The tests
that take `backend_stack` run twice: with runner subprocesses (`local`) and with scripts
executing inside containers of the runner image (`docker`).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from devstack.docker_backend import CONTAINER_UID_BASE, CONTAINER_UID_COUNT
from e2e.api_client import (
    HTTP_TIMEOUT,
    MAX_START_LAG_MS,
    SCHEDULED_WAIT,
    TERMINAL,
    create_job,
    epoch,
    list_runs,
    output_json,
    run_now,
    start_run,
    unique,
    wait_for,
    wait_for_end,
)
from e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e

# -- the scheduled job: created first, so its wait overlaps the other tests -------------------


@pytest.fixture(scope="module")
def every_minute_job(local_stack: LocalStack) -> dict[str, Any]:
    """A `* * * * *` job created through the API when the module starts.

    A job created a moment before a minute boundary cannot be expected to start on that second
    (the watcher ticks every 2 s), so the fixture avoids the last 5 s of a minute."""
    second = datetime.now(UTC).second
    if second >= 55:
        time.sleep(61 - second)
    return create_job(
        local_stack,
        name=unique("every-minute"),
        schedule="* * * * *",
        parameters={"greeting": "scheduled", "n": 7},
    )


@pytest.fixture(scope="module", autouse=True)
def _schedule_first(every_minute_job: dict[str, Any]) -> None:
    """Creates the every-minute job before any test of this module runs."""


# -- 1. run now -------------------------------------------------------------------------------


def test_run_now_runs_within_seconds(backend_stack: LocalStack) -> None:
    job = create_job(backend_stack, parameters={"greeting": "hello"})
    response = run_now(backend_stack, job["job_id"])
    assert response.status_code == 202, response.text
    accepted = response.json()
    location = response.headers["Location"]
    assert location.startswith(f"/jobs/{job['job_id']}/runs/"), location
    key = location.rsplit("/", 1)[1]
    assert accepted["key"] == key
    assert accepted["job_id"] == job["job_id"]
    assert accepted["trigger"] == "MANUAL"
    assert accepted["status"] in {"PENDING", "QUEUED"}

    run = wait_for_end(backend_stack, job["job_id"], key, timeout=10)
    assert run["status"] == "SUCCEEDED", run
    assert run["exit_code"] == 0
    assert run["attempt"] == 1
    assert run["key"] == key
    assert "hello" in run["output_tail"]
    assert run["start_lag_ms"] is not None
    assert 0 <= run["start_lag_ms"] <= MAX_START_LAG_MS, run
    printed = output_json(run)
    assert printed == {
        "parameters": {"greeting": "hello"},
        "job_id": job["job_id"],
        "run_key": key,
        "scheduled_at": printed["scheduled_at"],
        "attempt": "1",
    }
    assert epoch(printed["scheduled_at"]) == run["execution_time"]

    listed = list_runs(backend_stack, job["job_id"])
    assert listed.status_code == 200, listed.text
    assert [item["key"] for item in listed.json()["items"]] == [key]
    assert listed.json()["items"][0]["status"] == "SUCCEEDED"


# -- 3. retries -------------------------------------------------------------------------------


def test_failing_script_is_retried_then_failed(backend_stack: LocalStack) -> None:
    script = "import os, sys\nprint('attempt', os.environ['ATTEMPT'])\nsys.exit(1)\n"
    job = create_job(backend_stack, script=script, max_attempts=2)
    key = start_run(backend_stack, job["job_id"])

    run = wait_for_end(backend_stack, job["job_id"], key)
    assert run["status"] == "FAILED", run
    assert run["exit_code"] == 1
    assert run["attempt"] == 2
    assert run["max_attempts"] == 2
    assert "attempt 2" in run["output_tail"]
    assert len(run["attempts"]) == 1, run["attempts"]
    first = run["attempts"][0]
    assert first["attempt"] == 1
    assert first["status"] == "FAILED"
    assert first["exit_code"] == 1


# -- 4. timeouts ------------------------------------------------------------------------------


def test_script_over_its_timeout_is_timed_out(backend_stack: LocalStack) -> None:
    script = "import time\nprint('sleeping', flush=True)\ntime.sleep(30)\nprint('woke up')\n"
    job = create_job(backend_stack, script=script, timeout_seconds=1, max_attempts=1)
    key = start_run(backend_stack, job["job_id"])

    run = wait_for_end(backend_stack, job["job_id"], key)
    assert run["status"] == "TIMED_OUT", run
    assert run["attempt"] == 1
    assert run["attempts"] == []
    assert "sleeping" in run["output_tail"]
    assert "woke up" not in run["output_tail"]
    assert run["duration_ms"] is not None
    assert run["duration_ms"] < 15_000, run


# -- 5. large output --------------------------------------------------------------------------


def test_ten_megabytes_of_output_are_capped(backend_stack: LocalStack) -> None:
    script = (
        "import sys\nfor _ in range(10):\n    sys.stdout.write('x' * 1024 * 1024)\nprint('END')\n"
    )
    job = create_job(backend_stack, script=script, max_attempts=1)
    key = start_run(backend_stack, job["job_id"])

    run = wait_for_end(backend_stack, job["job_id"], key)
    assert run["status"] == "SUCCEEDED", run
    assert run["exit_code"] == 0
    assert run["output_truncated"] is True
    assert run["output_bytes"] >= 10_000_000
    assert run["output_tail"].rstrip().endswith("END")
    assert len(run["output_tail"]) <= 8192

    # The full (capped) output is one link away
    answer = requests.get(
        f"{backend_stack.url}/jobs/{job['job_id']}/runs/{key}/output",
        headers=backend_stack.headers("alice"),
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 307, answer.text
    output = requests.get(answer.headers["Location"], timeout=HTTP_TIMEOUT)
    assert output.status_code == 200
    assert len(output.content) == 1024 * 1024  # the runner's cap
    assert set(output.content) == {ord("x")}


# -- 6. the script's environment holds no credentials -----------------------------------------

CREDENTIALS_SCRIPT = """\
import json, os
names = sorted(os.environ)
suspicious = [n for n in names if n.startswith("AWS_") or "RUNS_MANIFEST" in n or "SECRET" in n]
ancestors = {}
pid = os.getppid()
while pid > 0:  # up to the container's pid 1, or the machine's init
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            handle.read()
        ancestors[str(pid)] = "readable"
    except OSError as error:
        ancestors[str(pid)] = type(error).__name__
    with open(f"/proc/{pid}/stat") as handle:
        pid = int(handle.read().rsplit(")", 1)[1].split()[1])
print(json.dumps({"names": names, "suspicious": suspicious, "parent": os.getppid(),
                  "ancestors": ancestors, "uid": os.getuid()}))
"""


def credentials_seen(stack: LocalStack) -> dict[str, Any]:
    job = create_job(stack, script=CREDENTIALS_SCRIPT, max_attempts=1)
    key = start_run(stack, job["job_id"])
    run = wait_for_end(stack, job["job_id"], key)
    assert run["status"] == "SUCCEEDED", run
    return output_json(run)


def test_script_environment_holds_no_credentials(backend_stack: LocalStack) -> None:
    seen = credentials_seen(backend_stack)
    assert seen["suspicious"] == [], seen
    assert not any(name.startswith("ECS_CONTAINER_METADATA") for name in seen["names"]), seen
    assert {"JOB_PARAMETERS", "JOB_ID", "RUN_KEY", "SCHEDULED_AT", "ATTEMPT"} <= set(seen["names"])


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="run as an ordinary user, the local runner starts scripts as that user, who can read "
    "/proc/<runner>/environ (runner/README.md, Isolation)",
)
def test_script_cannot_read_the_runners_environment(backend_stack: LocalStack) -> None:
    seen = credentials_seen(backend_stack)
    assert seen["uid"] != 0, seen
    # The runner's environment (where the manifest URL was) is not readable by the script,
    # nor is any other ancestor's (the local stack's holds its fake AWS settings).
    assert str(seen["parent"]) in seen["ancestors"], seen
    assert seen["ancestors"][str(seen["parent"])] != "readable", seen
    assert "readable" not in seen["ancestors"].values(), seen


# -- 7. runs belong to the job's owner --------------------------------------------------------


def test_other_users_get_404_for_runs(local_stack: LocalStack) -> None:
    job = create_job(local_stack, user="alice")
    key = start_run(local_stack, job["job_id"])

    listed = list_runs(local_stack, job["job_id"], user="bob")
    assert listed.status_code == 404, listed.text
    one = requests.get(
        f"{local_stack.url}/jobs/{job['job_id']}/runs/{key}",
        headers=local_stack.headers("bob"),
        timeout=HTTP_TIMEOUT,
    )
    assert one.status_code == 404, one.text
    started = run_now(local_stack, job["job_id"], user="bob")
    assert started.status_code == 404, started.text

    # Bob's attempt started nothing: alice still sees exactly her one run.
    wait_for_end(local_stack, job["job_id"], key)
    mine = list_runs(local_stack, job["job_id"], user="alice")
    assert mine.status_code == 200, mine.text
    assert [run["key"] for run in mine.json()["items"]] == [key]


# -- 8. the container: shaped like the task definition (docker backend only) ------------------

SHAPE_SCRIPT = """\
import json, os

def read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace").strip()
    except OSError as error:
        return type(error).__name__

mounts = {}
with open("/proc/self/mounts") as handle:
    for line in handle:
        _, point, kind, options = line.split()[:4]
        mounts[point] = {"type": kind, "options": options.split(",")}
print(json.dumps({
    "root": mounts.get("/"),
    "tmp": mounts.get("/tmp"),
    "memory": read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "memory_v2": read("/sys/fs/cgroup/memory.max"),
    "cpu": [read(f"/sys/fs/cgroup/cpu/cpu.cfs_{name}_us") for name in ("quota", "period")],
    "cpu_v2": read("/sys/fs/cgroup/cpu.max"),
    "pid1": read("/proc/1/cmdline").split("\\x00"),
    "uid": os.getuid(),
    "tmpdir": os.environ["TMPDIR"],
}))
"""
MEMORY_BYTES = 1024 * 1024 * 1024  # the template's RunnerMemory, 1024 MiB
OVERRIDES = {"RUNS_MANIFEST_URL", "RUN_REFS"}  # what the ECS backend passes
# The base's (PATH, LANG) and runner/Dockerfile's ENV.
IMAGE_ENV = {"PATH", "LANG", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "RUNNER_RUN_AS"}
IMAGE_ENV |= {"RUNNER_REQUIRE_USER_SWITCH", "RUNNER_PRIVATE_SCRATCH"}
TASK_ENV = {"RUNNER_TASK_MEMORY_MB"}  # the task definition's container environment
# What only this machine adds: the container's own block of per-run uids (its kernel is shared
# with the host's runners; a Fargate task's is not).
SHARED_KERNEL_ENV = {"RUNNER_UID_BASE", "RUNNER_UID_COUNT"}


def container_log_line(stack: LocalStack, task_id: str) -> dict[str, Any]:
    """The docker backend's `container_started` line in the task's log."""
    log = stack.state_dir / "tasks" / f"{task_id}.log"
    for line in log.read_text().splitlines():
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "container_started":
            return dict(event)
    raise AssertionError(f"no container_started line in {log}")


def test_scripts_run_in_a_container_shaped_like_the_task_definition(
    docker_stack: LocalStack, runner_image: str
) -> None:
    job = create_job(docker_stack, script=SHAPE_SCRIPT, max_attempts=1)
    key = start_run(docker_stack, job["job_id"])
    run = wait_for_end(docker_stack, job["job_id"], key)
    assert run["status"] == "SUCCEEDED", run
    assert run["task_id"].startswith("docker-"), run
    seen = output_json(run)

    # Read-only root file system; the scratch volume is a writable tmpfs at /tmp, where the
    # script's own directory is.
    assert "ro" in seen["root"]["options"], seen
    assert seen["tmp"]["type"] == "tmpfs", seen
    assert "rw" in seen["tmp"]["options"], seen
    assert seen["tmpdir"].startswith("/tmp/"), seen
    # The task's memory and CPU (512 units: half a CPU), cgroup v1 or v2.
    assert str(MEMORY_BYTES) in {seen["memory"], seen["memory_v2"]}, seen
    assert seen["cpu"] == ["50000", "100000"] or seen["cpu_v2"] == "50000 100000", seen
    # The runner is the container's entrypoint (pid 1); the script runs under it as a uid of
    # its own (RUNNER_UID_BASE + its index in the pack), not root, not nobody: the first of a
    # block of the container's own, above the host runners' uids.
    assert seen["pid1"][:2] == ["python3", "/app/entrypoint.py"], seen
    assert seen["uid"] >= CONTAINER_UID_BASE, seen
    assert (seen["uid"] - CONTAINER_UID_BASE) % CONTAINER_UID_COUNT == 0, seen

    # As the engine reports the container: the image built here, the host network (moto on
    # loopback), and only the image's variables plus the overrides: no credentials.
    shape = container_log_line(docker_stack, run["task_id"])
    assert shape["image"] == runner_image, shape
    assert shape["network_mode"] == "host", shape
    assert shape["read_only_root"] is True, shape
    assert shape["tmpfs"] == ["/tmp"], shape
    assert shape["nano_cpus"] == 500_000_000, shape
    assert shape["memory_bytes"] == MEMORY_BYTES, shape
    assert set(shape["env_names"]) == IMAGE_ENV | TASK_ENV | OVERRIDES | SHARED_KERNEL_ENV, shape


def test_a_container_run_is_held_to_its_share_of_the_tasks_memory(
    docker_stack: LocalStack,
) -> None:
    # The task definition's RUNNER_TASK_MEMORY_MB (RunnerMemory, 1024) shared out among the
    # pack's runs: one run gets 1024 - 64 (the runner's reserve) = 960 MiB of address space, so
    # the allocation fails in the script instead of the kernel killing the container.
    script = (
        "import resource\n"
        "print('as', resource.getrlimit(resource.RLIMIT_AS)[0], flush=True)\n"
        "hog = b'x' * (1536 * 1024 * 1024)\n"
        "print('allocated')\n"
    )
    job = create_job(docker_stack, script=script, max_attempts=1)
    key = start_run(docker_stack, job["job_id"])
    run = wait_for_end(docker_stack, job["job_id"], key, timeout=30)
    assert run["status"] == "FAILED", run
    assert run["exit_code"] == 1, run
    assert f"as {960 * 1024 * 1024}" in run["output_tail"], run
    assert "MemoryError" in run["output_tail"], run
    assert "allocated" not in run["output_tail"], run


# -- 2. a job created through the API runs at the next minute (last: its wait overlaps) -----


def test_every_minute_job_runs_at_next_minute(
    local_stack: LocalStack, every_minute_job: dict[str, Any]
) -> None:
    job = every_minute_job
    created = datetime.fromisoformat(job["created_at"]).timestamp()
    next_minute = (int(created) // 60 + 1) * 60
    assert epoch(job["next_run_at"]) == next_minute, job

    def probe() -> dict[str, Any] | None:
        response = list_runs(local_stack, job["job_id"])
        assert response.status_code == 200, response.text
        done = [run for run in response.json()["items"] if run["status"] in TERMINAL]
        return min(done, key=lambda run: run["execution_time"]) if done else None

    run = wait_for("the every-minute job's first run", probe, SCHEDULED_WAIT, local_stack)
    assert run["execution_time"] == next_minute, run
    assert run["trigger"] == "SCHEDULE"
    assert run["status"] == "SUCCEEDED", run
    assert run["exit_code"] == 0
    assert run["attempt"] == 1
    assert run["start_lag_ms"] is not None
    assert 0 <= run["start_lag_ms"] <= MAX_START_LAG_MS, run
    printed = output_json(run)
    assert printed["parameters"] == {"greeting": "scheduled", "n": 7}
    assert printed["job_id"] == job["job_id"]
    assert printed["run_key"] == run["key"]
    assert epoch(printed["scheduled_at"]) == next_minute
    assert printed["attempt"] == "1"
    started = datetime.fromisoformat(run["started_at"]).timestamp()
    assert next_minute <= started <= next_minute + MAX_START_LAG_MS / 1000, run
