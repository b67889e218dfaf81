"""The `scheduler` CLI, installed, driven as a user would against the local stack: login, create,
run --watch, runs, output, pause/resume, cancel, delete, and the exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import launcher
from e2e.api_client import FAR_FUTURE, unique
from e2e.conftest import ROOT, LocalStack

pytestmark = pytest.mark.e2e

COMMAND_TIMEOUT = 60
WATCH_TIMEOUT = "30"  # --wait-timeout: a run now of the local stack ends within seconds

PRINT_PARAMETERS = """\
import json, os
print("parameters:", json.dumps(json.loads(os.environ["JOB_PARAMETERS"]), sort_keys=True))
"""


def cli_path() -> str:
    found = shutil.which("scheduler", path=os.path.dirname(sys.executable))
    assert found, "the CLI is not installed in this environment (make install: pip install -e cli)"
    return found


class Cli:
    """`scheduler ARGS` as a subprocess, with its own config directory."""

    def __init__(self, config_dir: Path) -> None:
        self.command = cli_path()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        self.env["SCHEDULER_CONFIG_DIR"] = str(config_dir)

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, code: int | None = 0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.command, *args],
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if code is not None:
            assert done.returncode == code, (
                f"scheduler {' '.join(args)} exited {done.returncode}, not {code}:\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture(scope="module")
def cli(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """Logged in as alice to the local stack: checked once with the token command the docs
    give, then with a token file (the command costs a process start per CLI call)."""
    tmp_path = tmp_path_factory.mktemp("cli")
    run = Cli(tmp_path / "config")
    token_command = " ".join(
        [
            f"cd {ROOT} &&",
            f"PYTHONPATH={launcher.PYTHONPATH}",
            sys.executable,
            "-m devstack token alice",
            f"--state-dir {local_stack.state_dir} --api-port {local_stack.api_port}",
        ]
    )
    logged_in = run(
        "login", local_stack.url, "--profile", "local", "--token-command", token_command
    )
    assert "as alice" in logged_in.stdout
    token_file = tmp_path / "token"
    token_file.write_text(local_stack.token("alice"))
    run("login", local_stack.url, "--profile", "local", "--token-file", str(token_file))
    return run


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], str]:
    def write(source: str) -> str:
        path = tmp_path / f"{unique('script')}.py"
        path.write_text(source)
        return str(path)

    return write


def test_create_run_watch_runs_output_pause_resume_delete(
    cli: Cli, script: Callable[[str], str]
) -> None:
    # Given a job created from the command line
    name = unique("cli")
    created = cli.json(
        "jobs", "create", "--name", name, "--schedule", FAR_FUTURE,
        "--script", script(PRINT_PARAMETERS), "--param", "region=eu", "--param", "count=2",
        "--catch-up", "LATEST", "--notify-on-failure",
    )  # fmt: skip
    assert created["parameters"] == {"region": "eu", "count": 2}
    assert created["catch_up"]["policy"] == "LATEST"
    assert created["notifications"]["on_failure"] is True

    # When it is run now with its own parameters, followed to its end
    watched = cli("run", name, "--param", "region=us", "--reason", "e2e", "--watch",
                  "--interval", "0.3", "--wait-timeout", WATCH_TIMEOUT)  # fmt: skip

    # Then the run's states went by on stderr and its output is on stdout
    assert watched.stdout == 'parameters: {"region": "us"}\n'
    assert "SUCCEEDED" in watched.stderr.splitlines()[-1]

    # And the run is in the job's history, with its reason, and its output can be read again
    [listed] = cli.json("runs", "list", name)["items"]
    assert (listed["status"], listed["trigger"], listed["reason"]) == ("SUCCEEDED", "MANUAL", "e2e")
    assert listed["parameters_overridden"] is True
    table = cli("runs", "list", name).stdout
    assert listed["key"] in table
    assert "SUCCEEDED" in table
    assert cli("runs", "output", name, listed["key"]).stdout == watched.stdout
    assert cli("runs", "output", name, "latest").stdout == watched.stdout
    assert cli.json("runs", "get", created["job_id"], "latest")["exit_code"] == 0
    assert cli.json("jobs", "get", name)["last_run"]["key"] == listed["key"]

    # And a run that has ended cannot be cancelled: a conflict
    ended = cli("runs", "cancel", name, listed["key"], code=4)
    assert "run_ended" in ended.stderr

    # When it is paused and resumed, then so it shows
    assert cli.json("jobs", "pause", name)["status"] == "PAUSED"
    assert name in cli("jobs", "list", "--status", "PAUSED", "--name", name).stdout
    assert cli.json("jobs", "get", name)["next_run_at"] is None
    resumed = cli.json("jobs", "resume", name)
    assert resumed["status"] == "ACTIVE"
    assert resumed["next_run_at"] is not None

    # When it is changed, then only what was given changed
    updated = cli.json("jobs", "update", name, "--late-after", "120", "--description", "nightly")
    assert updated["notifications"] == {
        "on_failure": True,
        "late_after_seconds": 120,
        "missed_after_seconds": None,
    }
    assert updated["description"] == "nightly"
    assert updated["parameters"] == {"region": "eu", "count": 2}

    # When it is deleted, then it is not found any more, by id or name
    cli("jobs", "delete", name)
    cli("jobs", "get", created["job_id"], code=3)
    cli("jobs", "get", name, code=3)


def test_a_failed_run_and_a_cancelled_one_exit_1(cli: Cli, script: Callable[[str], str]) -> None:
    # Given a job whose script fails at once, and one that would run for a while
    failing = unique("cli-fail")
    cli("jobs", "create", "--name", failing, "--schedule", FAR_FUTURE, "--max-attempts", "1",
        "--script", script("import sys\nprint('about to fail')\nsys.exit(3)\n"))  # fmt: skip
    slow = unique("cli-slow")
    cli("jobs", "create", "--name", slow, "--schedule", FAR_FUTURE, "--max-attempts", "1",
        "--script", script("import time\ntime.sleep(20)\n"))  # fmt: skip

    # When the failing one is run and watched, then the CLI exits 1 with the final run as JSON
    failed = cli("run", failing, "--watch", "--json", "--interval", "0.3",
                 "--wait-timeout", WATCH_TIMEOUT, code=1)  # fmt: skip
    run = json.loads(failed.stdout)
    assert (run["status"], run["exit_code"]) == ("FAILED", 3)
    assert "about to fail" in run["output_tail"]

    # When the slow one is started and cancelled, then following it ends at once, with exit 1
    key = cli.json("run", slow)["key"]
    cancelled = cli.json("runs", "cancel", slow, key, "--reason", "e2e")
    assert cancelled["status"] == "CANCELLED"
    assert "e2e" in cancelled["error"]
    cli("runs", "get", slow, key, "--watch", code=1)

    for name in (failing, slow):
        cli("jobs", "delete", name)


def test_an_output_longer_than_the_tail_is_read_whole_from_its_link(
    cli: Cli, script: Callable[[str], str]
) -> None:
    # Given a job printing ~12 KiB: more than the run's 4 KiB tail, so it is stored in S3
    name = unique("cli-long")
    long_script = script("for i in range(300):\n    print(f'line {i:04d} ' + 'x' * 30)\n")
    cli("jobs", "create", "--name", name, "--schedule", FAR_FUTURE, "--script", long_script)
    expected = "".join(f"line {i:04d} {'x' * 30}\n" for i in range(300))

    # When it is run and watched, and its output asked for again
    watched = cli("run", name, "--watch", "--interval", "0.3", "--wait-timeout", WATCH_TIMEOUT)
    run = cli.json("runs", "get", name, "latest")

    # Then both print all of it: the API answered 307 to a presigned link, which was followed
    assert run["output_key"] is not None
    assert run["output_bytes"] == len(expected)
    assert watched.stdout == expected
    assert cli("runs", "output", name, "latest").stdout == expected

    cli("jobs", "delete", name)


def test_exit_codes_against_the_stack(
    cli: Cli, local_stack: LocalStack, script: Callable[[str], str]
) -> None:
    name = unique("cli-codes")
    source = script("print(1)\n")
    cli("jobs", "create", "--name", name, "--schedule", FAR_FUTURE, "--script", source)

    # A name taken: conflict (4). A schedule the API refuses, a field off its model: usage (2)
    taken = cli("jobs", "create", "--name", name, "--schedule", FAR_FUTURE, "--script", source,
                code=4)  # fmt: skip
    assert "job_name_conflict" in taken.stderr
    refused = cli("jobs", "create", "--name", unique("x"), "--schedule", "61 * * * *",
                  "--script", source, code=2)  # fmt: skip
    assert "validation_error" in refused.stderr
    cli("jobs", "create", "--name", unique("x"), "--schedule", FAR_FUTURE, "--script", source,
        "--max-attempts", "11", code=2)  # fmt: skip

    # No such job: not found (3); someone else's job is not found either
    cli("jobs", "get", unique("nope"), code=3)
    bob = {"SCHEDULER_TOKEN": local_stack.token("bob")}
    cli("jobs", "get", cli.json("jobs", "get", name)["job_id"], env=bob, code=3)

    # An expired token: auth (5), with the authorizer's reason
    stale = local_stack.token("alice", lifetime_seconds=-60)
    expired = cli("jobs", "list", env={"SCHEDULER_TOKEN": stale}, code=5)
    assert "expired" in expired.stderr

    # An API that is not there: unavailable (6)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    cli("--api-url", closed, "jobs", "list", env={"SCHEDULER_TOKEN": "t"}, code=6)

    cli("jobs", "delete", name)


def test_the_cli_models_come_from_the_document_the_stack_serves(local_stack: LocalStack) -> None:
    served = requests.get(f"{local_stack.url}/openapi.json", timeout=30).json()
    committed = json.loads((ROOT / "cli" / "openapi.json").read_text())
    assert served == committed, "the API changed: run `make cli-models` and check the CLI"
