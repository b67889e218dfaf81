"""The cancel channel of one run: its attempt's cancel object, polled through a presigned GET
while the run is live (waiting for the job's lock, or running). No credentials are involved: the
runner may read that one object and nothing else. Cost: one S3 GET per poll interval of a run's
life, none for a run shorter than the interval."""

from __future__ import annotations

import json
import threading

from jobrunner.log import log
from jobrunner.manifest import RunSpec
from jobrunner.transfer import TransferError, http_get_if_present

MAX_CANCEL_BYTES = 4096


class CancelWatch:
    def __init__(self, spec: RunSpec, interval: float) -> None:
        self.requested = threading.Event()
        self.reason = "cancelled"
        self._spec = spec
        self._interval = interval
        self._done = threading.Event()

    def __enter__(self) -> CancelWatch:
        if self._spec.cancel_url is not None:
            threading.Thread(target=self._poll, name="cancel-watch", daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()

    def _poll(self) -> None:
        url = self._spec.cancel_url
        assert url is not None
        while not self._done.wait(self._interval):
            try:
                body = http_get_if_present(url, MAX_CANCEL_BYTES)
            except TransferError:
                continue  # the next poll is the retry
            if body is None:
                continue
            self.reason = _reason(body)
            log("run_cancel_requested", **self._spec.ids, reason=self.reason)
            self.requested.set()
            return


def cancelled_before_start(spec: RunSpec) -> str | None:
    """One GET of the cancel object just before the script would start: a cancel recorded
    before then (the API writes the object before it records CANCELLED) keeps the script from
    ever starting. Its reason, or None (also when S3 cannot be reached: the poll still runs)."""
    if spec.cancel_url is None:
        return None
    try:
        body = http_get_if_present(spec.cancel_url, MAX_CANCEL_BYTES)
    except TransferError:
        return None
    return None if body is None else _reason(body)


def _reason(body: bytes) -> str:
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return str(reason) if reason else "cancelled"
