"""How scripts are started: the unprivileged user, resource limits, private working
directories and an environment built from scratch."""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobrunner.config import SAFE_PATH, Config
from jobrunner.log import iso_seconds, log
from jobrunner.manifest import RunSpec


@dataclass(frozen=True)
class Sandbox:
    """How scripts are started: interpreter, and the unprivileged user to switch to (if any)."""

    interpreter: str
    uid: int | None = None
    gid: int | None = None
    error: str | None = None  # set: the sandbox cannot be built, runs fail closed

    def popen_user_args(self) -> dict[str, Any]:
        if self.uid is None or self.gid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def resource_limiter(config: Config, switching_user: bool) -> Callable[[], None]:
    """The preexec function: lower soft *and* hard limits, so the script cannot raise them."""
    limits: list[tuple[int, int]] = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, config.nofile_limit),
    ]
    if config.memory_limit_mb > 0:
        limits.append((resource.RLIMIT_AS, config.memory_limit_mb * 1024 * 1024))
    if switching_user and config.nproc_limit > 0:
        # Per real uid: shared by every run of the pack (they all run as the same user).
        limits.append((resource.RLIMIT_NPROC, config.nproc_limit))

    def apply() -> None:  # runs in the child between fork and exec: no logging, no imports
        for which, wanted in limits:
            _, hard = resource.getrlimit(which)
            value = hard if hard != resource.RLIM_INFINITY and hard < wanted else wanted
            resource.setrlimit(which, (value, value))

    return apply


@dataclass
class RunDirs:
    """``base`` (runner-only, 0711) holds ``output.log`` (0600) and ``work`` (the script's)."""

    base: str
    work: str
    output: str

    @classmethod
    def create(cls, sandbox: Sandbox) -> RunDirs:
        base = tempfile.mkdtemp(prefix="run-")
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        if sandbox.uid is not None and sandbox.gid is not None:
            # The script may enter its own directory but cannot list or touch the output file,
            # which the runner (root) later reads and uploads.
            os.chmod(base, 0o711)  # noqa: S103 (traverse only, no listing)
            os.chown(work, sandbox.uid, sandbox.gid)
        return cls(base=base, work=work, output=os.path.join(base, "output.log"))

    def write_script(self, source: bytes, sandbox: Sandbox) -> None:
        path = os.path.join(self.work, "script.py")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(source)
        if sandbox.uid is not None and sandbox.gid is not None:
            os.chown(path, sandbox.uid, sandbox.gid)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _probe(interpreter: str, uid: int, gid: int, config: Config) -> bool:
    """Can ``interpreter`` start as uid/gid in a working directory made like the runs' ones?"""
    sandbox = Sandbox(interpreter=interpreter, uid=uid, gid=gid)
    dirs = RunDirs.create(sandbox)
    try:
        completed = subprocess.run(
            [interpreter, "-c", "pass"],
            cwd=dirs.work,
            env={"PATH": SAFE_PATH, "HOME": dirs.work, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=20,
            check=False,
            preexec_fn=resource_limiter(config, switching_user=True),
            **sandbox.popen_user_args(),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        dirs.remove()
    return completed.returncode == 0


def choose_sandbox(config: Config) -> Sandbox:
    """Switch scripts to ``config.run_as`` when root, with an interpreter that user can run."""
    default = config.script_python or sys.executable or shutil.which("python3", path=SAFE_PATH)
    if not default:
        return Sandbox(interpreter="", error="no Python interpreter found for scripts")
    if os.geteuid() != 0:
        return Sandbox(interpreter=default)  # unprivileged already: nothing to switch to
    problem: str
    if not config.run_as:
        problem = "user switch disabled (RUNNER_RUN_AS is empty)"
    else:
        try:
            entry = pwd.getpwnam(config.run_as)
        except KeyError:
            entry = None
        if entry is None:
            problem = f"user {config.run_as!r} does not exist"
        else:
            candidates = (
                [config.script_python]
                if config.script_python
                else [
                    sys.executable,
                    shutil.which("python3", path=SAFE_PATH),
                ]
            )
            for candidate in dict.fromkeys(c for c in candidates if c):
                if _probe(candidate, entry.pw_uid, entry.pw_gid, config):
                    return Sandbox(interpreter=candidate, uid=entry.pw_uid, gid=entry.pw_gid)
            problem = f"no interpreter that user {config.run_as!r} can run"
    if config.require_user_switch:
        return Sandbox(interpreter=default, error=f"cannot drop privileges: {problem}")
    log("user_switch_unavailable", "warning", reason=problem, scripts_run_as_root=True)
    return Sandbox(interpreter=default)


def child_environment(spec: RunSpec, workdir: str) -> dict[str, str]:
    """Built from scratch: nothing of the runner's environment is inherited."""
    return {
        "PATH": SAFE_PATH,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "JOB_PARAMETERS": json.dumps(spec.parameters, separators=(",", ":")),
        "JOB_ID": spec.job_id,
        "RUN_KEY": spec.run_key,
        "SCHEDULED_AT": iso_seconds(spec.scheduled_at),
        "ATTEMPT": str(spec.attempt),
    }
