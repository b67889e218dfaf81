"""What the watcher, the executor and run now need from the pipeline's infrastructure."""

from __future__ import annotations

from typing import Protocol

from scheduler.jobs.job_models import Job
from scheduler.pipeline.dispatch_models import DispatchMessage, RunSpec


class DispatchFailed(Exception):
    """No task was started; the runs' claims are released and the message retried."""


class DispatchThrottled(DispatchFailed):
    """AWS throttled the start of the task beyond botocore's retries (the RunTask quota)."""


class RunQueue(Protocol):
    def send(self, messages: list[DispatchMessage]) -> list[bool]:
        """Send every message; for each, whether the queue accepted it."""


class MessageHolds(Protocol):
    def hold(self, receipt_handle: str, seconds: int) -> bool:
        """Keep a received message out of sight for `seconds` (it comes back then); False if
        the queue would not (the message is then handled now)."""


class DispatchBackend(Protocol):
    def dispatch(self, pack_id: str, runs: list[RunSpec], place: str | None = None) -> str:
        """Start one task running `runs`; return its id. Raises if no task was started. The
        task carries `place` (the pack's place item, ScheduleItem.place_ref) to its
        task-stopped event, which gives the places back."""


class JobLookup(Protocol):
    def get_many(self, job_ids: set[str]) -> dict[str, Job]:
        """The jobs that exist among `job_ids` (one batch read)."""
