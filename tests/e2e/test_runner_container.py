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

from devstack.docker_backend import ContainerSpec
from unit.test_runner import FORK_BOMB, SETSID_DAEMON, FakeS3, _field

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
    env = {
        "RUNS_MANIFEST_URL": s3.manifest(runs),
        "RUNNER_KILL_GRACE_SECONDS": "1",
        **spec.environment,
    }
    variables = [argument for name in env for argument in ("--env", name)]
    client = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ} | env
    began = time.monotonic()
    completed = subprocess.run(
        ["docker", "run", "--rm", *spec.run_options(), *variables, runner_image],
        env=client,
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
    assert all(uid >= 2_000_000_000 for uid in uids)  # uids of their own, no passwd entry

    tail = observer["output_tail"]
    procs = json.loads(tail[tail.index("PROCS") + len("PROCS") :].split("\n", 1)[0])
    # Nothing of the two ended runs is left, not even a zombie for pid 1 to reap
    assert [p for p in procs if p[1] in uids] == [], procs
    assert [p for p in procs if p[2] == "Z"] == [], procs
    assert any(p[0] == 1 and p[1] == 0 for p in procs), procs  # the runner, root, pid 1
