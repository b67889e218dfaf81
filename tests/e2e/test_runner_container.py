"""The runner's limits inside its container, shaped like the task definition (read-only root,
a tmpfs at /tmp, the task's memory, the runner as pid 1): per-run uids work without passwd
entries, a fork bomb and a `setsid` daemon are killed with their runs, and the orphans they
leave to pid 1 (the runner) are reaped, not left as zombies. The fake S3 of the runner's unit
tests plays the presigned URLs on this machine's loopback (the container is on the host's
network)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from devstack.docker_backend import CONTAINER_UID_COUNT, ContainerSpec, container_uid_block
from unit.test_runner import (
    FORK_BOMB,
    SETSID_DAEMON,
    FakeS3,
    _field,
    runner_env,
    start_runner,
)

pytestmark = pytest.mark.e2e

# Runs a few seconds after the others have ended, as another uid of the same pack: every
# process of the task, as /proc shows it to a script.
OBSERVER = """
import json, os, time
time.sleep(6)
seen = []
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{name}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        seen.append([int(name), int(fields["Uid"].split()[0]), fields["State"].split()[0]])
print("PROCS" + json.dumps(seen), flush=True)
"""


@pytest.fixture
def s3() -> Iterator[FakeS3]:
    server = FakeS3()
    yield server
    server.close()


def test_a_fork_bomb_and_a_setsid_daemon_die_with_their_runs_in_the_container(
    runner_image: str, s3: FakeS3
) -> None:
    runs = [
        s3.run("forkbomb", FORK_BOMB, timeout_seconds=2),
        s3.run("daemon", SETSID_DAEMON),
        s3.run("observer", OBSERVER),
    ]
    spec = ContainerSpec(
        image=runner_image,
        cpu_units=512,
        memory_mib=1024,
        read_only=True,
        scratch=("/tmp",),
        stop_timeout=30,
        environment={"RUNNER_TASK_MEMORY_MB": "1024"},
    )
    with container_uid_block() as uid_base:  # as the docker backend gives every container
        env = {
            "RUNS_MANIFEST_URL": s3.manifest(runs),
            "RUNNER_KILL_GRACE_SECONDS": "1",
            "RUNNER_UID_BASE": str(uid_base),
            "RUNNER_UID_COUNT": str(CONTAINER_UID_COUNT),
            **spec.environment,
        }
        variables = [argument for name in env for argument in ("--env", name)]
        client = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
        began = time.monotonic()
        completed = subprocess.run(
            ["docker", "run", "--rm", *spec.run_options(), *variables, runner_image],
            env=client | env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    stderr = completed.stderr.decode(errors="replace")
    assert completed.returncode == 0, stderr
    assert time.monotonic() - began < 60

    bomb = s3.report("forkbomb", "finished")
    # Stopped by its timeout, or sooner by its memory share: 170 processes (512 / 3 runs) of
    # Python, their copied-on-write pages counted in each, are more than 320 MiB (1024 / 3)
    assert bomb["status"] in {"TIMED_OUT", "FAILED"}, json.dumps(bomb)
    assert bomb["status"] == "TIMED_OUT" or "memory limit" in bomb["error"], json.dumps(bomb)
    assert "process limit reached" in bomb["output_tail"], bomb
    daemon = s3.report("daemon", "finished")
    assert daemon["status"] == "SUCCEEDED", daemon
    observer = s3.report("observer", "finished")
    assert observer["status"] == "SUCCEEDED", observer
    uids = {_field(bomb, "uid"), _field(daemon, "uid")}
    assert uids == {uid_base, uid_base + 1}  # uids of their own, no passwd entry

    tail = observer["output_tail"]
    procs = json.loads(tail[tail.index("PROCS") + len("PROCS") :].split("\n", 1)[0])
    # Nothing of the two ended runs is left, not even a zombie for pid 1 to reap
    assert [p for p in procs if p[1] in uids] == [], procs
    assert [p for p in procs if p[2] == "Z"] == [], procs
    assert any(p[0] == 1 and p[1] == 0 for p in procs), procs  # the runner, root, pid 1


SLEEPS = "import os, time\ntime.sleep(4)\nprint(f'uid={os.getuid()}', flush=True)\n"


def test_a_host_runners_sweep_never_reaches_a_containers_run(runner_image: str, s3: FakeS3) -> None:
    """Regression: containers share this machine's kernel with the `local` backend's runners.
    A host runner ends each run with kill(-1) as the run's uid; a container's run of the same
    uid was killed by it (SIGKILL, exit -9, retried while the script seemed to run)."""
    spec = ContainerSpec(image=runner_image, cpu_units=512, memory_mib=1024)
    with container_uid_block() as uid_base:
        env = {
            "RUNS_MANIFEST_URL": s3.manifest([s3.run("contained", SLEEPS)]),
            "RUNNER_UID_BASE": str(uid_base),
            "RUNNER_UID_COUNT": str(CONTAINER_UID_COUNT),
        }
        variables = [argument for name in env for argument in ("--env", name)]
        client = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
        container = subprocess.Popen(
            ["docker", "run", "--rm", *spec.run_options(), *variables, runner_image],
            env=client | env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while "/reports/contained/started.json" not in s3.store.puts:
            assert container.poll() is None, container.stderr
            assert time.monotonic() < deadline, "the container's run never started"
            time.sleep(0.1)

        # While the contained script sleeps, a host runner runs a quick script to its end,
        # sweeping its run's uid as it always does.
        host = start_runner(
            runner_env(s3.manifest([s3.run("hosted", "print('quick')")], path="/host.json"))
        )
        assert host.wait(timeout=60) == 0, host.stderr.read() if host.stderr else ""
        assert container.wait(timeout=60) == 0, container.stderr

    hosted, contained = s3.report("hosted", "finished"), s3.report("contained", "finished")
    assert hosted["status"] == "SUCCEEDED", hosted
    assert contained["status"] == "SUCCEEDED", contained
    assert contained["exit_code"] == 0, contained
    assert _field(contained, "uid") == uid_base
