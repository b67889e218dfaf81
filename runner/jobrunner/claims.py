"""Claims: a run's attempt is started by one task only, even when the executor dispatched it
twice (it died after RunTask, and the redelivered message started a second task).

Two levels, one S3 conditional PUT (If-None-Match: *) each:

1. **The pack claim**, ``claims/packs/<pack>/<second>.json``: one object for every run of a pack
   that starts in the same second (``<pack>`` is the pack the run was first dispatched in, so
   every task holding the run uses the same key). The first task to PUT it starts the runs it
   names (its own runs of that pack and second); a pack of ten runs due together costs one PUT.
2. **The run claim**, ``claims/<job>/<run>/<attempt>.json``, taken only by a task that lost the
   pack claim, for each of its runs that the winner does not name (a second dispatch may hold
   runs the first did not). No winner of the pack claim takes run claims, so a run named there
   is never started elsewhere, and a run not named there is started by whoever takes its run
   claim.

A PUT retried after S3 stored it (its answer was lost) finds its own claim: the claim carries a
random token, read back on a 412, so a task never mistakes its own claim for another's.

Fails open where it can: if S3 cannot be reached for the pack claim, the runs start anyway (at
least once matters more than at most once); a lost pack claim whose object cannot be read
starts nothing (the winner may hold every run), and those runs are retried after their
deadline like any unreported run.
"""

from __future__ import annotations

import json
import os
import uuid

from jobrunner.keyed_locks import KeyedLocks
from jobrunner.log import log
from jobrunner.manifest import RunSpec
from jobrunner.transfer import TransferError, http_get_if_present, http_put_if_absent

MAX_CLAIM_BYTES = 64 * 1024


def run_ref(spec: RunSpec) -> str:
    """How a pack claim names a run's attempt (scheduler.keys.run_ref writes it the same way)."""
    return f"{spec.job_id}/{spec.run_key}/{spec.attempt}"


class PackClaims:
    """The claims of one task's runs: each pack claim is PUT once, by the first of its runs to
    ask, and its answer is shared by the others."""

    def __init__(self, runs: list[RunSpec]) -> None:
        self._runs = runs
        self._locks = KeyedLocks()
        self._named: dict[str, set[str] | None] = {}  # pack claim URL -> refs its winner holds

    def take(self, spec: RunSpec) -> bool:
        """True if this task may start `spec` (its claim is this task's)."""
        url = spec.claim_url
        if url is None:
            return True
        with self._locks(url):
            if url not in self._named:
                self._named[url] = self._claim_pack(spec, url)
            named = self._named[url]
        if named is None:  # this task's: every run it holds under this claim starts
            return True
        if run_ref(spec) in named:
            return False
        return self._claim_run(spec)

    def _claim_pack(self, spec: RunSpec, url: str) -> set[str] | None:
        """None if this task took the pack claim; else the runs its winner holds."""
        mine = sorted(run_ref(s) for s in self._runs if s.claim_url == url)
        token = uuid.uuid4().hex  # tells our own claim from another task's, read back
        body = json.dumps(
            {"runs": mine, "token": token, "pid": os.getpid(), "host": os.uname().nodename}
        ).encode()
        try:
            if http_put_if_absent(url, body):
                return None
        except TransferError as exc:
            log("claim_failed", "warning", **spec.ids, error=str(exc))
            return None  # fail open
        try:
            read = spec.claim_read_url
            raw = http_get_if_present(read, MAX_CLAIM_BYTES) if read else None
            found = json.loads(raw) if raw is not None else {}
            if found.get("token") == token:
                return None  # ours: a PUT retried after S3 had stored it (its answer was lost)
            named = found.get("runs")
        except (TransferError, ValueError, AttributeError) as exc:
            log("claim_unreadable", "warning", **spec.ids, error=type(exc).__name__)
            named = None
        if not isinstance(named, list):
            return set(mine)  # unknown: the winner may hold them all; start none
        return {str(ref) for ref in named}

    @staticmethod
    def _claim_run(spec: RunSpec) -> bool:
        if spec.run_claim_url is None:
            return False
        body = json.dumps({**spec.ids, "pid": os.getpid()}).encode()
        try:
            return http_put_if_absent(spec.run_claim_url, body)
        except TransferError as exc:
            log("claim_failed", "warning", **spec.ids, error=str(exc))
            return True  # fail open
