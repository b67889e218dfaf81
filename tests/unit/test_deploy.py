"""`make deploy` (devstack/deploy.py): the commands it runs, in order; the samconfig.toml
overrides it keeps; and the image check that refuses an image without the runner."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from devstack import deploy

REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/scheduler-runner"


def image_tar(path: Path, *names: str) -> Path:
    with tarfile.open(path, "w") as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    return path


def test_an_image_without_the_runner_is_refused(tmp_path: Path) -> None:
    runner = image_tar(tmp_path / "runner.tar", "app/entrypoint.py", "app/jobrunner/main.py")
    bare = image_tar(tmp_path / "bare.tar", "usr/bin/python3")
    assert deploy.holds_the_runner(["python3", "/app/entrypoint.py"], runner)
    assert not deploy.holds_the_runner(["python3", "/app/entrypoint.py"], bare)
    assert not deploy.holds_the_runner(["python3"], runner)  # e.g. python:3.11-slim's own
    assert not deploy.holds_the_runner(None, runner)


def test_samconfig_overrides_are_kept_and_the_image_added() -> None:
    dev = deploy.config_overrides("dev")
    assert "LogLevel=DEBUG" in dev
    merged = deploy.merged_overrides(dev, RunnerImageUri=f"{REPO}@sha256:ab", Architecture="x86_64")
    assert f"RunnerImageUri={REPO}@sha256:ab" in merged
    assert "Architecture=x86_64" in merged
    assert not [item for item in merged if item.startswith("RunnerImageUri=REPLACE")]
    assert [item.split("=")[0] for item in merged].count("Architecture") == 1


def test_a_dry_run_prints_build_check_push_then_deploy(capsys: pytest.CaptureFixture[str]) -> None:
    run = deploy.Deploy(REPO, "dev", "arm64", dry_run=True, sam="sam")
    run("abc123")
    steps = [command.split()[:2] for command in run.commands]
    assert steps[0] == ["docker", "build"]
    assert ["docker", "export"] in steps
    assert steps.index(["docker", "push"]) > steps.index(["docker", "export"])
    assert run.commands[-1].startswith("sam deploy --config-env dev --parameter-overrides")
    assert "RunnerImageUri=" in run.commands[-1]
    assert "LogLevel=DEBUG" in run.commands[-1]
    assert f"{REPO}:abc123" in run.commands[0]
    assert "+ docker build" in capsys.readouterr().out
