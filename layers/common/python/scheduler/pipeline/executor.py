"""The executor: claim each run of a dispatch message, then start one task for those it won
whose job still runs (a run of a paused or deleted job is SKIPPED instead) and that got one of
their owner's concurrent_runs places, taken for the pack at once (a run that did not waits:
back to PENDING, a little later, never dropped). A message that comes earlier than its task is
needed is held back in the queue first, so that the task does not wait long for its second."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from scheduler import keys, metrics
from scheduler import metric_names as names
from scheduler.fanout import fan_out
from scheduler.jobs.job_models import why_no_run_starts
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun, RunSpec
from scheduler.pipeline.ports import DispatchBackend, DispatchThrottled, JobLookup, MessageHolds
from scheduler.quotas.quota_models import Places
from scheduler.runs.ports import RunStore
from scheduler.runs.run_log import run_changed
from scheduler.runs.run_models import Run, RunStatus
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import Clock, epoch, to_text

logger = Logger(child=True)


class RunBusy(Exception):
    """Another executor holds a live claim on a run: let SQS redeliver the message later."""


class PackNotDue(Exception):
    """The pack came before its task is needed: held out of sight in the queue, it comes back
    when it is (the record fails, as no error of the invocation: pipeline/dispatch_batches.py)."""


class Executor:
    def __init__(
        self,
        runs: RunStore,
        backend: DispatchBackend,
        jobs: JobLookup,
        *,
        claim_seconds: int,
        dispatch_grace_seconds: int,
        clock: Clock,
        concurrent_runs: int | None = None,
        place_wait_seconds: int = 30,
        places: Places | None = None,
        dispatch_ahead_seconds: int | None = None,
        holds: MessageHolds | None = None,
    ) -> None:
        self._ahead = dispatch_ahead_seconds
        self._holds = holds
        self._places = places
        self._concurrent_runs = concurrent_runs
        self._place_wait = place_wait_seconds
        self._runs = runs
        self._backend = backend
        self._jobs = jobs
        self._claim_seconds = claim_seconds
        self._grace = dispatch_grace_seconds
        self._clock = clock

    def handle(self, message: DispatchMessage, receipt_handle: str | None = None) -> list[str]:
        """Dispatch the message's runs that nobody dispatched yet; returns their keys. Raises
        PackNotDue, having held the message (`receipt_handle`) in the queue, if its task is
        not needed yet."""
        now = self._clock()
        held = self._hold(message, receipt_handle, now)
        if held is not None:
            logger.info("pack held", pack_id=message.pack_id, hold_s=held)
            raise PackNotDue(f"pack {message.pack_id} is held for {held} s")
        claim_id = uuid.uuid4().hex
        scripts: dict[str, tuple[str, dict[str, Any]]] = {}  # run key -> its script, as read
        taken = fan_out(
            lambda due: self._take(due, claim_id, now, message.pack_id, scripts),
            message.runs,
            _WORKERS,
        )
        claimed = [run for run in taken if isinstance(run, Run)]
        if _BUSY in taken:
            self._release(claimed, claim_id, now)
            raise RunBusy(f"a run of pack {message.pack_id} is being dispatched elsewhere")
        claimed = self._skip_stopped(claimed, now)
        claimed, place = self._take_place(claimed, claim_id, now)
        if not claimed:
            return []
        specs = [_spec(run, *scripts[run.key]) for run in claimed]
        try:
            task_id = self._backend.dispatch(
                message.pack_id, specs, place.place_ref() if place else None
            )
        except Exception as error:
            # Zeros too, below: a metric that only appears on failures cannot tell "none".
            metrics.count(names.DISPATCH_FAILURES)
            metrics.count(names.RUN_TASK_THROTTLES, int(isinstance(error, DispatchThrottled)))
            self._release(claimed, claim_id, now)
            if place is not None:  # no task holds it: the redelivered message takes another
                assert self._places is not None
                self._places.give_back(place)
            raise
        metrics.count(names.TASKS_STARTED)
        metrics.count(names.RUNS_WAITING_FOR_PLACE, 0)
        metrics.count(names.DISPATCH_FAILURES, 0)
        metrics.count(names.RUN_TASK_THROTTLES, 0)

        dispatched = self._clock()

        def logged(run: Run) -> None:
            lead = run.not_before - epoch(dispatched)
            metrics.seconds(names.DISPATCH_LEAD, lead)
            run_changed("run dispatched", run, task_id=task_id, dispatch_lead_s=lead)

        # Runs that keep the deadline they were queued with (most): one dispatch record for
        # the pack, not a write to each; the others are marked one by one with their new one.
        deadlines = {run.key: self._new_deadline(run, now) for run in claimed}
        moved = {key: deadline for key, deadline in deadlines.items() if deadline is not None}
        kept = [run for run in claimed if run.key not in moved]
        if kept:
            self._runs.record_dispatch(claim_id, task_id, dispatched)
            for run in kept:
                logged(run)

        def mark(run: Run) -> None:
            if self._runs.mark_dispatched(run, claim_id, task_id, dispatched, moved[run.key]):
                logged(run)

        fan_out(mark, [run for run in claimed if run.key in moved], _WORKERS)
        return [run.key for run in claimed]

    def _hold(
        self, message: DispatchMessage, receipt_handle: str | None, now: datetime
    ) -> int | None:
        """Seconds the message is held for, if it came more than `dispatch_ahead_seconds`
        (the task's expected start plus a margin) before its first run's second; None if it
        is dispatched now (due, or the queue would not hold it)."""
        ahead, holds, first = self._ahead, self._holds, message.first_second
        if ahead is None or holds is None or receipt_handle is None or first is None:
            return None
        wait = min(first - ahead - epoch(now), MAX_HOLD_SECONDS)
        if wait < MIN_HOLD_SECONDS:
            return None
        return wait if holds.hold(receipt_handle, wait) else None

    def _new_deadline(self, run: Run, now: datetime) -> int | None:
        """The run's deadline once dispatched at `now`: None if the one it was queued with
        stands (the same value when dispatched ahead of its second; when late, short by at
        most a fifth of the grace, a minute of the default 300 s), so nothing is rewritten."""
        fresh = max(run.not_before, epoch(now)) + run.timeout_seconds + self._grace
        if run.deadline is not None and fresh - run.deadline <= self._grace // DEADLINE_SLACK:
            return None
        return fresh

    def _take(
        self,
        due: DueRun,
        claim_id: str,
        now: datetime,
        pack_id: str,
        scripts: dict[str, tuple[str, dict[str, Any]]],
    ) -> Run | str | None:
        """The run, claimed (its script put in `scripts`); None if there is nothing to do;
        _BUSY if another executor holds it."""
        found = self._runs.get_with_script(due.job_id, due.key)
        if found is None:
            return None
        run, script_key, parameters = found
        if run.attempt != due.attempt or run.status not in _CLAIMABLE:
            return None  # done, or already dispatched for this attempt: a duplicate message
        scripts[run.key] = (script_key, parameters)
        if self._runs.claim(run, claim_id, now, self._claim_seconds, pack_id):
            # The attempt's pack is the one it was first claimed in (kept by a later claim).
            first = {"claim_pack": run.claim_pack or pack_id}
            return run.model_copy(
                update=first | {"claim_second": run.claim_second or run.not_before}
            )
        current = self._runs.get(due.job_id, due.key)
        if current is not None and current.status is RunStatus.DISPATCHING:
            return _BUSY
        return None

    def _skip_stopped(self, claimed: list[Run], now: datetime) -> list[Run]:
        """The claimed runs whose job is still active; the others (their job was paused or
        deleted after they were queued) end SKIPPED. One batch read of the message's jobs."""
        jobs = self._jobs.get_many({run.job_id for run in claimed})
        kept = []
        for run in claimed:
            stopped = why_no_run_starts(jobs.get(run.job_id))
            if stopped is None:
                kept.append(run)
                continue
            ours = run.model_copy(update={"status": RunStatus.DISPATCHING})  # our live claim
            if self._runs.skip(ours, stopped, now):
                metrics.count(names.RUNS_SKIPPED)
                run_changed("run skipped", run, error=stopped)
        return kept

    def _take_place(
        self, claimed: list[Run], claim_id: str, now: datetime
    ) -> tuple[list[Run], ScheduleItem | None]:
        """The claimed runs that got one of their owner's concurrent_runs places, and the place
        item that holds them: one for the pack (a transaction of the item and the owner's
        count), as many runs as fit, earliest in the message first. The others wait: PENDING
        again at least `place_wait_seconds` later, the reason recorded, brought back by a
        schedule item. The places are given back when the pack's task stops (task_events), or
        by the watcher once the runs' deadlines have passed, if that stop was never seen."""
        limit = self._concurrent_runs
        if limit is None or not claimed:
            return claimed, None
        if self._places is None:
            raise RuntimeError("Executor needs the places store with concurrent_runs")
        place = None
        size = min(len(claimed), limit)
        while size > 0:
            place = self._place_for(claimed[:size], claim_id, now)
            if self._places.take(place, limit):
                break
            place, size = None, size - 1
        kept, waiting = claimed[:size], claimed[size:]
        reason = (
            f"waiting for a place: its owner's concurrent_runs quota ({limit}) was full at "
            f"{to_text(now)}"
        )
        for run in waiting:
            not_before = max(run.not_before, epoch(now) + self._place_wait)
            if self._runs.defer(run, claim_id, not_before, reason, now):
                metrics.count(names.RUNS_WAITING_FOR_PLACE)
                run_changed("run deferred", run, not_before=not_before, quota="concurrent_runs")
        return kept, place

    def _place_for(self, runs: list[Run], claim_id: str, now: datetime) -> ScheduleItem:
        """The pack's place item, due when the last of its runs' deadlines has passed."""
        due = max(
            max(run.not_before, epoch(now)) + run.timeout_seconds + self._grace for run in runs
        )
        return ScheduleItem(
            job_id=runs[0].job_id,
            user_id=runs[0].user_id,
            scheduled_at=due,
            due_at=due,
            place=claim_id,
            count=len(runs),
            runs=keys.format_run_refs([(r.job_id, r.key, r.attempt) for r in runs]),
        )

    def _release(self, claimed: list[Run], claim_id: str, now: datetime) -> None:
        fan_out(lambda run: self._runs.release(run, claim_id, now), claimed, _WORKERS)


def _spec(run: Run, script_key: str, parameters: dict[str, Any]) -> RunSpec:
    return RunSpec(
        job_id=run.job_id,
        run_key=run.key,
        attempt=run.attempt,
        scheduled_at=run.execution_time,
        not_before=run.not_before,
        timeout_seconds=run.timeout_seconds,
        parameters=parameters,
        script_key=script_key,
        overlap=run.overlap,
        claim_pack=run.claim_pack,
        claim_second=run.claim_second,
    )


# A run dispatched up to grace / DEADLINE_SLACK later than it was queued for keeps its queued
# deadline: most of the grace is left for its task to start and report (a fixed minute would
# leave none of a 30 s grace, and the sweep would fail runs still running).
DEADLINE_SLACK = 5
# A pack less early than this is dispatched at once: holding it would save its task little wait.
MIN_HOLD_SECONDS = 10
# SQS's longest visibility timeout (12 h).
MAX_HOLD_SECONDS = 43200
# A message holds at most 10 runs: their DynamoDB calls go out together.
_WORKERS = 10
_BUSY = "busy"
# DISPATCHING: an abandoned claim (the executor died before dispatch) may be taken again.
_CLAIMABLE = frozenset({RunStatus.PENDING, RunStatus.QUEUED, RunStatus.DISPATCHING})
