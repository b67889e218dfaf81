"""The cancel channel of one run: its attempt's cancel object, polled through a presigned GET
while the run is live (waiting for the job's lock, or running), and read at its second if its
pack claim's cancel mark is there. No credentials are involved: the runner may read those
objects and nothing else. Cost: one S3 GET per pack claim at its second, and one per poll
interval of a run's life (none for a run shorter than the interval)."""

from __future__ import annotations

import json
import threading
import time

from jobrunner.keyed_locks import KeyedLocks
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


# A pack claim's runs start in the same second: one read of its mark serves them all.
MARK_FRESH_SECONDS = 1.0


class CancelMarks:
    """The cancel marks of the pack's claims, each read once for the runs that start together
    (a failed read is not kept: those runs read their own cancel objects instead)."""

    def __init__(self) -> None:
        self._locks = KeyedLocks()
        self._reads: dict[str, tuple[float, bool]] = {}  # url -> (when read, present)

    def present(self, url: str) -> bool:
        with self._locks(url):
            now = time.monotonic()
            read = self._reads.get(url)
            if read is None or now - read[0] > MARK_FRESH_SECONDS:
                try:
                    read = (now, http_get_if_present(url, MAX_CANCEL_BYTES) is not None)
                except TransferError:
                    return True  # unknown: the run's own object says
                self._reads[url] = read
            return read[1]


def cancelled_before_start(spec: RunSpec, marks: CancelMarks) -> str | None:
    """Just before the script would start, its pack claim's cancel mark (read once for the
    claim's runs that start together: the first to reach the second reads it, the others of
    that second use the read) and, only if that is there, the run's own cancel object: a cancel
    recorded before the mark was read (the API writes both before it records CANCELLED) keeps
    the script from ever starting; one recorded later stops it at the next poll. Its reason,
    or None (also when S3 cannot be reached: the poll still runs)."""
    if spec.cancel_url is None:
        return None
    if spec.pack_cancel_url is not None and not marks.present(spec.pack_cancel_url):
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
