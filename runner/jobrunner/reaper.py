"""Every process of a run, found and killed by its uid.

Each run's script runs as a uid of its own (``Config.uid_base`` + the run's index in the pack).
A process can leave its process group and session (``setsid``), but it cannot change its uid
(it holds no capability, and ``no_new_privs`` stops setuid binaries from granting one), so
"every process of the run" is "every process of that uid". Killing them: a child of the runner
switches to that uid and calls ``kill(-1, SIGKILL)``, which signals every process it may
signal (those of the same uid) in one pass of the kernel's task list, during which no new
process can be created; repeated until ``/proc`` shows none alive. This needs no privilege
beyond what the runner already uses to start scripts as another user (CAP_SETUID, CAP_KILL,
both in Docker's and Fargate's default capability set), unlike cgroups, which a Fargate task
cannot create.

The same scan measures a run's memory: the resident, not file-backed, pages of its processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

from jobrunner.config import MIN_RUN_UID

_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_KILL_ROUNDS: Final = 200


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    zombie: bool


def processes_of(uid: int) -> list[Proc]:
    """Processes whose real uid is ``uid`` (zombies included, marked)."""
    found: list[Proc] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue  # gone meanwhile
        try:
            real_uid = int(fields["Uid"].split()[0])
            ppid = int(fields["PPid"].strip())
            zombie = fields["State"].strip().startswith(("Z", "X"))
        except (KeyError, ValueError, IndexError):
            continue
        if real_uid == uid:
            found.append(Proc(pid=int(name), ppid=ppid, zombie=zombie))
    return found


def uids_in_use(first: int, count: int) -> set[int]:
    """Which uids of ``first`` .. ``first + count - 1`` have a live process."""
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            uid = int(fields["Uid"].split()[0])
        except (OSError, KeyError, ValueError, IndexError):
            continue
        if first <= uid < first + count and not fields.get("State", "").strip().startswith("Z"):
            found.add(uid)
    return found


def memory_bytes(uid: int) -> int:
    """Anonymous resident memory of every process of ``uid`` (statm: resident - shared)."""
    total = 0
    for proc in processes_of(uid):
        if proc.zombie:
            continue
        try:
            with open(f"/proc/{proc.pid}/statm", encoding="ascii") as handle:
                values = handle.read().split()
        except OSError:
            continue
        with contextlib.suppress(ValueError, IndexError):
            total += max(0, int(values[1]) - int(values[2])) * _PAGE
    return total


def _kill_all_as(uid: int) -> None:
    """kill(-1, SIGKILL) from a child that has become ``uid``: every process of that uid."""
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit (the runner has threads)
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)  # all three uids: the child may now signal exactly that uid's processes
            os.kill(-1, signal.SIGKILL)
            code = 0
        except BaseException:  # noqa: S110 (nothing can be reported from here)
            pass
        os._exit(code)
    os.waitpid(pid, 0)


def kill_user(uid: int, keep: int | None = None) -> int:
    """SIGKILL every process of ``uid`` until none is left alive; reap the runner's own orphans
    of it (the runner is PID 1 in its container, so orphans become its children), but not
    ``keep`` (the script's own process, which its Popen reaps). Returns how many live
    processes the first scan found."""
    if uid < MIN_RUN_UID or uid in (os.getuid(), os.geteuid()):
        raise ValueError(f"refusing to kill every process of uid {uid}")
    first: int | None = None
    me = os.getpid()
    for round_ in range(_KILL_ROUNDS):
        procs = processes_of(uid)
        for proc in procs:
            if proc.zombie and proc.ppid == me and proc.pid != keep:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, os.WNOHANG)
        alive = [proc for proc in procs if not proc.zombie]
        if first is None:
            first = len(alive)
        if not alive:
            return first
        _kill_all_as(uid)
        time.sleep(min(0.001 * (round_ + 1), 0.02))
    return first or 0
