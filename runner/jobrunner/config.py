"""Runner settings (``RUNNER_*`` environment variables) and the fixed limits and exit codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from jobrunner.log import log

MANIFEST_ENV: Final = "RUNS_MANIFEST_URL"
SAFE_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
TAIL_BYTES: Final = 4096
READ_CHUNK: Final = 65536
HTTP_TIMEOUT_SECONDS: Final = 15.0
RETRY_DELAYS: Final = (0.2, 0.5, 1.0, 2.0)
TRANSIENT_HTTP: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_MANIFEST_BYTES: Final = 32 * 1024 * 1024
MAX_SCRIPT_BYTES: Final = 16 * 1024 * 1024
POLL_SECONDS: Final = 0.05
# After the script exits, how long to wait for EOF on its output pipe (a straggler that escaped
# the process group may hold it open).
PIPE_GRACE_SECONDS: Final = 1.0
# After SIGTERM/SIGINT, how long the runner waits for its runs to report, on top of the grace.
STOP_REPORT_SECONDS: Final = 15.0

# The claim (and the job's lock) is taken this long before the run's second, early enough to add
# nothing to the start lag. (A cancel is read at the second itself: cancel.cancelled_before_start.)
CLAIM_AHEAD_SECONDS: Final = 1.0
# A run that ends waits this long at most for the other runs of its pack claim still under way,
# to send their finished reports in one batch (batching.py): its status lands up to this late.
BATCH_LINGER_SECONDS: Final = 2.0
# While a script runs (or waits for the job's lock), how often its cancel object is polled: one
# S3 GET a run per interval, none for a run shorter than it. Bounds how late a cancel lands.
CANCEL_POLL_SECONDS: Final = 10.0
# While a run waits for the job's previous run (BUFFER_ONE, REPLACE), how often the lock is read.
LOCK_POLL_SECONDS: Final = 2.0
# A lock names its holder and until when: the holder's timeout plus this, then it is stale.
LOCK_MARGIN_SECONDS: Final = 120
# Memory kept for the runner itself when the task's memory is shared out among the runs.
RUNNER_RESERVE_MB: Final = 64
# How often the memory of each run (all processes of its uid) is sampled.
MEMORY_POLL_SECONDS: Final = 0.25
# Per-run uids below this are refused (system and ordinary users live there).
MIN_RUN_UID: Final = 100_000

EXIT_OK: Final = 0
EXIT_NO_MANIFEST: Final = 1
EXIT_UNREPORTED: Final = 2


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        log("config_invalid", "warning", variable=name, using=default)
        return default
    if value < minimum:
        log("config_invalid", "warning", variable=name, using=default)
        return default
    return value


@dataclass(frozen=True)
class Config:
    """Runner settings, from ``RUNNER_*`` environment variables (none of them secret)."""

    output_cap: int = 1024 * 1024
    memory_limit_mb: int = 2048  # per run, at most; less when the task's memory is shared out
    task_memory_mb: int = 0  # the task's memory (the task definition's); 0 = unknown
    file_size_limit_mb: int = 1024  # largest file a script may write (RLIMIT_FSIZE), at most
    nofile_limit: int = 1024
    nproc_limit: int = 512  # processes (and threads) of the whole pack, shared out among runs
    uid_base: int = 2_000_000_000  # each run its own uid: uid_base + its index in the pack
    uid_count: int = 64  # how many per-run uids there are; 0 = all runs share ``run_as``
    private_scratch: bool = False  # /tmp made root-only (0711): scripts write in their own dirs
    kill_grace: float = 5.0
    run_as: str = "nobody"
    require_user_switch: bool = False
    script_python: str | None = None
    cancel_poll: float = CANCEL_POLL_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            output_cap=_env_int(env, "RUNNER_OUTPUT_CAP_BYTES", cls.output_cap),
            memory_limit_mb=_env_int(env, "RUNNER_MEMORY_LIMIT_MB", cls.memory_limit_mb),
            task_memory_mb=_env_int(env, "RUNNER_TASK_MEMORY_MB", cls.task_memory_mb),
            file_size_limit_mb=_env_int(
                env, "RUNNER_FILE_SIZE_LIMIT_MB", cls.file_size_limit_mb, minimum=1
            ),
            nofile_limit=_env_int(env, "RUNNER_NOFILE_LIMIT", cls.nofile_limit, minimum=16),
            nproc_limit=_env_int(env, "RUNNER_NPROC_LIMIT", cls.nproc_limit),
            uid_base=_env_int(env, "RUNNER_UID_BASE", cls.uid_base, minimum=MIN_RUN_UID),
            uid_count=_env_int(env, "RUNNER_UID_COUNT", cls.uid_count),
            private_scratch=env.get("RUNNER_PRIVATE_SCRATCH", "") in {"1", "true"},
            kill_grace=float(_env_int(env, "RUNNER_KILL_GRACE_SECONDS", int(cls.kill_grace))),
            run_as=env.get("RUNNER_RUN_AS", cls.run_as).strip(),
            require_user_switch=env.get("RUNNER_REQUIRE_USER_SWITCH", "") in {"1", "true"},
            script_python=env.get("RUNNER_SCRIPT_PYTHON") or None,
            cancel_poll=float(
                _env_int(env, "RUNNER_CANCEL_POLL_SECONDS", int(CANCEL_POLL_SECONDS), minimum=1)
            ),
        )
