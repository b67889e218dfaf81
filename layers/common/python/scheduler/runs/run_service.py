"""The runs API: a job's run history, one run, its output, cancel, and "run now" and backfill
through the normal pipeline."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel

from scheduler import keys
from scheduler.errors import InvalidInput, JobPaused, RunEnded, RunNotFound
from scheduler.jobs.job_models import (
    MAX_BACKFILL,
    BackfillOccurrence,
    BackfillRequest,
    BackfillResult,
    Job,
    JobStatus,
    RunNowRequest,
)
from scheduler.jobs.job_service import owned_job
from scheduler.jobs.ports import JobReader
from scheduler.pagination import PageTokens
from scheduler.pipeline.dispatch_models import DispatchMessage, DueRun
from scheduler.pipeline.ports import RunQueue
from scheduler.quotas.quota_models import (
    RUN_NOW_PER_MINUTE,
    RUNS_PER_MINUTE,
    QuotaCounters,
    Quotas,
    counter_at,
)
from scheduler.runs.ports import RunObjects, RunStore
from scheduler.runs.run_cancels import RunCancels
from scheduler.runs.run_models import (
    CancelRequest,
    ConcurrencyPolicy,
    Run,
    RunPage,
    RunStatus,
    RunTrigger,
)
from scheduler.schedule import cron
from scheduler.schedule.ports import ScheduleStore
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import Clock, epoch, from_epoch

OUTPUT_LINK_SECONDS = 300
_MANUAL_KEY_DRAWS = 3


class RunOutput(BaseModel):
    url: str | None = None
    text: str | None = None


class RunService:
    def __init__(
        self,
        jobs: JobReader,
        runs: RunStore,
        *,
        clock: Clock,
        page_tokens: PageTokens | None = None,
        schedule: ScheduleStore | None = None,
        queue: RunQueue | None = None,
        dispatch_grace_seconds: int = 300,
        objects: RunObjects | None = None,
        cancels: RunCancels | None = None,
        quotas: Quotas | None = None,
        counters: QuotaCounters | None = None,
    ) -> None:
        self._quotas = quotas
        self._counters = counters
        self._cancels = cancels
        self._jobs = jobs
        self._runs = runs
        self._clock = clock
        self._tokens = page_tokens
        self._schedule = schedule
        self._queue = queue
        self._grace = dispatch_grace_seconds
        self._objects = objects

    def list(self, user_id: str, job_id: str, limit: int, next_token: str | None) -> RunPage:
        """The job's runs, newest first."""
        if self._tokens is None:
            raise RuntimeError("RunService.list needs page tokens")
        owned_job(self._jobs, user_id, job_id)
        scope = f"runs:{job_id}"
        start = self._tokens.decode(next_token, owner=user_id, scope=scope) if next_token else None
        runs, position = self._runs.list_for_job(job_id, limit, start)
        token = self._tokens.encode(position, owner=user_id, scope=scope) if position else None
        return RunPage(items=runs, next_token=token)

    def get(self, user_id: str, job_id: str, key: str) -> Run:
        owned_job(self._jobs, user_id, job_id)
        run = self._runs.get(job_id, key)
        if run is None:
            raise RunNotFound(f"run {key!r} of job {job_id!r} not found")
        return run

    def output(self, user_id: str, job_id: str, key: str) -> RunOutput:
        """Where to read the run's full output: a short-lived link to the object, or the text
        itself when the tail already is the whole output."""
        run = self.get(user_id, job_id, key)
        if run.output_key and self._objects is not None:
            return RunOutput(url=self._objects.link(run.output_key, OUTPUT_LINK_SECONDS))
        return RunOutput(text=run.output_tail or "")

    def cancel(
        self, user_id: str, job_id: str, key: str, request: CancelRequest | None = None
    ) -> Run:
        """Stop a run that has not ended: queued, waiting or running (its script gets SIGTERM,
        then SIGKILL). It ends CANCELLED and is not retried. Cancelling a cancelled run answers
        it again; a run that ended otherwise cannot be cancelled."""
        if self._cancels is None:
            raise RuntimeError("RunService.cancel needs the cancels")
        run = self.get(user_id, job_id, key)
        reason = "cancelled by its owner"
        if request is not None and request.reason:
            reason = f"{reason}: {request.reason}"
        if run.status.terminal and run.status is not RunStatus.CANCELLED:
            raise RunEnded(f"run {key!r} has already ended: {run.status.value}")
        run = self._cancels.cancel(run, reason)
        if run.status is not RunStatus.CANCELLED:
            raise RunEnded(f"run {key!r} ended {run.status.value} before it could be cancelled")
        return run

    def run_now(self, user_id: str, job_id: str, request: RunNowRequest | None = None) -> Run:
        """Start the job now, through the same queue, executor and runner as scheduled runs,
        with its own parameters if the request gives some, and the request's reason recorded.
        The run and a schedule item are written together first: if anything fails after that,
        the watcher's next tick sends the run."""
        request = request or RunNowRequest()
        if self._queue is None or self._schedule is None:
            raise RuntimeError("RunService.run_now needs the queue and the schedule")
        job = _running_job(self._jobs, user_id, job_id)
        now = _next_second(self._clock())
        if self._quotas is not None:
            self._count(user_id, RUN_NOW_PER_MINUTE, self._quotas.run_now_per_minute, 1, "calls")
            self._count(user_id, RUNS_PER_MINUTE, self._quotas.runs_per_minute, 1, "runs started")
        # Manual runs are keyed by their second and a random token, so any number of them can
        # start in the same second; a token drawn twice (1 in 2^32) just draws again.
        for _ in range(_MANUAL_KEY_DRAWS):
            created = self._create_manual_run(job, epoch(now), now, request)
            if created is not None:
                break
        else:
            raise RuntimeError(f"no free manual run key in {_MANUAL_KEY_DRAWS} draws")
        run, item = created
        queued = self._send([(run, item)])
        if run.key in queued:
            run = run.model_copy(update={"status": RunStatus.QUEUED, "queued_at": queued[run.key]})
        return run

    def backfill(self, user_id: str, job_id: str, request: BackfillRequest) -> BackfillResult:
        """Run the job's occurrences between `from` and `to` (in the past) now, through the
        normal pipeline, each keyed by its own second: an occurrence that already has a run
        (it ran, or was skipped) is left alone, so a backfill fills gaps and is safe to repeat.
        Each run is marked BACKFILL, with the request's reason."""
        if self._queue is None or self._schedule is None:
            raise RuntimeError("RunService.backfill needs the queue and the schedule")
        job = _running_job(self._jobs, user_id, job_id)
        now = _next_second(self._clock())
        seconds = _backfill_seconds(job, request, now)
        if request.dry_run:
            return BackfillResult(
                occurrences=[
                    self._backfill_answer(job, second, "would_create", "exists")
                    for second in seconds
                ]
            )
        if self._quotas is not None and seconds:
            limit = self._quotas.runs_per_minute
            self._count(user_id, RUNS_PER_MINUTE, limit, len(seconds), "runs started")
        answers, created = [], []
        for second in seconds:
            run, item = self._backfill_run(job, second, now, request)
            made = self._runs.create_with_schedule_item(
                run, keys.script_key(job.script_sha256), job.parameters, item
            )
            answers.append(self._backfill_answer(job, second, "created" if made else "exists"))
            if made:
                created.append((run, item))
        self._send(created)
        return BackfillResult(occurrences=answers)

    def _count(self, user_id: str, quota: str, limit: int, amount: int, what: str) -> None:
        """Count `amount` in the owner's counter of `quota` for this minute; QuotaExceeded (429
        with Retry-After) if that would pass its limit. One conditional ADD: no race past it."""
        if self._counters is None:
            raise RuntimeError("RunService needs the quota counters with its quotas")
        clock = self._clock()
        counter = counter_at(user_id, quota, epoch(clock), limit)
        if not self._counters.take(counter, amount):
            raise counter.exceeded(clock, what)

    def _send(self, created: Sequence[tuple[Run, ScheduleItem]]) -> dict[str, datetime]:
        """Send new runs of one owner to the queue, in packs of ten as the watcher's, mark them
        QUEUED and drop their fallback items; returns when each queued run was marked. A run
        whose send fails keeps its item, which the watcher's next tick sends."""
        assert self._queue is not None
        assert self._schedule is not None
        queued: dict[str, datetime] = {}
        for offset in range(0, len(created), 10):
            pack = created[offset : offset + 10]
            first = pack[0][0]
            message = DispatchMessage(
                pack_id=f"{first.key}-{first.attempt}",
                user_id=first.user_id,
                runs=[DueRun(job_id=r.job_id, key=r.key, attempt=r.attempt) for r, _ in pack],
            )
            if not self._queue.send([message])[0]:
                continue
            for run, item in pack:
                deadline = run.not_before + run.timeout_seconds + self._grace
                at = self._clock()
                if self._runs.mark_queued(run, at, deadline):
                    queued[run.key] = at
                self._schedule.delete(item)
        return queued

    def _backfill_run(
        self, job: Job, second: int, now: datetime, request: BackfillRequest
    ) -> tuple[Run, ScheduleItem]:
        run = job.new_run(second, RunTrigger.BACKFILL, now).model_copy(
            update={"not_before": epoch(now), "reason": request.reason}
        )
        item = ScheduleItem(
            job_id=job.job_id,
            user_id=job.user_id,
            scheduled_at=second,
            due_at=epoch(now),
            trigger=RunTrigger.BACKFILL,
            run_key=run.key,
        )
        return run, item

    def _backfill_answer(
        self, job: Job, second: int, result: str, if_exists: str | None = None
    ) -> BackfillOccurrence:
        key = keys.run_key(from_epoch(second), job.job_id)
        if if_exists is not None and self._runs.get(job.job_id, key) is not None:
            result = if_exists
        return BackfillOccurrence(
            scheduled_at=from_epoch(second),
            run_key=key,
            result=result,  # type: ignore[arg-type]
        )

    def _create_manual_run(
        self, job: Job, second: int, now: datetime, request: RunNowRequest
    ) -> tuple[Run, ScheduleItem] | None:
        key = keys.manual_run_key(from_epoch(second), job.job_id, secrets.token_hex(4))
        run = job.new_run(second, RunTrigger.MANUAL, now).model_copy(
            update={
                "key": key,
                "reason": request.reason,
                "parameters_overridden": True if request.parameters is not None else None,
            }
        )
        item = ScheduleItem(
            job_id=job.job_id,
            user_id=job.user_id,
            scheduled_at=second,
            due_at=second,
            trigger=RunTrigger.MANUAL,
            run_key=run.key,
        )
        script_key = keys.script_key(job.script_sha256)
        parameters = job.parameters if request.parameters is None else request.parameters
        if self._runs.create_with_schedule_item(run, script_key, parameters, item):
            return run, item
        return None


def _running_job(jobs: JobReader, user_id: str, job_id: str) -> Job:
    """The caller's job, if it is not paused: a paused job starts no run (its runs that were
    already queued are skipped), so run now and backfill are refused rather than skipped."""
    job = owned_job(jobs, user_id, job_id)
    if job.status is not JobStatus.ACTIVE:
        raise JobPaused(f"job {job_id!r} is paused: resume it to run it")
    return job


def _next_second(clock: datetime) -> datetime:
    """The next whole second: runs are keyed by the second, and the runner starts at it, so the
    start lag measured from it is real delay, not the rounding of `now`."""
    return clock.replace(microsecond=0) + timedelta(seconds=1 if clock.microsecond else 0)


def _backfill_seconds(job: Job, request: BackfillRequest, now: datetime) -> list[int]:
    """The seconds of the job's occurrences in the request's range, checked."""
    if request.end >= now:
        problem = "`to` must be in the past (the schedule runs what is to come)"
        raise InvalidInput(problem, [{"field": "to", "problem": problem}])
    after = request.start - timedelta(microseconds=1)
    found = cron.upcoming(job.schedule, job.timezone, after, MAX_BACKFILL + 1, job.dst)
    seconds = [epoch(at) for at, _ in found if at <= request.end]
    if len(seconds) > MAX_BACKFILL:
        problem = f"the range holds over {MAX_BACKFILL} occurrences; backfill it in parts"
        raise InvalidInput(problem, [{"field": "to", "problem": problem}])
    if len(seconds) > 1 and job.concurrency_policy is not ConcurrencyPolicy.ALLOW:
        policy = job.concurrency_policy.value
        problem = (
            f"a backfill starts its runs together, and the job's overlap policy ({policy}) "
            "would let one of them run; backfill one occurrence at a time"
        )
        raise InvalidInput(problem, [{"field": "to", "problem": problem}])
    return seconds
