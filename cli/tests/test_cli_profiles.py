"""`scheduler login`, profiles, and where the token comes from."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

from cli_fakes import FakeApi, Reply, Scheduler, job

REFUSED = Reply(
    401,
    {"message": "Unauthorized"},
    {"www-authenticate": 'Bearer error="invalid_token" error_description="the token has expired"'},
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def token_command(tmp_path: Path, *tokens: str) -> str:
    """A command printing a comment and then each token in turn, one per run."""
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps(list(tokens)))
    script = tmp_path / "mint.py"
    script.write_text(
        "import json, pathlib, sys\n"
        f"path = pathlib.Path({str(tokens_file)!r})\n"
        "tokens = json.loads(path.read_text())\n"
        "path.write_text(json.dumps(tokens[1:] or tokens))\n"
        "print('# a comment first, as make token prints')\n"
        "print(tokens[0])\n"
    )
    return f"{sys.executable} {script}"


def test_login_with_a_token_command_saves_a_private_profile_and_each_command_runs_it(
    api: FakeApi, bare: Scheduler, tmp_path: Path, config_dir: Path
) -> None:
    # Given an API and a command that mints a new token each time
    api.reply("GET", "/jobs", {"items": [job()], "next_token": None})
    command = token_command(tmp_path, "token-1", "token-2", "token-3")

    # When one logs in with it
    result = bare("login", api.url, "--token-command", command)

    # Then the token was checked, and the profile (named after the URL) is saved and current
    assert result.exit_code == 0, result.stderr
    assert api.calls("GET", "/jobs")[0].query == {"limit": "1"}
    assert api.calls()[0].headers["authorization"] == "Bearer token-1"
    name = api.url.removeprefix("http://")
    assert f"Logged in to {api.url} (profile {name!r})" in result.stdout
    saved = json.loads((config_dir / "config.json").read_text())
    assert saved == {
        "current": name,
        "profiles": {name: {"url": api.url, "token_command": command}},
    }
    assert mode(config_dir) == 0o700
    assert mode(config_dir / "config.json") == 0o600
    assert not (config_dir / "credentials.json").exists()

    # And each later command uses the command's newest token
    assert bare("jobs", "list").exit_code == 0
    assert api.calls()[-1].headers["authorization"] == "Bearer token-2"


def test_a_token_given_to_login_is_stored_0600_and_logout_forgets_it(
    api: FakeApi, bare: Scheduler, config_dir: Path
) -> None:
    api.reply("GET", "/jobs", {"items": [], "next_token": None})

    result = bare("login", api.url, "--profile", "dev", "--token-stdin", stdin="secret-token\n")

    assert result.exit_code == 0, result.stderr
    credentials = config_dir / "credentials.json"
    assert json.loads(credentials.read_text()) == {"dev": "secret-token"}
    assert mode(credentials) == 0o600
    assert bare("jobs", "list").exit_code == 0
    assert api.calls()[-1].headers["authorization"] == "Bearer secret-token"

    assert bare("logout").exit_code == 0
    assert json.loads(credentials.read_text()) == {}
    assert json.loads((config_dir / "config.json").read_text())["profiles"] == {}


def test_a_refused_token_saves_nothing(api: FakeApi, bare: Scheduler, config_dir: Path) -> None:
    api.reply("GET", "/jobs", REFUSED)

    result = bare("login", api.url, "--token-stdin", stdin="old-token\n")

    assert result.exit_code == 5
    assert "401: Unauthorized: the token has expired" in result.stderr
    assert not (config_dir / "config.json").exists()


def test_tokens_from_an_environment_variable_and_a_file(
    api: FakeApi, bare: Scheduler, tmp_path: Path
) -> None:
    api.reply("GET", "/jobs", {"items": [], "next_token": None})
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")

    from_env = bare("login", api.url, "-p", "env", "--token-env", "MY_TOKEN", env={"MY_TOKEN": "e"})
    from_file = bare("login", api.url, "-p", "file", "--token-file", str(token_file))
    used_env = bare("-p", "env", "jobs", "list", env={"MY_TOKEN": "env-token"})
    unset = bare("-p", "env", "jobs", "list", env={"MY_TOKEN": ""})
    used_file = bare("jobs", "list")  # "file" is current: the last login

    assert from_env.exit_code == from_file.exit_code == 0
    assert used_env.exit_code == 0
    assert api.calls()[-2].headers["authorization"] == "Bearer env-token"
    assert unset.exit_code == 5
    assert "takes its token from $MY_TOKEN, which is not set" in unset.stderr
    assert used_file.exit_code == 0
    assert api.calls()[-1].headers["authorization"] == "Bearer file-token"


def test_profiles_list_and_use_and_the_profile_for_an_api_url(
    api: FakeApi, bare: Scheduler
) -> None:
    api.reply("GET", "/jobs", {"items": [], "next_token": None})
    other = "http://127.0.0.1:9"  # nothing listens there; --no-verify saves it all the same
    assert (
        bare("login", other, "-p", "prod", "--token-stdin", "--no-verify", stdin="p").exit_code == 0
    )
    assert bare("login", api.url, "-p", "local", "--token-stdin", stdin="l").exit_code == 0

    listed = bare("profiles", "list", "--json")
    switched = bare("profiles", "use", "prod")
    by_url = bare("--api-url", api.url, "jobs", "list")
    unknown = bare("-p", "nope", "jobs", "list")

    assert json.loads(listed.stdout) == [
        {"name": "local", "url": api.url, "token": "stored", "current": True},
        {"name": "prod", "url": other, "token": "stored", "current": False},
    ]
    assert switched.exit_code == 0
    assert by_url.exit_code == 0, by_url.stderr  # prod is current, but the URL is local's
    assert api.calls()[-1].headers["authorization"] == "Bearer l"
    assert unknown.exit_code == 2
    assert "no profile named 'nope' (profiles: local, prod)" in unknown.stderr


def test_without_a_profile_or_a_url_there_is_nothing_to_talk_to(bare: Scheduler) -> None:
    nothing = bare("jobs", "list")
    no_token = bare("--api-url", "http://127.0.0.1:9", "jobs", "list")

    assert nothing.exit_code == 2
    assert "run `scheduler login URL`" in nothing.stderr
    assert no_token.exit_code == 5


def test_a_failing_token_command_is_an_auth_error(api: FakeApi, bare: Scheduler) -> None:
    result = bare("login", api.url, "--token-command", "echo 'no key here' >&2; exit 3")

    assert result.exit_code == 5
    assert "the token command failed (exit 3)" in result.stderr
    assert "no key here" in result.stderr
    assert api.seen == []
