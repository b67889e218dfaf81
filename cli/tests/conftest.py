"""The CLI against a scripted HTTP API on 127.0.0.1 (cli_fakes.FakeApi): each test says what
the API answers and reads what the CLI sent. The CLI runs in-process (click's CliRunner) with its
config directory in the test's tmp_path."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli_fakes import TOKEN, FakeApi, Scheduler
from scheduler_cli.main import cli


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own config directory; no SCHEDULER_* setting from outside."""
    for name in ("SCHEDULER_PROFILE", "SCHEDULER_API_URL", "SCHEDULER_TOKEN", "SCHEDULER_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    directory = tmp_path / "config"
    monkeypatch.setenv("SCHEDULER_CONFIG_DIR", str(directory))
    return directory


def runner() -> CliRunner:
    """stderr apart from stdout (click 8.1 needs asking; 8.2 always keeps both)."""
    if "mix_stderr" in inspect.signature(CliRunner).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    return CliRunner()


@pytest.fixture
def scheduler(api: FakeApi) -> Scheduler:
    """Run `scheduler ARGS` against the fake API with a token (env: more variables)."""

    def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
        environment = {"SCHEDULER_API_URL": api.url, "SCHEDULER_TOKEN": TOKEN} | (env or {})
        return runner().invoke(cli, list(args), env=environment, input=stdin, prog_name="scheduler")

    return invoke


@pytest.fixture
def bare() -> Scheduler:
    """Run `scheduler ARGS` with nothing but the config directory (and env)."""

    def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
        return runner().invoke(cli, list(args), env=env, input=stdin, prog_name="scheduler")

    return invoke
