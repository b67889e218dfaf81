"""Fan independent AWS calls out over threads: one round trip per step instead of one per item.
boto3 clients are thread-safe; their connection pools are sized for this (see container)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def fan_out(work: Callable[[Item], Result], items: list[Item], workers: int) -> list[Result]:
    """`[work(item) for item in items]`, `workers` at a time; the first exception propagates.
    Each item's work runs in a copy of the caller's context (context variables: log keys, and
    in the local stack the function whose role signs the calls)."""
    if len(items) <= 1 or workers <= 1:
        return [work(item) for item in items]
    contexts = [contextvars.copy_context() for _ in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(
            pool.map(lambda pair: pair[0].run(work, pair[1]), zip(contexts, items, strict=True))
        )
