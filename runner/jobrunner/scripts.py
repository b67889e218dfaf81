"""The pack's scripts, each fetched once: the executor gives the runs of one script the same
presigned URL (scripts are content-addressed), so a pack of ten runs of one script makes one
S3 GET, not ten."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from jobrunner.config import MAX_SCRIPT_BYTES
from jobrunner.transfer import http_get


@dataclass
class _Script:
    lock: threading.Lock = field(default_factory=threading.Lock)
    source: bytes | None = None


class Scripts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_url: dict[str, _Script] = {}

    def fetch(self, url: str) -> bytes:
        """The script behind `url`, fetched by the first run that asks (the others wait for
        it); a failed fetch is not kept, so the next run of that script tries again.
        Raises TransferError."""
        with self._lock:
            script = self._by_url.setdefault(url, _Script())
        with script.lock:
            if script.source is None:
                script.source = http_get(url, MAX_SCRIPT_BYTES)
            return script.source
