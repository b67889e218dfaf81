"""A lock per key, made on first use: the pack's runs that ask about the same URL at once (its
script, its claim, its cancel mark) take turns, and wait for no other URL's."""

from __future__ import annotations

import threading


class KeyedLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())
