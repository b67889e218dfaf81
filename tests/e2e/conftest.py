"""One local stack (`python -m devstack run`) per test session, driven over real HTTP; a second
one with the docker dispatch backend (scripts run inside the runner image) for the tests that
take `backend_stack` or `docker_stack`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import auth, docker_backend, images, launcher

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
# Pipeline tests: a watcher tick every 2 s, the first retry after 1 s.
# A run reports "started" (RUNNING) 1 s after its script starts here (10 s in production, where
# shorter runs report only their end): the tests sequence on RUNNING with scripts of a few seconds.
PIPELINE_PACE = (
    "--watcher-interval",
    "2",
    "--retry-base-seconds",
    "1",
    "--function-env",
    "STARTED_REPORT_SECONDS=1",
)
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class LocalStack:
    url: str
    api_port: int
    state_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def issuer(self) -> str:
        return auth.issuer_for(self.api_port)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.state_dir / "stack.json").read_text())
        return state

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def token(self, user: str, **kwargs: Any) -> str:
        """A token from the stack's own key pair (kwargs go to KeyPair.mint)."""
        kwargs.setdefault("issuer", self.issuer)
        return auth.KeyPair.load_or_create(self.state_dir).mint(user, **kwargs)

    def token_from_cli(self, user: str) -> str:
        """What `python -m devstack token <user>` prints as its last line."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "devstack",
                "token",
                user,
                "--state-dir",
                str(self.state_dir),
                "--api-port",
                str(self.api_port),
            ],
            cwd=ROOT,
            env=launcher.environment(),
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return result.stdout.strip().splitlines()[-1]

    def headers(self, user: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}", **extra}


def start_stack(
    state_dir: Path, pace: tuple[str, ...] = PIPELINE_PACE, *arguments: str
) -> LocalStack:
    api_port, moto_port = free_port(), free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "devstack.log"
    with log_path.open("wb") as log:
        process = launcher.spawn(
            state_dir, api_port, "--moto-port", str(moto_port), *pace, *arguments, log=log
        )
    stack = LocalStack(f"http://127.0.0.1:{api_port}", api_port, state_dir, process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the local stack exited with {process.returncode}:\n{stack.log()}")
        try:
            answered = requests.get(f"{stack.url}/openapi.json", timeout=2).status_code == 200
            if answered and (state_dir / "stack.json").exists():
                return stack
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        time.sleep(0.1)
    stop_stack(stack, signal.SIGKILL)
    pytest.fail(f"the local stack did not answer within {STARTUP_TIMEOUT:.0f} s:\n{stack.log()}")


def stop_stack(stack: LocalStack, how: signal.Signals = signal.SIGINT) -> int:
    """Signal the stack, wait for it, and check that it left no process behind."""
    moto_pid = stack.state().get("moto_pid") if (stack.state_dir / "stack.json").exists() else None
    stack.process.send_signal(how)
    try:
        code = stack.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()
        pytest.fail(f"the local stack ignored {how.name} for {STOP_TIMEOUT:.0f} s")
    if moto_pid is not None:
        deadline = time.monotonic() + 5
        while process_running(moto_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_running(moto_pid), f"moto server (pid {moto_pid}) outlived the stack"
    return code


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("devstack"))
    yield stack
    code = stop_stack(stack, signal.SIGINT)
    assert code == 0, f"the local stack exited with {code}:\n{stack.log()}"
    assert not (stack.state_dir / "stack.json").exists()


@pytest.fixture
def api(local_stack: LocalStack) -> str:
    return local_stack.url


@pytest.fixture(scope="session")
def runner_image() -> str:
    """The runner image built from runner/Dockerfile on a local Debian base (cached; Docker
    installed and started if missing, as `make runner-image-local` does): the tests skip only
    when Docker cannot be made available here."""
    try:
        return images.ensure_runner_image()
    except images.DockerUnavailable as error:
        pytest.skip(f"Docker cannot be made available here, so no container test: {error}")


def docker_arguments(image: str) -> tuple[str, ...]:
    """What makes `python -m devstack run` start each pack in a container of `image`."""
    return ("--dispatch", "docker", "--runner-image", image)


@pytest.fixture(scope="session")
def docker_stack(
    runner_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A second local stack whose runner tasks are containers of the runner image."""
    state_dir = tmp_path_factory.mktemp("devstack-docker")
    stack = start_stack(state_dir, PIPELINE_PACE, *docker_arguments(runner_image))
    try:
        yield stack
        code = stop_stack(stack, signal.SIGINT)
        assert code == 0, f"the docker stack exited with {code}:\n{stack.log()}"
    finally:
        docker_backend.remove_containers(state_dir / "tasks")


@pytest.fixture(params=["local", "docker"])
def backend_stack(request: pytest.FixtureRequest) -> LocalStack:
    """The test runs twice: on the stack whose runners are subprocesses, and on the one whose
    runners are containers of the runner image."""
    stack: LocalStack = request.getfixturevalue(f"{request.param}_stack")
    return stack
