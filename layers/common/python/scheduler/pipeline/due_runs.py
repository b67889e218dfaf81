"""Taking due schedule items: each becomes a run record, is sent to the dispatch queue in packs,
marked QUEUED, and is replaced by the job's next occurrence. The watcher does this for its
window; create, update and resume do it for a new occurrence the next tick could see too late.

Per item, in this order (each step durable before the next, so a crash anywhere is finished by
a later tick, and two takers at once do no harm):
  1. under a runs_per_minute quota, the owner's new runs of a minute are counted (one
     conditional ADD per owner and minute, before the runs exist: a crash after it over-counts,
     which can defer a later run but never lets one past the limit),
  2. the run record exists (conditional put on the run key; the truth for idempotency),
     created QUEUED with its deadline when it is sent now,
  3. the run is sent to the queue (a PENDING one, a retry's, is then marked QUEUED; a QUEUED
     one whose item is still there is sent again: its taker died before step 4, or its send
     failed),
  4. the item is replaced by the job's next occurrence (JobRepository.advance) or just deleted
     for retries and manual runs.
A successor that falls due inside the same window is taken in the same call, so an every-minute
job is queued ahead of its second like any other.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from scheduler import keys, metrics
from scheduler import metric_names as names
from scheduler.fanout import Item, Result, fan_out
from scheduler.jobs.job_models import (
    CatchUpPolicy,
    Job,
    JobStatus,
    why_no_run_starts,
)
from scheduler.jobs.ports import JobStore
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun
from scheduler.pipeline.ports import RunQueue
from scheduler.quotas.quota_models import (
    MINUTE,
    RUNS_PER_MINUTE,
    MinuteCounter,
    QuotaCounters,
    minute_of,
)
from scheduler.runs.ports import RunStore
from scheduler.runs.run_log import run_changed
from scheduler.runs.run_models import Run, RunStatus, RunTrigger
from scheduler.schedule import cron
from scheduler.schedule.ports import ScheduleStore
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import epoch, from_epoch

logger = Logger(child=True)

# An occurrence taken later than this after its second was missed (an outage, a late tick):
# the job's catch-up policy decides whether it still runs.
MISSED_AFTER_SECONDS = 60
# A scheduled run whose minute is full (runs_per_minute) moves to the next minute with room,
# looking this far ahead at most; past it, it is created uncounted: never dropped.
MAX_DEFERRAL_MINUTES = 24 * 60


def is_live(item: ScheduleItem, job: Job | None) -> bool:
    """Whether `item` is still to be taken: any retry, manual run or check item (deleted once
    taken), and an occurrence's item only while its job is ACTIVE and shows that occurrence as
    its next run, at the same due second (its jitter). A taken occurrence's item is left to
    expire, and the job shows the next one once its item exists (JobRepository.advance); an
    item put by a taker that lost a race with an update or a pause is not shown either."""
    if item.trigger is not RunTrigger.SCHEDULE:
        return True
    if job is None or job.status is not JobStatus.ACTIVE or job.next_run_at is None:
        return False
    shown = ScheduleItem.occurrence(job.job_id, job.user_id, job.next_run_at, job.jitter_seconds)
    return (shown.scheduled_at, shown.due_at) == (item.scheduled_at, item.due_at)


def dispatch_lead_seconds(
    *, task_start_seconds: int, dispatch_seconds: int, tick_seconds: int, tick_delay_seconds: int
) -> int:
    """How far ahead a run must be taken so that its task is up before its second, whichever
    tick takes it: a run due at t is taken by the last tick before t - lead; ticks are at most
    tick + delay apart, so the earliest that tick can be is t - lead - tick - delay, and the
    run must be inside its window: lookahead = start + dispatch + tick + delay."""
    return task_start_seconds + dispatch_seconds + tick_seconds + tick_delay_seconds


@dataclass(frozen=True, kw_only=True)
class DispatchPolicy:
    lookahead_seconds: int  # runs are taken this early; the runner waits for the second
    pack_window_seconds: int  # runs of one owner due this close together share one task
    max_runs_per_task: int
    dispatch_grace_seconds: int  # a queued run not finished by not_before+timeout+grace is lost
    workers: int = 16  # DynamoDB calls in flight at once
    # An owner's runs that may start in one minute; None: no quota (docs: Quotas).
    runs_per_minute: int | None = None


@dataclass
class TakeReport:
    items: int = 0
    queued: int = 0
    already_handled: int = 0
    late_seconds: list[int] = field(default_factory=list)
    unsent: list[ScheduleItem] = field(default_factory=list)  # kept for the next tick
    deferred: int = 0  # runs created past this window by the runs_per_minute quota


@dataclass(frozen=True)
class _NewRun:
    """An occurrence's run, not written yet, and its job."""

    run: Run
    job: Job


class DueRuns:
    def __init__(
        self,
        jobs: JobStore,
        schedule: ScheduleStore,
        runs: RunStore,
        queue: RunQueue,
        policy: DispatchPolicy,
        counters: QuotaCounters | None = None,
    ) -> None:
        self._counters = counters  # runs_per_minute's counters (the jobs table)
        self._jobs = jobs
        self._schedule = schedule
        self._runs = runs
        self._queue = queue
        self._policy = policy
        # owner -> the latest minute found full: counters only grow, so a later run of the same
        # owner starts looking after it (a flood costs one failed write per minute, not per run).
        self._full: dict[str, int] = {}
        self._full_lock = threading.Lock()

    def take(
        self, items: list[ScheduleItem], jobs: dict[str, Job], now: datetime, end: datetime
    ) -> TakeReport:
        """Take `items` and every successor due by `end` (after an outage, every missed
        occurrence; the window bounds the rounds)."""
        report = TakeReport()
        # A zero too: a metric that only appears when runs are deferred cannot tell "none".
        metrics.count(names.RUNS_DEFERRED, 0)
        while items:
            # A taken occurrence's item is not deleted (it expires): its job shows another.
            items = [item for item in items if is_live(item, jobs.get(item.job_id))]
            report.items += len(items)
            items = self._take_round(items, jobs, now, end, report)
        return report

    def take_if_soon(self, job: Job, now: datetime) -> TakeReport | None:
        """For create, update and resume: take the job's next occurrence now if it falls inside
        the lookahead (the next tick, up to a minute away, could see it too late). Best effort:
        if this fails, the occurrence's schedule item is still there for the next tick."""
        try:
            return self.take_soon(job, now)
        except Exception:
            logger.exception("could not take a new occurrence early", job_id=job.job_id)
            return None

    def take_soon(self, job: Job, now: datetime) -> TakeReport | None:
        """Take the job's next occurrence (and its successors) due within the lookahead; None
        if there is none. Raises if that fails: a pause, update or delete about to move the job
        past an overdue occurrence must not go ahead then (the occurrence would be lost)."""
        if job.status is not JobStatus.ACTIVE or job.next_run_at is None:
            return None
        end = now + timedelta(seconds=self._policy.lookahead_seconds)
        if job.next_run_at > end:
            return None
        item = ScheduleItem.occurrence(job.job_id, job.user_id, job.next_run_at, job.jitter_seconds)
        report = self.take([item], {job.job_id: job}, now, end)
        logger.info("occurrence taken early", job_id=job.job_id, queued=report.queued)
        return report

    def _take_round(
        self,
        items: list[ScheduleItem],
        jobs: dict[str, Job],
        now: datetime,
        end: datetime,
        report: TakeReport,
    ) -> list[ScheduleItem]:
        """One round: runs for `items`, sent; returns the follow-up items due by `end`.

        Each step fans out over a thread pool: at 100 runs/s a tick handles ~6,000 items, and
        one DynamoDB round trip after another would not fit in the watcher's timeout."""
        found = self._map(lambda item: self._run_for(item, jobs.get(item.job_id), now), items)
        fresh = [(i, new) for i, new in enumerate(found) if isinstance(new, _NewRun)]
        runs = [run if isinstance(run, Run) else None for run in found]
        created: set[str] = set()  # queued as they were created: no QUEUED write after the send
        made_runs = self._create_all([new for _, new in fresh], now, end)
        for (i, _), (run, made) in zip(fresh, made_runs, strict=True):
            runs[i] = run
            if made and run is not None and run.status is RunStatus.QUEUED:
                created.add(run.key)
        pending: list[tuple[ScheduleItem, Run]] = []
        settled: list[ScheduleItem] = []
        for item, run in zip(items, runs, strict=True):
            if run is None:
                settled.append(item)
            elif run.status is RunStatus.PENDING and run.not_before > epoch(end):
                # Deferred past this window by its owner's quota: its own schedule item (due at
                # its new not_before) brings it back; the occurrence moves on meanwhile.
                report.deferred += 1
                settled.append(item)
            elif run.status in (RunStatus.PENDING, RunStatus.QUEUED):
                # QUEUED and not created now: its item is still there, so it may never have
                # reached the queue (a taker died after creating it, or its send failed).
                pending.append((item, run))
            else:
                report.already_handled += 1
                settled.append(item)

        queued = self._send([run for _, run in pending])
        queued_keys = {run.key for run in queued}
        for item, run in pending:
            # An unsent run keeps its item, which the next tick sends again.
            (settled if run.key in queued_keys else report.unsent).append(item)

        def mark(run: Run) -> None:
            if run.key in created or self._runs.mark_queued(run, now, self._deadline(run, now)):
                lead = run.not_before - epoch(now)
                metrics.seconds(names.QUEUE_LEAD, lead)
                run_changed("run queued", run, queue_lead_s=lead)

        self._map(mark, queued)
        report.queued += len(queued)
        report.late_seconds += [max(0, epoch(now) - run.not_before) for run in queued]

        follow_ups = self._map(lambda item: self._settle(item, jobs.get(item.job_id)), settled)
        for follow_up in follow_ups:
            if follow_up is not None:  # the job now shows it (JobRepository.advance)
                moved = {"next_run_at": from_epoch(follow_up.scheduled_at)}
                jobs[follow_up.job_id] = jobs[follow_up.job_id].model_copy(update=moved)
        return [item for item in follow_ups if item is not None and item.due_at <= epoch(end)]

    def _send(self, runs: list[Run]) -> list[Run]:
        """Send `runs` in packs; returns those whose pack was sent."""
        packs = self._packs(runs)
        messages = [
            DispatchMessage(
                pack_id=f"{pack[0].key}-{pack[0].attempt}",
                user_id=pack[0].user_id,
                runs=[DueRun(job_id=r.job_id, key=r.key, attempt=r.attempt) for r in pack],
                first_second=min(r.not_before for r in pack),
            )
            for pack in packs
        ]
        sent = self._queue.send(messages)
        return [run for pack, ok in zip(packs, sent, strict=True) if ok for run in pack]

    def resend_unclaimed(
        self, runs: list[Run], jobs: dict[str, Job], now: datetime
    ) -> tuple[int, list[Run]]:
        """QUEUED runs past their deadline that no executor claimed (their message went to the
        DLQ, or is still behind a backlog): the scheduler's delay, not a failed attempt. Each is
        sent again with a new deadline, unless its job's catch-up policy says it is missed by
        now (then SKIPPED, with why). A second delivery is harmless: the executor's claim lets
        one through. Returns how many runs were sent or skipped, and those whose send failed
        (the sweep looks at them again)."""
        send: list[Run] = []
        done = 0
        for run in runs:
            job = jobs.get(run.job_id)
            missed = None if job is None else self._catch_up_skip(job, run.not_before, now)
            if missed is None:
                send.append(run)
            elif self._runs.skip(run, f"not started before its deadline; {missed}", now):
                done += 1
                metrics.count(names.RUNS_SKIPPED)
                run_changed("run skipped", run, error=missed)
        sent = self._send(send)
        for run in sent:
            if self._runs.mark_queued(run, now, self._deadline(run, now)):
                done += 1
                run_changed("run sent again", run, late_s=epoch(now) - run.not_before)
        sent_keys = {run.key for run in sent}
        return done, [run for run in send if run.key not in sent_keys]

    def _deadline(self, run: Run, now: datetime) -> int:
        """When the sweep concludes a run sent now: it counts from when the run can start (a
        late run is queued after its second)."""
        earliest = max(run.not_before, epoch(now))
        return earliest + run.timeout_seconds + self._policy.dispatch_grace_seconds

    def _map(self, work: Callable[[Item], Result], items: list[Item]) -> list[Result]:
        return fan_out(work, items, self._policy.workers)

    def _run_for(self, item: ScheduleItem, job: Job | None, now: datetime) -> Run | _NewRun | None:
        """The run this item stands for: the existing one of a retry or manual run, or the one
        an occurrence would create (created by `_create_all`, which counts them first)."""
        if item.trigger is not RunTrigger.SCHEDULE:
            assert item.run_key is not None
            existing = self._runs.get(item.job_id, item.run_key)
            stopped = why_no_run_starts(job)
            if existing is None or existing.status is not RunStatus.PENDING or stopped is None:
                return existing
            # A retry (or a manual run whose send failed) of a paused or deleted job
            if self._runs.skip(existing, stopped, now):
                metrics.count(names.RUNS_SKIPPED)
                run_changed("run skipped", existing, error=stopped)
            return self._runs.get(item.job_id, item.run_key)
        if job is None or job.status is not JobStatus.ACTIVE:
            return None
        run = job.new_run(item.scheduled_at, RunTrigger.SCHEDULE, now)
        run = run.model_copy(update={"not_before": item.due_at})  # its jitter, if any
        # (The overlap policy is applied by the runner, at the second: runner/jobrunner/overlap.py)
        skipped = self._catch_up_skip(job, item.scheduled_at, now)
        if skipped is not None:
            run = run.model_copy(
                update={"status": RunStatus.SKIPPED, "finished_at": now, "error": skipped}
            )
        return _NewRun(run, job)

    @staticmethod
    def _catch_up_skip(job: Job, scheduled_at: int, now: datetime) -> str | None:
        """Why a missed occurrence (taken over a minute after its second) is not run, by the
        job's catch-up policy; None if it runs (late)."""
        missed_by = epoch(now) - scheduled_at
        if missed_by <= MISSED_AFTER_SECONDS:
            return None
        policy, window = job.catch_up.policy, job.catch_up.window_seconds
        if policy is CatchUpPolicy.NONE:
            return f"skipped: missed by {missed_by} s, and the job does not catch up (NONE)"
        if missed_by > window:
            return f"skipped: missed by {missed_by} s, beyond the catch-up window of {window} s"
        if policy is CatchUpPolicy.LATEST:
            try:
                following = job.next_run_after(from_epoch(scheduled_at))
            except cron.CronError:
                return None
            if following is not None and epoch(now) - epoch(following) > MISSED_AFTER_SECONDS:
                return "skipped: a later missed occurrence runs instead (catch-up LATEST)"
        return None

    def _create_all(
        self, news: list[_NewRun], now: datetime, end: datetime
    ) -> list[tuple[Run | None, bool]]:
        """The runs of `news`, each created unless it exists: (the run, created now). Under a
        runs_per_minute quota they are counted first, per owner and minute; a count for a run
        that existed after all (a second taker) is taken back."""
        limit = self._policy.runs_per_minute
        counted: list[tuple[Run, MinuteCounter | None]] = [(new.run, None) for new in news]
        if limit is not None:
            owners: dict[str, list[int]] = {}
            for i, new in enumerate(news):
                if new.run.status is not RunStatus.SKIPPED:
                    owners.setdefault(new.run.user_id, []).append(i)
            groups = list(owners.values())
            done = self._map(lambda group: self._count([news[i].run for i in group], limit), groups)
            for group, results in zip(groups, done, strict=True):
                for i, result in zip(group, results, strict=True):
                    counted[i] = result
        made = self._map(
            lambda pair: self._create_one(pair[0], pair[1][0], now, end),
            list(zip(news, counted, strict=True)),
        )
        taken_back: dict[MinuteCounter, int] = {}
        for (_, counter), (_, was_made) in zip(counted, made, strict=True):
            if counter is not None and not was_made:
                taken_back[counter] = taken_back.get(counter, 0) + 1
        if taken_back:
            assert self._counters is not None
            for counter, amount in taken_back.items():
                self._counters.uncount(counter, amount)
        return made

    def _create_one(
        self, new: _NewRun, run: Run, now: datetime, end: datetime
    ) -> tuple[Run | None, bool]:
        """The run record (returns the existing one if it was there), with its dead man's
        switch when the job asked for one: a check item due `missed_after_seconds` after the
        run's second, written in the same transaction. A run sent now is created QUEUED with
        its deadline; one deferred past this window PENDING, with a schedule item at its new
        start (the watcher sends it then, as a retry's)."""
        job = new.job
        items: list[ScheduleItem] = []
        grace = job.notifications.missed_after_seconds
        if grace is not None and run.status is not RunStatus.SKIPPED:
            items.append(
                ScheduleItem(
                    job_id=run.job_id,
                    user_id=run.user_id,
                    scheduled_at=run.execution_time,
                    due_at=run.execution_time + grace,
                    run_key=run.key,
                    check=True,
                )
            )
        deadline = None
        if run.status is RunStatus.PENDING and run.not_before <= epoch(end):
            deadline = self._deadline(run, now)
            run = run.model_copy(update={"status": RunStatus.QUEUED, "queued_at": now})
        elif run.status is RunStatus.PENDING:
            items.append(
                ScheduleItem(
                    job_id=run.job_id,
                    user_id=run.user_id,
                    scheduled_at=run.execution_time,
                    due_at=run.not_before,
                    trigger=RunTrigger.RETRY,
                    run_key=run.key,
                )
            )
        script_key = keys.script_key(job.script_sha256)
        if not self._runs.create(run, script_key, job.parameters, items=items, deadline=deadline):
            return self._runs.get(run.job_id, run.key), False
        run_changed("run created", run, status=run.status.value, trigger=run.trigger.value)
        if run.status is RunStatus.SKIPPED:
            metrics.count(names.RUNS_SKIPPED)
        if run.deferred is not None:
            metrics.count(names.RUNS_DEFERRED)
            run_changed("run deferred", run, not_before=run.not_before)
        return run, True

    def _count(self, runs: list[Run], limit: int) -> list[tuple[Run, MinuteCounter | None]]:
        """One owner's new runs counted in its runs_per_minute counters: each in the minute it
        starts in, or if that minute is full in the first later minute with room, its start
        (not_before) moved to that minute and the reason recorded: deferred, never dropped.
        One conditional ADD per minute for all the runs that start in it (and a refusal's
        retry with what is left of the limit), earliest runs first. Past the horizon a run is
        created uncounted. Returns each run (moved or not) with the counter it was counted in."""
        user = runs[0].user_id
        order = sorted(range(len(runs)), key=lambda i: (runs[i].not_before, runs[i].key))
        result: list[tuple[Run, MinuteCounter | None]] = [(run, None) for run in runs]
        todo = deque(order)
        waiting: list[int] = []  # not counted yet, earliest first
        minute = minute_of(runs[order[0]].not_before)
        horizon = minute + MAX_DEFERRAL_MINUTES * MINUTE
        while todo or waiting:
            if not waiting:
                minute = max(minute, minute_of(runs[todo[0]].not_before))
            while todo and minute_of(runs[todo[0]].not_before) <= minute:
                waiting.append(todo.popleft())
            if minute > horizon:
                logger.warning("runs deferred beyond the horizon; created uncounted", user=user)
                for i in [*waiting, *todo]:
                    result[i] = (self._deferred_to(runs[i], minute, limit), None)
                break
            with self._full_lock:
                full = self._full.get(user)
            if full is not None and full >= minute:
                minute += MINUTE
                continue
            if self._counters is None:
                raise RuntimeError("DueRuns needs the quota counters with runs_per_minute")
            counter = MinuteCounter(user, RUNS_PER_MINUTE, minute, limit)
            got = self._counters.take_up_to(counter, len(waiting))
            for i in waiting[:got]:
                result[i] = (self._deferred_to(runs[i], minute, limit), counter)
            waiting = waiting[got:]
            if waiting:
                with self._full_lock:
                    self._full[user] = max(self._full.get(user, 0), minute)
                minute += MINUTE
        return result

    @staticmethod
    def _deferred_to(run: Run, minute: int, limit: int) -> Run:
        """`run` starting in `minute` (itself if that is its own minute)."""
        if minute <= run.not_before:
            return run
        reason = (
            f"deferred {minute - run.not_before} s: its owner's runs_per_minute quota "
            f"({limit}) was full in the minute it was due"
        )
        return run.model_copy(update={"not_before": minute, "deferred": reason})

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
        """Replace a scheduled item by the job's next occurrence (returned); drop a one-off.
        (An occurrence's item is left to expire: the job no longer shows it.)"""
        if item.trigger is not RunTrigger.SCHEDULE:
            self._schedule.delete(item)
            return None
        if job is None or job.status is not JobStatus.ACTIVE:
            return None
        after = from_epoch(item.scheduled_at)
        try:  # None past the job's end_at: it has no next run (completed)
            following = job.next_run_after(after)
        except cron.CronError:
            following = None
        return self._jobs.advance(job, item, following)
