"""The pack's scripts, each fetched once: the executor gives the runs of one script the same
presigned URL (scripts are content-addressed), so a pack of ten runs of one script makes one
S3 GET, not ten."""

from __future__ import annotations

from jobrunner.config import MAX_SCRIPT_BYTES
from jobrunner.keyed_locks import KeyedLocks
from jobrunner.transfer import http_get


class Scripts:
    def __init__(self) -> None:
        self._locks = KeyedLocks()
        self._sources: dict[str, bytes] = {}

    def fetch(self, url: str) -> bytes:
        """The script behind `url`, fetched by the first run that asks (the others wait for
        it); a failed fetch is not kept, so the next run of that script tries again.
        Raises TransferError."""
        with self._locks(url):
            if url not in self._sources:
                self._sources[url] = http_get(url, MAX_SCRIPT_BYTES)
            return self._sources[url]
