"""The runner's main: run every run of the manifest concurrently and report them all.

For every run of the manifest, concurrently (one thread per run, one child process per script):
fetch the script, wait until ``not_before``, claim it (one conditional PUT per pack and second),
start it in a private working directory with a scrubbed environment (as its own uid when the
runner is root), drain its output (capped), enforce the timeout, PUT a "started" report if it is
still running after the pack's report interval, then the output if the tail does not hold it
all, then a "finished" report (with those of its pack claim's runs that end with it: batching.py).

Exit status: 0 every run reported; 1 no or unreadable manifest; 2 a report could not be
delivered; 143 (or 130) the runner was stopped by SIGTERM (SIGINT), after reporting what it could.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from types import FrameType

from jobrunner import reaper
from jobrunner.batching import FinishedBatches
from jobrunner.claims import PackClaims
from jobrunner.config import (
    BATCH_LINGER_SECONDS,
    EXIT_NO_MANIFEST,
    EXIT_OK,
    EXIT_UNREPORTED,
    MANIFEST_ENV,
    MAX_MANIFEST_BYTES,
    STOP_REPORT_SECONDS,
    Config,
)
from jobrunner.execution import execute
from jobrunner.log import log
from jobrunner.manifest import Manifest, RunSpec, parse_manifest
from jobrunner.reporting import report_invalid, send_finished
from jobrunner.sandbox import Limits, Sandbox, choose_sandbox, make_scratch_private
from jobrunner.supervision import Runtime
from jobrunner.transfer import TransferError, http_delete, http_get


def _install_signal_handlers(rt: Runtime) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        rt.request_stop(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _wait_for(threads: list[threading.Thread], rt: Runtime) -> None:
    stop_deadline: float | None = None
    while any(thread.is_alive() for thread in threads):
        if rt.stop.is_set():
            if stop_deadline is None:
                stop_deadline = time.monotonic() + rt.config.kill_grace + STOP_REPORT_SECONDS
            elif time.monotonic() >= stop_deadline:
                log("runner_gave_up_waiting", "error")
                return
        for thread in threads:
            thread.join(timeout=0.2)
            if thread.is_alive():
                break


def _consume(manifest: Manifest) -> None:
    """Delete the manifest now that it is read: its URL, in the task's overrides, dies with it."""
    if manifest.consume_url is None:
        return
    try:
        http_delete(manifest.consume_url)
    except TransferError as exc:
        log("manifest_not_consumed", "warning", pack_id=manifest.pack_id, error=str(exc))


def _sweep(rt: Runtime, runs: int) -> None:
    """Whatever is left of any run (a run thread that crashed, or was given up on after a stop):
    every process of each run's uid, killed before the runner exits."""
    for index in range(runs):
        user = rt.sandbox.user_for(index)
        if user.own and user.uid is not None:
            with contextlib.suppress(OSError, ValueError):
                reaper.kill_user(user.uid)


def main(argv: list[str] | None = None) -> int:
    del argv  # no arguments: everything comes from the environment
    manifest_url = os.environ.pop(MANIFEST_ENV, None)  # never inherited, never logged
    config = Config.from_env(os.environ)
    rt = Runtime(config=config, sandbox=Sandbox(interpreter=""))
    _install_signal_handlers(rt)
    if not manifest_url:
        log("manifest_missing", "error", variable=MANIFEST_ENV)
        return EXIT_NO_MANIFEST
    try:
        manifest = parse_manifest(http_get(manifest_url, MAX_MANIFEST_BYTES))
    except (TransferError, ValueError) as exc:
        log("manifest_unreadable", "error", error=str(exc))
        return EXIT_NO_MANIFEST
    del manifest_url
    _consume(manifest)
    if config.private_scratch and os.geteuid() == 0:
        make_scratch_private()
    rt.sandbox = choose_sandbox(config)
    rt.limits = Limits.for_pack(config, len(manifest.runs))
    rt.claims = PackClaims(manifest.runs)
    rt.batches = batches = FinishedBatches(manifest, BATCH_LINGER_SECONDS, rt.stop, send_finished)
    rt.started_report_seconds = manifest.started_report_seconds
    log(
        "runner_started",
        pack_id=manifest.pack_id,
        runs=len(manifest.runs),
        invalid_runs=len(manifest.invalid),
        interpreter=rt.sandbox.interpreter,
        run_as_uid=rt.sandbox.uid if rt.sandbox.uid is not None else os.geteuid(),
        run_uids=rt.sandbox.uid_base is not None,
        limits=rt.limits.describe(),
        sandbox_error=rt.sandbox.error,
    )
    results: dict[int, bool] = {}

    def target(index: int, spec: RunSpec) -> None:
        try:
            results[index] = execute(spec, rt, index)
        finally:
            batches.leave(spec)  # a run that sent nothing holds up no batch

    threads = [
        threading.Thread(target=target, args=(index, spec), name=f"run-{index}", daemon=True)
        for index, spec in enumerate(manifest.runs)
    ]
    for thread in threads:
        thread.start()
    invalid_reported = [report_invalid(item["entry"], item["error"]) for item in manifest.invalid]
    _wait_for(threads, rt)
    _sweep(rt, len(manifest.runs))
    reported = sum(results.values()) + sum(invalid_reported)
    expected = len(manifest.runs) + len(manifest.invalid)
    log("runner_finished", pack_id=manifest.pack_id, reported=reported, runs=expected)
    if rt.stop_signal is not None:
        return 128 + rt.stop_signal
    return EXIT_OK if reported == expected else EXIT_UNREPORTED
