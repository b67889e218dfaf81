"""The watcher's tick, once a minute (EventBridge): take every schedule item due in its window
(pipeline/due_runs.py), sweep runs stuck past their deadline, and move a durable cursor, so that
a late or missed tick is caught up by the next."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from scheduler import keys, metrics
from scheduler import metric_names as names
from scheduler.fanout import fan_out
from scheduler.jobs.ports import JobStore
from scheduler.pipeline.due_runs import DispatchPolicy, DueRuns
from scheduler.pipeline.ports import RunQueue
from scheduler.quotas.quota_models import Places, QuotaCounters
from scheduler.runs.ports import RunStore
from scheduler.runs.run_models import IN_FLIGHT, Run, RunStatus
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.schedule.ports import ScheduleStore
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import Clock, epoch, from_epoch

logger = Logger(child=True)

# A pack place whose runs are still under way past its due time is looked at again this late.
PLACE_RECHECK_SECONDS = 60
UNDER_WAY = IN_FLIGHT | {RunStatus.QUEUED}


@dataclass(frozen=True, kw_only=True)
class WatcherPolicy(DispatchPolicy):
    overlap_seconds: int  # every tick looks this far back, so late writes are never skipped
    max_window_seconds: int  # a catch-up tick covers at most this much; the next goes on


@dataclass
class TickReport:
    window_start: int
    window_end: int
    items: int = 0
    queued: int = 0
    already_handled: int = 0
    lost_runs_concluded: int = 0
    deferred: int = 0  # scheduled runs moved past this window by their owner's quota
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
        counters: QuotaCounters | None = None,
        places: Places | None = None,
    ) -> None:
        self._places = places
        self._jobs = jobs
        self._schedule = schedule
        self._runs = runs
        self._silent_runs = silent_runs
        self._policy = policy
        self._clock = clock
        self._due_runs = DueRuns(jobs, schedule, runs, queue, policy, counters)

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
        began = time.monotonic()
        now = self._clock()
        start, end = self.window(now)
        report = TickReport(window_start=epoch(start), window_end=epoch(end))
        items = list(self._schedule.due(start, end))
        self._check_runs([i for i in items if i.check and i.due_at <= epoch(now)])
        self._settle_places([i for i in items if i.place is not None and i.due_at <= epoch(now)])
        items = [i for i in items if not i.check and i.place is None]
        # Consistent: an occurrence's item is taken once its job shows the next (due_runs).
        jobs = self._jobs.get_many({i.job_id for i in items}, consistent=True)
        taken = self._due_runs.take(items, jobs, now, end)
        report.items, report.queued = taken.items, taken.queued
        report.already_handled, report.late_seconds = taken.already_handled, taken.late_seconds
        report.deferred = taken.deferred
        report.lost_runs_concluded = self._conclude_lost(now)
        # The cursor never passes an item whose run could not be sent: the next tick (even
        # after a long SQS outage) starts from it. Nor does it pass `now`: an item written
        # after this tick (a retry, a refused run now) can be due before this window's end,
        # and a catch-up tick after an outage starts from the cursor. (A catch-up window is
        # capped, and may end before `now`.)
        covered = min(epoch(now), epoch(end))
        held = min((i.due_at for i in taken.unsent), default=covered + 1) - 1
        self._schedule.advance_cursor(min(covered, held))
        metrics.milliseconds(names.TICK_DURATION, (time.monotonic() - began) * 1000)
        metrics.count(names.TICK_ITEMS, report.items)
        metrics.count(names.RUNS_QUEUED, report.queued)
        metrics.count(names.LOST_RUNS_CONCLUDED, report.lost_runs_concluded)
        logger.info(
            "tick", **report.__dict__ | {"late_seconds": max(report.late_seconds, default=0)}
        )
        return report

    def _check_runs(self, checks: list[ScheduleItem]) -> None:
        """Dead man's switches whose grace has ended: the owner is told of a run that has not
        succeeded; each check is done once (then deleted), a later one is left for its time."""
        for check in checks:
            assert check.run_key is not None
            run = self._runs.get(check.job_id, check.run_key)
            if run is not None:
                self._silent_runs.check_succeeded(run)
            self._schedule.delete(check)

    def _settle_places(self, places: list[ScheduleItem]) -> None:
        """Pack places whose runs' deadlines have passed and whose task's stop was not seen
        (it gives them back): given back if none of the pack's runs is still under way on the
        claim that took them, else due again at the latest of those runs' deadlines."""
        for place in places:
            assert place.runs is not None
            held = []
            for job_id, key, attempt in keys.parse_run_refs(place.runs):
                run = self._runs.get(job_id, key)
                if (
                    run is not None
                    and run.attempt == attempt
                    and run.claim_id == place.place
                    and run.status in UNDER_WAY
                ):
                    held.append(run)
            assert self._places is not None
            if not held:
                self._places.give_back(place)
                continue
            due = max(run.deadline or 0 for run in held)
            self._places.move(place, max(due, epoch(self._clock()) + PLACE_RECHECK_SECONDS))

    def _conclude_lost(self, now: datetime) -> int:
        """Runs past their deadline with no end recorded (a task died unseen, a message went to
        the DLQ): concluded like a stopped task's, from a late report or as a failed attempt;
        one that no executor claimed is sent again or skipped by its catch-up policy. The index
        keeps ended runs' entries, so the sweep reads only the deadlines passed since its
        cursor (each entry once) and moves the cursor after them; no deadline is written less
        than a minute ahead (run_repository.DEADLINE_FLOOR_SECONDS)."""
        found = self._runs.overdue(now, self._schedule.swept())
        runs = fan_out(lambda ref: self._runs.get(*ref), found, self._policy.workers)
        count = 0
        unclaimed: list[Run] = []
        for run in runs:
            # The index is read eventually consistent: a deadline moved since (a run sent
            # again, a started report) is not past; its new entry is past the cursor.
            if run is None or run.status.terminal:
                continue
            if run.deadline is not None and run.deadline >= epoch(now):
                continue
            if run.status is RunStatus.QUEUED:
                # Unclaimed, unless a dispatch whose answer was lost released its claim
                if self._silent_runs.conclude_if_reported(run):
                    count += 1
                else:
                    unclaimed.append(run)
                continue
            error = f"no report from the runner before the deadline (was {run.status.value})"
            count += self._silent_runs.conclude_unreported(run, error)
        swept = epoch(now) - 1
        if unclaimed:
            jobs = self._jobs.get_many({run.job_id for run in unclaimed})
            resent, unsent = self._due_runs.resend_unclaimed(unclaimed, jobs, now)
            count += resent
            # A run not sent again keeps its deadline: the cursor stays below it.
            swept = min([swept] + [run.deadline - 1 for run in unsent if run.deadline])
        self._schedule.advance_swept(swept)
        return count
