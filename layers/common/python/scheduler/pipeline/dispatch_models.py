"""What travels through the pipeline: the dispatch queue's messages, and what the executor hands
a dispatch backend for each run of a pack."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from scheduler.runs.run_models import ConcurrencyPolicy


class DueRun(BaseModel):
    job_id: str
    key: str
    attempt: int


class DispatchMessage(BaseModel):
    """What the queue carries to the executor: runs to start in one task (same owner)."""

    pack_id: str
    user_id: str
    runs: list[DueRun]
    # The earliest not_before of its runs: the executor holds a pack that came this early
    # back in the queue until its task is needed (None: dispatch it when received).
    first_second: int | None = None


class RunSpec(BaseModel):
    """One run of a pack as a backend starts it."""

    job_id: str
    run_key: str
    attempt: int
    scheduled_at: int
    not_before: int
    timeout_seconds: int
    parameters: dict[str, Any]
    script_key: str
    overlap: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    # The pack this attempt was first dispatched in, and the second it was then due (recorded
    # with its claim): every task that holds it shares that pack claim object, even after a
    # deferral moved its second. None: the pack it is dispatched in now, at its second.
    claim_pack: str | None = None
    claim_second: int | None = None
