"""Finished reports sent together: the runs of one pack claim (started by this task, in the
same second) usually end within moments of each other, and one S3 PUT, one notification and
one read on the scheduler's side can carry all their ends instead of one each.

A run that ends waits up to ``BATCH_LINGER_SECONDS`` for the other runs of its claim still
under way; the batch leaves as soon as none is left, at the linger's end, or at a stop request.
Batches are PUT conditionally (If-None-Match: *) at the claim's keys in turn, so a batch never
overwrites another (a second task that started runs of the claim after failing to reach S3 for
it: claims.py fails open). When no batch key is left, or a batch PUT fails, each report goes to
its run's own finished URL, as without batching.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobrunner.claims import run_ref
from jobrunner.log import log
from jobrunner.manifest import Manifest, RunSpec
from jobrunner.transfer import TransferError, http_put_if_absent


@dataclass
class _Batch:
    reports: dict[str, tuple[RunSpec, dict[str, Any]]] = field(default_factory=dict)
    leaves_at: float = 0.0  # monotonic
    taken: bool = False  # a thread is sending it
    delivered: dict[str, bool] = field(default_factory=dict)  # set once sent


@dataclass
class _Claim:
    """One pack claim's runs in this task: those yet to end, the batch filling, its keys."""

    open: set[str]
    urls: list[str]
    filling: _Batch | None = None


class FinishedBatches:
    def __init__(
        self,
        manifest: Manifest,
        linger: float,
        stop: threading.Event,
        send_alone: Callable[[RunSpec, dict[str, Any]], bool],
    ) -> None:
        self._linger = linger
        self._stop = stop
        self._send_alone = send_alone  # PUT one report to its run's own finished URL
        self._changed = threading.Condition()
        self._claims: dict[str, _Claim] = {}
        for spec in manifest.runs:
            if spec.batch is not None and manifest.batches.get(spec.batch):
                claim = self._claims.setdefault(
                    spec.batch, _Claim(open=set(), urls=list(manifest.batches[spec.batch]))
                )
                claim.open.add(run_ref(spec))

    def send(self, spec: RunSpec, report: dict[str, Any]) -> bool:
        """Deliver the run's finished report, in a batch of its claim's runs if it has one;
        blocks until it is delivered (True) or could not be (False)."""
        claim = self._claims.get(spec.batch) if spec.batch is not None else None
        if claim is None:
            return self._send_alone(spec, report)
        ref = run_ref(spec)
        with self._changed:
            batch = claim.filling
            if batch is None:
                batch = claim.filling = _Batch(leaves_at=time.monotonic() + self._linger)
            batch.reports[ref] = (spec, report)
            claim.open.discard(ref)
            self._changed.notify_all()
            while not batch.taken:
                if not claim.open or self._stop.is_set() or time.monotonic() >= batch.leaves_at:
                    batch.taken = True
                    claim.filling = None
                    break
                self._changed.wait(min(0.1, max(0.0, batch.leaves_at - time.monotonic())))
            else:
                while ref not in batch.delivered:
                    self._changed.wait(0.1)
                return batch.delivered[ref]
        delivered = self._deliver(claim, batch)
        with self._changed:
            batch.delivered = delivered
            self._changed.notify_all()
        return delivered[ref]

    def leave(self, spec: RunSpec) -> None:
        """The run will send no finished report (another task holds it, or it was cancelled
        before its start): its claim's batch need not wait for it."""
        claim = self._claims.get(spec.batch) if spec.batch is not None else None
        if claim is None:
            return
        with self._changed:
            claim.open.discard(run_ref(spec))
            self._changed.notify_all()

    def _deliver(self, claim: _Claim, batch: _Batch) -> dict[str, bool]:
        body = json.dumps({"reports": [report for _, report in batch.reports.values()]}).encode()
        while True:
            with self._changed:
                url = claim.urls[0] if claim.urls else None
            if url is None:
                break
            try:
                stored = http_put_if_absent(url, body)
            except TransferError as exc:
                # The key stays first in line (the scheduler reads batches up to the first
                # missing one): the next batch tries it again.
                log("report_failed", "error", report="batch", error=str(exc))
                break
            with self._changed:
                claim.urls.remove(url)
            if stored:
                return dict.fromkeys(batch.reports, True)
            # 412: that key holds another batch of the claim (or ours, its answer lost).
        return {
            ref: self._send_alone(spec, report) for ref, (spec, report) in batch.reports.items()
        }
