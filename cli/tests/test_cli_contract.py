"""What scripts rely on: exit codes, JSON errors, the help, completion, and an installed CLI
that needs nothing of the server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import click
import pytest

from cli_fakes import JOB_ID, RUN_KEY, FakeApi, Reply, Scheduler, error, job
from scheduler_cli.main import cli

COMMANDS = {
    "login",
    "logout",
    "profiles list",
    "profiles use",
    "jobs create",
    "jobs list",
    "jobs get",
    "jobs update",
    "jobs pause",
    "jobs resume",
    "jobs delete",
    "runs list",
    "runs get",
    "runs output",
    "runs cancel",
    "run",
    "backfill",
    "preview",
    "completion",
}


def leaf_commands(group: click.Group, prefix: str = "") -> set[str]:
    found = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= leaf_commands(command, f"{prefix}{name} ")
        else:
            found.add(f"{prefix}{name}")
    return found


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply(400, error("invalid_input", "bad")), 2),
        (Reply(401, {"message": "Unauthorized"}), 5),
        (Reply(403, {"message": "Forbidden"}), 5),
        (Reply(404, error("job_not_found", "no such job")), 3),
        (Reply(409, error("job_busy", "retry")), 4),
        (Reply(422, error("idempotency_key_reused", "other body")), 4),
        (Reply(429, {"message": "Too Many Requests"}), 6),
        (Reply(500, {"message": "Internal Server Error"}), 6),
        (Reply(503, error("service_unavailable", "busy")), 6),
        (Reply(200, {"key": RUN_KEY}), 6),  # an answer off the API's models
        (Reply(200, "<html>a proxy's page</html>"), 6),
    ],
)
def test_each_kind_of_answer_has_its_exit_code(
    api: FakeApi, scheduler: Scheduler, reply: Reply, code: int
) -> None:
    # (cancel is not retried: each answer is taken as it comes)
    api.reply("GET", f"/jobs/{JOB_ID}", job())
    api.reply("POST", f"/jobs/{JOB_ID}/runs/{RUN_KEY}/cancel", reply)

    result = scheduler("runs", "cancel", JOB_ID, RUN_KEY)

    assert result.exit_code == code, result.stderr
    assert result.stderr.startswith("error: ")


def test_an_answer_off_the_models_says_so(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", job(status="ARCHIVED"))

    result = scheduler("jobs", "get", JOB_ID)

    assert result.exit_code == 6
    assert "does not match its OpenAPI models (Job)" in result.stderr
    assert "status" in result.stderr


def test_an_api_that_is_not_there_is_unavailable(scheduler: Scheduler) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"

    result = scheduler("jobs", "list", env={"SCHEDULER_API_URL": url})

    assert result.exit_code == 6
    assert f"cannot reach the API at {url}" in result.stderr


def test_with_json_errors_are_json_on_stderr(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply("GET", f"/jobs/{JOB_ID}", Reply(404, error("job_not_found", "no such job")))
    api.reply("GET", "/jobs", {"items": [], "next_token": None})

    from_api = scheduler("jobs", "get", JOB_ID, "--json")
    local = scheduler("--json", "jobs", "get", "nope-by-name")

    assert from_api.exit_code == 3
    assert json.loads(from_api.stderr) == {
        "status": 404,
        "error": {"code": "job_not_found", "message": "no such job", "details": []},
    }
    assert from_api.stdout == ""
    assert json.loads(local.stderr)["error"]["code"] == "not_found"


def test_the_help_names_every_command_and_the_exit_codes(scheduler: Scheduler) -> None:
    assert leaf_commands(cli) == COMMANDS
    top = scheduler("--help")
    assert top.exit_code == 0
    for group in ("jobs", "runs", "run", "backfill", "preview", "login", "profiles"):
        assert f"  {group} " in top.stdout
    for code in range(8):
        assert f"  {code}  " in top.stdout
    for command in COMMANDS:
        shown = scheduler(*command.split(), "--help")
        assert shown.exit_code == 0, command
        assert shown.stdout.splitlines()[0].startswith(f"Usage: scheduler {command} ")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(scheduler: Scheduler, shell: str) -> None:
    result = scheduler("completion", shell)

    assert result.exit_code == 0
    assert "_SCHEDULER_COMPLETE" in result.stdout


def test_completion_offers_commands_and_your_job_names(api: FakeApi, scheduler: Scheduler) -> None:
    api.reply(
        "GET",
        "/jobs",
        {"items": [job(name="report"), job(name="reindex")], "next_token": None},
    )

    def complete(words: str) -> list[str]:
        result = scheduler(
            env={
                "_SCHEDULER_COMPLETE": "bash_complete",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
            }
        )
        return [line.split(",", 1)[1] for line in result.stdout.splitlines()]

    assert {"create", "list", "get", "update", "pause", "resume", "delete"} <= set(
        complete("scheduler jobs ")
    )
    assert complete("scheduler run re") == ["report", "reindex"]
    assert api.calls("GET", "/jobs")[0].query == {"name": "re", "limit": "100"}


def test_the_installed_command_needs_nothing_of_the_server(api: FakeApi) -> None:
    # Given the installed entry point, run with no PYTHONPATH (the server's layer is not on it)
    command = shutil.which("scheduler", path=os.path.dirname(sys.executable))
    assert command is not None
    api.reply("GET", "/jobs", {"items": [job()], "next_token": None})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "SCHEDULER_API_URL": api.url,
        "SCHEDULER_TOKEN": "t",
    }

    # When it lists jobs, and when it is asked which modules it loads
    listed = subprocess.run(
        [command, "jobs", "list", "--json"], env=env, capture_output=True, text=True, check=False
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys, scheduler_cli.main; print(sorted(m for m in sys.modules "
            "if m == 'scheduler' or m.startswith('scheduler.')))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )

    # Then it works, and never imported the server's package
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["items"][0]["job_id"] == JOB_ID
    assert probe.stdout.strip() == "[]"


def test_the_installed_command_exits_with_the_documented_codes(api: FakeApi) -> None:
    command = shutil.which("scheduler", path=os.path.dirname(sys.executable))
    assert command is not None
    api.reply("GET", f"/jobs/{JOB_ID}", Reply(404, error("job_not_found", "no such job")))
    env = os.environ | {"SCHEDULER_API_URL": api.url, "SCHEDULER_TOKEN": "t"}

    def exit_code(*args: str) -> int:
        done = subprocess.run([command, *args], env=env, capture_output=True, check=False)
        return done.returncode

    assert exit_code("jobs", "get", JOB_ID) == 3
    assert exit_code("jobs", "frobnicate") == 2
    assert exit_code("--version") == 0
