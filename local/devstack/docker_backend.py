"""The local stack's `docker` dispatch backend: each pack runs in a container of the runner image,
shaped like the task definition the stack registered from template.yaml (read back with ECS
DescribeTaskDefinition, as Fargate would): its image, CPU and memory, read-only root file
system, the scratch volume as a tmpfs, its stop timeout, and only the variables the ECS backend
passes in the container overrides. The task-stopped event comes from the container's real exit
(`docker wait`, `docker inspect`).

Networking: the host's namespace (`--network host`), so that the runner reaches moto on
127.0.0.1 through its presigned URLs; this machine reaches no other address.

Per-run uids: on Fargate each task has a kernel of its own (a microVM), so every runner takes the
first block of its uid range. Here the containers share this machine's kernel with the `local`
backend's runners, whose sweep of a run's uid (``kill(-1)`` as that uid) reaches every process of
that uid, a container's too. So each container is given a block of uids of its own, above the
host runners' range, for as long as it lives (`container_uid_block`).

Selected with `python -m devstack run --dispatch docker` (DISPATCH_BACKEND=docker in the
executor's environment); the default `local` backend needs no Docker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from pydantic_settings import BaseSettings, SettingsConfigDict

from devstack import images
from devstack.local_backend import LocalBackendSettings, TaskBackend
from scheduler import wiring
from scheduler.pipeline.manifests import Manifests

if TYPE_CHECKING:
    from mypy_boto3_ecs.type_defs import TaskDefinitionTypeDef
    from mypy_boto3_sqs import SQSClient

BACKEND_NAME = "docker"
# Every container of a stack carries its work directory as this label (see remove_containers).
LABEL = "scheduler.devstack.work-dir"
STOPPED_REASON = "Essential container in task exited"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
CPU_UNITS_PER_CPU = 1024
DOCKER_TIMEOUT_SECONDS = 60.0
# Host runners take per-run uids from 2,000,000,000 in 1,024 blocks of 64 (the runner's
# RUNNER_UID_BASE and RUNNER_UID_COUNT defaults); containers' blocks start above them.
CONTAINER_UID_BASE = 2_100_000_000
CONTAINER_UID_COUNT = 64
CONTAINER_UID_BLOCKS = 1024


class DockerBackendSettings(BaseSettings):
    """The task definition the executor's environment names (TASK_DEFINITION, as on AWS)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    task_definition: str
    runner_container: str = "runner"


@dataclass(frozen=True)
class ContainerSpec:
    """What `docker run` takes from an ECS task definition."""

    image: str
    cpu_units: int
    memory_mib: int
    read_only: bool = False
    scratch: tuple[str, ...] = ()  # container paths of the task's ephemeral volumes
    stop_timeout: int | None = None
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_task_definition(
        cls, definition: TaskDefinitionTypeDef, container: str = "runner"
    ) -> ContainerSpec:
        (spec,) = [c for c in definition["containerDefinitions"] if c.get("name") == container]
        # A volume with no host path is the task's ephemeral storage (on Fargate, a directory
        # on the task's own disk): locally, a tmpfs.
        ephemeral = {
            str(volume["name"])
            for volume in definition.get("volumes", [])
            if not volume.get("host", {}).get("sourcePath")
            and "efsVolumeConfiguration" not in volume
        }
        scratch = tuple(
            str(mount["containerPath"])
            for mount in spec.get("mountPoints", [])
            if mount.get("sourceVolume") in ephemeral
        )
        stop_timeout = spec.get("stopTimeout")
        return cls(
            image=spec["image"],
            cpu_units=int(definition.get("cpu") or spec.get("cpu") or CPU_UNITS_PER_CPU),
            memory_mib=int(definition.get("memory") or spec.get("memory") or 512),
            read_only=bool(spec.get("readonlyRootFilesystem", False)),
            scratch=scratch,
            stop_timeout=int(stop_timeout) if stop_timeout is not None else None,
            environment={str(e["name"]): str(e["value"]) for e in spec.get("environment", [])},
        )

    def run_options(self) -> list[str]:
        """`docker create` options for this shape (the image and the variables excluded)."""
        options = [
            "--network=host",
            f"--cpus={self.cpu_units / CPU_UNITS_PER_CPU:g}",
            f"--memory={self.memory_mib}m",
            f"--memory-swap={self.memory_mib}m",  # no swap, as on Fargate
        ]
        if self.read_only:
            options.append("--read-only")
        # tmpfs pages count towards the container's memory, so its size can be the memory's.
        options += [
            f"--tmpfs={path}:rw,exec,nosuid,nodev,mode=1777,size={self.memory_mib}m"
            for path in self.scratch
        ]
        if self.stop_timeout is not None:
            options.append(f"--stop-timeout={self.stop_timeout}")
        return options


def register() -> None:
    """Make DISPATCH_BACKEND=docker build this backend (idempotent)."""
    wiring.register_dispatch_backend(BACKEND_NAME, _build)


def _build(manifests: Manifests) -> DockerBackend:
    local = LocalBackendSettings()  # type: ignore[call-arg]  # values come from the environment
    settings = DockerBackendSettings()  # type: ignore[call-arg]
    # ECS and EventBridge's part: the stack's own principal (a Session of its own: the
    # environment's admin keys under IAM enforcement), not the executor's role.
    aws = boto3.session.Session()
    definition = aws.client("ecs", config=wiring.RETRIES).describe_task_definition(
        taskDefinition=settings.task_definition
    )["taskDefinition"]
    spec = ContainerSpec.from_task_definition(definition, settings.runner_container)
    return DockerBackend(
        manifests,
        spec=spec,
        events=aws.client("sqs", config=wiring.RETRIES),
        events_queue_url=local.task_events_queue_url,
        work_dir=local.local_work_dir,
        start_delay=local.start_delay,
    )


def _docker(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [images.docker(), *arguments],
        env=env,
        text=True,
        capture_output=True,
        check=False,
        timeout=DOCKER_TIMEOUT_SECONDS,
    )


def _client_environment() -> dict[str, str]:
    """The docker client's own environment: how to reach the engine, nothing of ours."""
    keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT")
    return {name: os.environ[name] for name in keep if name in os.environ}


def remove_containers(work_dir: Path, *, running: bool = True) -> list[str]:
    """Remove the containers of the stack whose work directory this is (only the stopped ones
    unless `running`); returns their ids. For a stack that restarts after being killed, and for
    tests that leave nothing behind."""
    filters = ["--filter", f"label={LABEL}={work_dir}"]
    if not running:
        filters += ["--filter", "status=exited", "--filter", "status=created"]
    found = _docker("ps", "--all", "--quiet", "--no-trunc", *filters)
    ids = found.stdout.split()
    if ids:
        _docker("rm", "--force", *ids)
    return ids


@contextlib.contextmanager
def container_uid_block() -> Iterator[int]:
    """The first uid of a block that no other container on this machine holds, for the
    container's life: an flock on the block's file (dropped by the kernel if we die), so two
    stacks' containers never share a uid either (RLIMIT_NPROC counts per uid, kernel-wide)."""
    directory = Path(tempfile.gettempdir()) / "devstack-container-uid-blocks"
    directory.mkdir(mode=0o700, exist_ok=True)
    for block in range(CONTAINER_UID_BLOCKS):
        fd = os.open(directory / f"{block}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        try:
            yield CONTAINER_UID_BASE + block * CONTAINER_UID_COUNT
        finally:
            os.close(fd)
        return
    raise RuntimeError(f"all {CONTAINER_UID_BLOCKS} container uid blocks are in use")


class DockerBackend(TaskBackend):
    """Each pack in a container of the runner image: `docker create` with the task's shape,
    `docker start`, its output followed into the task's log, `docker wait` for its exit, then
    the task-stopped event with that exit code (and ECS's out-of-memory reason when the kernel
    killed it), and the container removed."""

    task_prefix = "docker"

    def __init__(
        self,
        manifests: Manifests,
        *,
        spec: ContainerSpec,
        events: SQSClient,
        events_queue_url: str,
        work_dir: Path,
        start_delay: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        super().__init__(
            manifests,
            events=events,
            events_queue_url=events_queue_url,
            work_dir=work_dir,
            start_delay=start_delay,
        )
        self.spec = spec

    def create_command(self, task_id: str, names: list[str]) -> list[str]:
        """`docker create` for one task; the variables' values come from the client's
        environment (`--env NAME`), so that no URL shows in a process listing."""
        variables = [argument for name in names for argument in ("--env", name)]
        return [
            "create",
            f"--name={task_id}",
            f"--label={LABEL}={self._work_dir}",
            *self.spec.run_options(),
            *variables,
            self.spec.image,
        ]

    def _execute(
        self, task_id: str, environment: dict[str, str], log: BinaryIO
    ) -> tuple[int | None, str]:
        with container_uid_block() as uid_base:
            uids = {"RUNNER_UID_BASE": str(uid_base), "RUNNER_UID_COUNT": str(CONTAINER_UID_COUNT)}
            return self._run_container(task_id, environment | uids, log)

    def _run_container(
        self, task_id: str, environment: dict[str, str], log: BinaryIO
    ) -> tuple[int | None, str]:
        variables = self.spec.environment | environment  # the overrides win, as on ECS
        client = _client_environment() | variables
        created = _docker(*self.create_command(task_id, sorted(variables)), env=client)
        if created.returncode != 0:  # ECS: the task stops without its container having run
            return None, f"CannotCreateContainerError: {created.stderr.strip()}"
        container = created.stdout.strip()
        try:
            started = _docker("start", container)
            if started.returncode != 0:
                return None, f"CannotStartContainerError: {started.stderr.strip()}"
            self._log_container(container, log)
            with subprocess.Popen(
                [images.docker(), "logs", "--follow", container],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            ) as follower:
                waited = subprocess.run(
                    [images.docker(), "wait", container],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                try:
                    follower.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    follower.kill()
            return self._exit(container, waited)
        finally:
            _docker("rm", "--force", container)

    def _exit(
        self, container: str, waited: subprocess.CompletedProcess[str]
    ) -> tuple[int | None, str]:
        state = self._inspect(container, "{{json .State}}")
        if isinstance(state, dict) and isinstance(state.get("ExitCode"), int):
            if state.get("OOMKilled"):
                return state["ExitCode"], OOM_REASON
            return state["ExitCode"], STOPPED_REASON
        if waited.returncode == 0 and waited.stdout.strip().lstrip("-").isdigit():
            return int(waited.stdout.strip()), STOPPED_REASON
        return None, f"the container's exit is unknown: {waited.stderr.strip()}"

    def _inspect(self, container: str, template: str) -> Any:
        answer = _docker("inspect", "--format", template, container)
        if answer.returncode != 0:
            return None
        try:
            return json.loads(answer.stdout)
        except ValueError:
            return None

    def _log_container(self, container: str, log: BinaryIO) -> None:
        """One line in the task's log: the container's shape as the engine reports it (the
        names of its variables, never their values)."""
        config = self._inspect(container, "{{json .Config}}") or {}
        host = self._inspect(container, "{{json .HostConfig}}") or {}
        shape = {
            "event": "container_started",
            "container": container[:12],
            "image": config.get("Image"),
            "entrypoint": config.get("Entrypoint"),
            "user": config.get("User"),
            "env_names": sorted(item.split("=", 1)[0] for item in config.get("Env") or []),
            "network_mode": host.get("NetworkMode"),
            "read_only_root": host.get("ReadonlyRootfs"),
            "tmpfs": sorted(host.get("Tmpfs") or {}),
            "nano_cpus": host.get("NanoCpus"),
            "memory_bytes": host.get("Memory"),
        }
        log.write(json.dumps(shape).encode() + b"\n")
        log.flush()
