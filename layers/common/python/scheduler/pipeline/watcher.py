"""The watcher's tick: move due schedule items into the dispatch queue, exactly as often as
needed and never fewer times than needed.

Per item, in this order (each step durable before the next, so a crash anywhere is finished by
a later tick, and an overlapping tick does no harm):
  1. the run record exists (conditional put on the run key; the truth for idempotency),
  2. a PENDING run is sent to the queue, then marked QUEUED,
  3. the item is replaced by the job's next occurrence (or just deleted for retries/manual runs).
Finally the durable cursor moves to the end of the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from scheduler import keys
from scheduler.fanout import Item, Result, fan_out
from scheduler.jobs.job_models import ConcurrencyPolicy, Job, JobStatus
from scheduler.jobs.ports import JobStore
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun
from scheduler.pipeline.ports import RunQueue
from scheduler.runs.ports import RunStore
from scheduler.runs.run_models import Run, RunStatus, RunTrigger, new_run
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.schedule import cron
from scheduler.schedule.ports import ScheduleStore
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import Clock, epoch, from_epoch

logger = Logger(child=True)


@dataclass(frozen=True)
class WatcherPolicy:
    lookahead_seconds: int  # runs are queued this early; the runner waits for the second
    overlap_seconds: int  # every tick looks this far back, so late writes are never skipped
    max_window_seconds: int  # a catch-up tick covers at most this much; the next goes on
    pack_window_seconds: int  # runs of one owner due this close together share one task
    max_runs_per_task: int
    dispatch_grace_seconds: int  # a queued run not finished by not_before+timeout+grace is lost
    workers: int = 16  # DynamoDB calls in flight at once


@dataclass
class TickReport:
    window_start: int
    window_end: int
    items: int = 0
    queued: int = 0
    already_handled: int = 0
    lost_runs_concluded: int = 0
    late_seconds: list[int] = field(default_factory=list)


class Watcher:
    def __init__(
        self,
        jobs: JobStore,
        schedule: ScheduleStore,
        runs: RunStore,
        queue: RunQueue,
        silent_runs: RunOutcomes,
        policy: WatcherPolicy,
        clock: Clock,
    ) -> None:
        self._jobs = jobs
        self._schedule = schedule
        self._runs = runs
        self._queue = queue
        self._silent_runs = silent_runs
        self._policy = policy
        self._clock = clock

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end] of this tick: from the cursor (or the overlap) to now + lookahead."""
        policy = self._policy
        end = now + timedelta(seconds=policy.lookahead_seconds)
        start = now - timedelta(seconds=policy.overlap_seconds)
        cursor = self._schedule.cursor()
        if cursor is not None and cursor < epoch(start):
            start = from_epoch(cursor)  # an outage: catch up from the cursor
        end = min(end, start + timedelta(seconds=policy.max_window_seconds))
        return start, end

    def tick(self) -> TickReport:
        now = self._clock()
        start, end = self.window(now)
        report = TickReport(window_start=epoch(start), window_end=epoch(end))
        items = list(self._schedule.due(start, end))
        jobs = self._jobs.get_many({i.job_id for i in items if i.trigger is RunTrigger.SCHEDULE})
        unsent: list[ScheduleItem] = []
        # After an outage a job's next occurrence can itself be past due: take it in the same
        # tick, so that every missed run is run (the window bounds the rounds).
        while items:
            report.items += len(items)
            items = self._take(items, jobs, now, end, report, unsent)
        report.lost_runs_concluded = self._conclude_lost(now)
        # The cursor never passes an item whose run could not be sent: the next tick (even
        # after a long SQS outage) starts from it.
        held = min((i.due_at for i in unsent), default=epoch(end) + 1) - 1
        self._schedule.advance_cursor(min(epoch(end), held))
        logger.info(
            "tick", **report.__dict__ | {"late_seconds": max(report.late_seconds, default=0)}
        )
        return report

    def _take(
        self,
        items: list[ScheduleItem],
        jobs: dict[str, Job],
        now: datetime,
        end: datetime,
        report: TickReport,
        unsent: list[ScheduleItem],
    ) -> list[ScheduleItem]:
        """One round: runs for `items`, sent; returns the follow-up items already due.

        Each step fans out over a thread pool: at 100 runs/s a tick handles ~6,000 items, and
        one DynamoDB round trip after another would not fit in the watcher's timeout."""
        runs = self._map(lambda item: self._run_for(item, jobs.get(item.job_id), now), items)
        pending: list[tuple[ScheduleItem, Run]] = []
        settled: list[ScheduleItem] = []
        for item, run in zip(items, runs, strict=True):
            if run is None:
                settled.append(item)
            elif run.status is RunStatus.PENDING:
                pending.append((item, run))
            else:
                report.already_handled += 1
                settled.append(item)

        packs = self._packs([run for _, run in pending])
        messages = [
            DispatchMessage(
                pack_id=f"{pack[0].key}-{pack[0].attempt}",
                user_id=pack[0].user_id,
                runs=[DueRun(job_id=r.job_id, key=r.key, attempt=r.attempt) for r in pack],
            )
            for pack in packs
        ]
        sent = self._queue.send(messages)
        queued = [run for pack, ok in zip(packs, sent, strict=True) if ok for run in pack]
        queued_keys = {run.key for run in queued}
        for item, run in pending:
            # An unsent run keeps its item, which the next tick sends again.
            (settled if run.key in queued_keys else unsent).append(item)

        def mark(run: Run) -> None:
            # The deadline counts from when it can start (a late run is queued after its second).
            earliest = max(run.not_before, epoch(now))
            deadline = earliest + run.timeout_seconds + self._policy.dispatch_grace_seconds
            self._runs.mark_queued(run, now, deadline)

        self._map(mark, queued)
        report.queued += len(queued)
        report.late_seconds += [max(0, epoch(now) - run.not_before) for run in queued]

        follow_ups = self._map(lambda item: self._settle(item, jobs.get(item.job_id)), settled)
        # Only occurrences already due (an outage's backlog); later ones are the next tick's.
        return [item for item in follow_ups if item is not None and item.due_at <= epoch(now)]

    def _map(self, work: Callable[[Item], Result], items: list[Item]) -> list[Result]:
        return fan_out(work, items, self._policy.workers)

    def _run_for(self, item: ScheduleItem, job: Job | None, now: datetime) -> Run | None:
        """The run this item stands for, created if it is the first time we see it."""
        if item.trigger is not RunTrigger.SCHEDULE:
            assert item.run_key is not None
            return self._runs.get(item.job_id, item.run_key)
        if job is None or job.status is not JobStatus.ACTIVE:
            return None
        run = new_run(
            job_id=job.job_id,
            user_id=job.user_id,
            scheduled_second=item.scheduled_at,
            trigger=RunTrigger.SCHEDULE,
            max_attempts=job.max_attempts,
            timeout_seconds=job.timeout_seconds,
            now=now,
        )
        if job.concurrency_policy is ConcurrencyPolicy.FORBID:
            busy = self._runs.unfinished_before(job.job_id, run.key)
            if busy is not None:
                run = run.model_copy(
                    update={
                        "status": RunStatus.SKIPPED,
                        "finished_at": now,
                        "error": f"skipped: run {busy} was still unfinished (FORBID policy)",
                    }
                )
        script_key = keys.script_key(job.script_sha256)
        if self._runs.create(run, script_key, job.parameters):
            return run
        return self._runs.get(run.job_id, run.key)

    def _packs(self, runs: list[Run]) -> list[list[Run]]:
        """Runs of one owner due in the same short window, at most max_runs_per_task each."""
        groups: dict[tuple[str, int], list[Run]] = {}
        for run in sorted(runs, key=lambda r: (r.not_before, r.key)):
            window = run.not_before // max(1, self._policy.pack_window_seconds)
            groups.setdefault((run.user_id, window), []).append(run)
        size = self._policy.max_runs_per_task
        return [
            group[i : i + size] for group in groups.values() for i in range(0, len(group), size)
        ]

    def _settle(self, item: ScheduleItem, job: Job | None) -> ScheduleItem | None:
        """Replace a scheduled item by the job's next occurrence (returned); drop a one-off."""
        if (
            item.trigger is not RunTrigger.SCHEDULE
            or job is None
            or job.status is not JobStatus.ACTIVE
        ):
            self._schedule.delete(item)
            return None
        after = from_epoch(item.scheduled_at)
        try:
            following = cron.next_occurrence(job.schedule, job.timezone, after)
        except cron.CronError:
            following = None
        return self._jobs.advance(job, item, following)

    def _conclude_lost(self, now: datetime) -> int:
        """Runs past their deadline with no end recorded (a task died unseen, a message went to
        the DLQ): concluded like a stopped task's, from a late report or as a failed attempt."""
        count = 0
        for job_id, key in self._runs.overdue(now):
            run = self._runs.get(job_id, key)
            if run is not None:
                error = f"no report from the runner before the deadline (was {run.status.value})"
                count += self._silent_runs.conclude_unreported(run, error)
        return count
