"""How scripts are started: the unprivileged user (a uid of its own per run), resource limits
(the task's memory shared out among the pack's runs, file size, processes), private working
and temporary directories and an environment built from scratch."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
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

from jobrunner import reaper
from jobrunner.config import RUNNER_RESERVE_MB, SAFE_PATH, Config
from jobrunner.log import iso_seconds, log
from jobrunner.manifest import RunSpec

MIB = 1024 * 1024
_PR_SET_NO_NEW_PRIVS = 38
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover (not Linux)
    _LIBC = None


@dataclass(frozen=True)
class RunUser:
    """Who one run's script runs as. ``own``: a uid of this run alone, so that every process of
    the run can be found, measured and killed by its uid (jobrunner.reaper)."""

    uid: int | None = None  # None: no switch, the runner's own user
    gid: int | None = None
    own: bool = False

    def popen_args(self) -> dict[str, Any]:
        if self.uid is None or self.gid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass(frozen=True)
class Sandbox:
    """How scripts are started: interpreter, and the unprivileged users to switch to (if any):
    a uid per run (``uid_base`` + the run's index) or, failing that, one shared user."""

    interpreter: str
    uid: int | None = None  # the shared user (RUNNER_RUN_AS), when there are no per-run uids
    gid: int | None = None
    error: str | None = None  # set: the sandbox cannot be built, runs fail closed
    uid_base: int | None = None  # set: per-run uids uid_base .. uid_base + uid_count - 1
    uid_count: int = 0

    def user_for(self, index: int) -> RunUser:
        if self.uid_base is not None and 0 <= index < self.uid_count:
            return RunUser(uid=self.uid_base + index, gid=self.uid_base + index, own=True)
        return RunUser(uid=self.uid, gid=self.gid)


@dataclass(frozen=True)
class Limits:
    """Per-run limits, from the pack's size: the task's memory and scratch space shared out."""

    memory_bytes: int | None  # RLIMIT_AS of each process, and the sum of the run's processes
    file_bytes: int  # RLIMIT_FSIZE: the largest file a script may write
    nproc_shared: int | None  # RLIMIT_NPROC when every run shares one uid
    nproc_own: int | None  # RLIMIT_NPROC when the run has a uid of its own
    nofile: int

    @classmethod
    def for_pack(cls, config: Config, runs: int, scratch: str | None = None) -> Limits:
        runs = max(1, runs)
        memory_mb = config.memory_limit_mb
        if config.task_memory_mb > 0:
            share = max(32, (config.task_memory_mb - RUNNER_RESERVE_MB) // runs)
            memory_mb = min(memory_mb, share) if memory_mb > 0 else share
        file_mb = config.file_size_limit_mb
        with contextlib.suppress(OSError):
            stat = os.statvfs(scratch or tempfile.gettempdir())
            file_mb = max(1, min(file_mb, stat.f_bavail * stat.f_frsize // MIB // runs))
        nproc = config.nproc_limit
        return cls(
            memory_bytes=memory_mb * MIB if memory_mb > 0 else None,
            file_bytes=file_mb * MIB,
            nproc_shared=nproc or None,
            nproc_own=max(16, nproc // runs) if nproc > 0 else None,
            nofile=config.nofile_limit,
        )

    def describe(self) -> dict[str, int | None]:
        mib = {"memory_mb": self.memory_bytes, "file_size_mb": self.file_bytes}
        return {
            **{name: value // MIB if value else None for name, value in mib.items()},
            "nproc_per_run": self.nproc_own,
            "nofile": self.nofile,
        }


def resource_limiter(limits: Limits, user: RunUser) -> Callable[[], None]:
    """The preexec function: lower soft *and* hard limits, so the script cannot raise them, and
    set no_new_privs, so that no setuid binary can give it back a privilege (or another uid)."""
    wanted: list[tuple[int, int]] = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, limits.nofile),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
    ]
    if limits.memory_bytes is not None:
        wanted.append((resource.RLIMIT_AS, limits.memory_bytes))
    nproc = limits.nproc_own if user.own else limits.nproc_shared
    if user.uid is not None and nproc is not None:
        # Per real uid: the run's own when it has one, else shared by every run of the pack.
        wanted.append((resource.RLIMIT_NPROC, nproc))
    libc = _LIBC

    def apply() -> None:  # runs in the child between fork and exec: no logging, no imports
        for which, limit in wanted:
            _, hard = resource.getrlimit(which)
            value = hard if hard != resource.RLIM_INFINITY and hard < limit else limit
            resource.setrlimit(which, (value, value))
        if libc is not None:
            libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    return apply


@dataclass
class RunDirs:
    """``base`` (runner-only, 0711) holds ``output.log`` (0600), ``work`` (the script's working
    directory and HOME) and ``tmp`` (its TMPDIR), both 0700 and the run's user's."""

    base: str
    work: str
    tmp: str
    output: str

    @classmethod
    def create(cls, user: RunUser) -> RunDirs:
        base = tempfile.mkdtemp(prefix="run-")
        work = os.path.join(base, "work")
        tmp = os.path.join(base, "tmp")
        for path in (work, tmp):
            os.mkdir(path, 0o700)
        if user.uid is not None and user.gid is not None:
            # The script may enter its own directories but cannot list or touch the output
            # file, which the runner (root) later reads and uploads.
            os.chmod(base, 0o711)  # noqa: S103 (traverse only, no listing)
            for path in (work, tmp):
                os.chown(path, user.uid, user.gid)
        return cls(base=base, work=work, tmp=tmp, output=os.path.join(base, "output.log"))

    def write_script(self, source: bytes, user: RunUser) -> None:
        path = os.path.join(self.work, "script.py")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(source)
        if user.uid is not None and user.gid is not None:
            os.chown(path, user.uid, user.gid)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _probe(interpreter: str, uid: int, gid: int, config: Config) -> bool:
    """Can ``interpreter`` start as uid/gid in a working directory made like the runs' ones?"""
    user = RunUser(uid=uid, gid=gid)
    dirs = RunDirs.create(user)
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
            preexec_fn=resource_limiter(Limits.for_pack(config, 1), user),
            **user.popen_args(),
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
                    return _with_run_uids(
                        Sandbox(interpreter=candidate, uid=entry.pw_uid, gid=entry.pw_gid), config
                    )
            problem = f"no interpreter that user {config.run_as!r} can run"
    if config.require_user_switch:
        return Sandbox(interpreter=default, error=f"cannot drop privileges: {problem}")
    log("user_switch_unavailable", "warning", reason=problem, scripts_run_as_root=True)
    return Sandbox(interpreter=default)


UID_BLOCKS = 1024
_held_blocks: list[int] = []  # file descriptors of the uid blocks this runner holds


def _take_uid_block(config: Config) -> int | None:
    """The first uid of a block of ``uid_count`` uids that no other runner on this kernel uses.

    In a task the runner is alone (its own PID namespace, its own /tmp): block 0. Locally, many
    runners share one kernel: each holds an flock on its block's file for as long as it lives
    (the kernel drops it when the runner dies), so two runners never share a uid and one never
    kills the other's processes. Leftovers of a dead runner of the block are killed first."""
    directory = os.path.join(tempfile.gettempdir(), "jobrunner-uid-blocks")
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    for block in range(UID_BLOCKS):
        fd = os.open(os.path.join(directory, f"{block}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held_blocks.append(fd)
        base = config.uid_base + block * config.uid_count
        for uid in sorted(reaper.uids_in_use(base, config.uid_count)):
            log("stale_run_processes_killed", uid=uid)
            reaper.kill_user(uid)
        return base
    return None


def _with_run_uids(shared: Sandbox, config: Config) -> Sandbox:
    """A uid per run when the first of the range can run the interpreter (it needs no entry in
    /etc/passwd; it fails where the runner sits in a user namespace that does not map it)."""
    if config.uid_count <= 0:
        return shared
    try:
        base = _take_uid_block(config)
    except OSError as exc:
        log("run_uids_unavailable", "warning", error=str(exc))
        return shared
    if base is not None and _probe(shared.interpreter, base, base, config):
        return Sandbox(
            interpreter=shared.interpreter,
            uid=shared.uid,
            gid=shared.gid,
            uid_base=base,
            uid_count=config.uid_count,
        )
    log("run_uids_unavailable", "warning", uid_base=base, shared_user=shared.uid)
    return shared


def make_scratch_private(scratch: str | None = None) -> None:
    """In the task, /tmp is the runner's: 0711 root, so that scripts write only in their own
    run directories (never in /tmp itself, where another run could find what they left)."""
    path = scratch or tempfile.gettempdir()
    try:
        if os.stat(path).st_uid == 0:
            os.chmod(path, 0o711)  # noqa: S103 (traverse only, no listing)
    except OSError as exc:
        log("scratch_not_private", "warning", path=path, error=str(exc))


def child_environment(spec: RunSpec, dirs: RunDirs) -> dict[str, str]:
    """Built from scratch: nothing of the runner's environment is inherited."""
    return {
        "PATH": SAFE_PATH,
        "HOME": dirs.work,
        "TMPDIR": dirs.tmp,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "JOB_PARAMETERS": json.dumps(spec.parameters, separators=(",", ":")),
        "JOB_ID": spec.job_id,
        "RUN_KEY": spec.run_key,
        "SCHEDULED_AT": iso_seconds(spec.scheduled_at),
        "ATTEMPT": str(spec.attempt),
    }
