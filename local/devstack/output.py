"""The stack's stdout, shared by functions running on several threads, written whole lines at
a time.

On Lambda each invocation has an output of its own. Here the pipeline's functions run on
threads of one process, and `print()` writes its text and its newline in two calls, so two
threads' lines (powertools' EMF metrics, its JSON logs) could come out as one broken line.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import TextIO


class WholeLines(io.TextIOBase):
    """Each thread's writes are held until a newline, then written with the lines of no other
    thread in between."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending = threading.local()

    def write(self, text: str) -> int:
        pending = getattr(self._pending, "text", "") + text
        complete, newline, rest = pending.rpartition("\n")
        self._pending.text = rest
        if newline:
            with self._lock:
                self._stream.write(complete + newline)
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        rest = getattr(self._pending, "text", "")
        self._pending.text = ""
        with self._lock:
            if rest:
                self._stream.write(rest)
            self._stream.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding


def whole_lines() -> None:
    """Make this process's stdout write whole lines (idempotent)."""
    if not isinstance(sys.stdout, WholeLines):
        sys.stdout = WholeLines(sys.stdout)  # type: ignore[assignment]
