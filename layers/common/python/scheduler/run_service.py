"""The runs API: a job's run history, one run, and "run now" through the normal pipeline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel

from scheduler import keys
from scheduler.errors import JobNotFound, RunNotFound
from scheduler.models import Job
from scheduler.pagination import PageTokens
from scheduler.queue import RunQueue
from scheduler.repositories import JobRepository, ScriptStore
from scheduler.run_repository import RunRepository, epoch
from scheduler.runs import DispatchMessage, DueRun, Run, RunPage, RunStatus, RunTrigger
from scheduler.schedule import ScheduleItem, ScheduleRepository

OUTPUT_LINK_SECONDS = 300


class RunOutput(BaseModel):
    url: str | None = None
    text: str | None = None


class RunService:
    def __init__(
        self,
        jobs: JobRepository,
        runs: RunRepository,
        *,
        clock: Callable[[], datetime],
        page_tokens: PageTokens | None = None,
        schedule: ScheduleRepository | None = None,
        queue: RunQueue | None = None,
        dispatch_grace_seconds: int = 300,
        bucket: ScriptStore | None = None,
    ) -> None:
        self._bucket = bucket
        self._jobs = jobs
        self._runs = runs
        self._clock = clock
        self._tokens = page_tokens
        self._schedule = schedule
        self._queue = queue
        self._grace = dispatch_grace_seconds

    def _owned_job(self, user_id: str, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or job.user_id != user_id:
            raise JobNotFound(f"job {job_id!r} not found")
        return job

    def list(self, user_id: str, job_id: str, limit: int, next_token: str | None) -> RunPage:
        """The job's runs, newest first."""
        if self._tokens is None:
            raise RuntimeError("RunService.list needs page tokens")
        self._owned_job(user_id, job_id)
        scope = f"runs:{job_id}"
        start = self._tokens.decode(next_token, owner=user_id, scope=scope) if next_token else None
        runs, position = self._runs.list_for_job(job_id, limit, start)
        token = self._tokens.encode(position, owner=user_id, scope=scope) if position else None
        return RunPage(items=runs, next_token=token)

    def get(self, user_id: str, job_id: str, key: str) -> Run:
        self._owned_job(user_id, job_id)
        run = self._runs.get(job_id, key)
        if run is None:
            raise RunNotFound(f"run {key!r} of job {job_id!r} not found")
        return run

    def output(self, user_id: str, job_id: str, key: str) -> RunOutput:
        """Where to read the run's full output: a short-lived link to the object, or the text
        itself when the tail already is the whole output."""
        run = self.get(user_id, job_id, key)
        if run.output_key and self._bucket is not None:
            return RunOutput(url=self._bucket.link(run.output_key, OUTPUT_LINK_SECONDS))
        return RunOutput(text=run.output_tail or "")

    def run_now(self, user_id: str, job_id: str) -> Run:
        """Start the job now, through the same queue, executor and runner as scheduled runs.
        The run and a schedule item are written together first: if anything fails after that,
        the watcher's next tick sends the run."""
        if self._queue is None or self._schedule is None:
            raise RuntimeError("RunService.run_now needs the queue and the schedule")
        job = self._owned_job(user_id, job_id)
        clock = self._clock()
        # The next whole second: runs are keyed by the second, and the runner starts at it, so
        # the start lag measured from it is real delay, not the rounding of `now`.
        now = clock.replace(microsecond=0) + timedelta(seconds=1 if clock.microsecond else 0)
        run = None
        for offset in range(5):  # one run per job per second: a double click gets the next one
            moment = now + timedelta(seconds=offset)
            candidate = Run(
                key=keys.run_key(moment, job.job_id),
                job_id=job.job_id,
                user_id=job.user_id,
                execution_time=epoch(moment),
                scheduled_at=moment,
                trigger=RunTrigger.MANUAL,
                status=RunStatus.PENDING,
                attempt=1,
                max_attempts=job.max_attempts,
                timeout_seconds=job.timeout_seconds,
                not_before=epoch(moment),
                created_at=now,
                updated_at=now,
            )
            item = ScheduleItem(
                job_id=job.job_id,
                user_id=job.user_id,
                scheduled_at=epoch(moment),
                due_at=epoch(moment),
                trigger=RunTrigger.MANUAL,
                run_key=candidate.key,
            )
            script_key = ScriptStore.key_for(job.script_sha256)
            if self._runs.create_with_schedule_item(candidate, script_key, job.parameters, item):
                run = candidate
                break
        if run is None:
            raise RuntimeError("could not allocate a run key")
        message = DispatchMessage(
            pack_id=f"{run.key}-1",
            user_id=user_id,
            runs=[DueRun(job_id=run.job_id, key=run.key, attempt=1)],
        )
        if self._queue.send([message])[0]:
            deadline = run.not_before + run.timeout_seconds + self._grace
            queued_at = self._clock()
            if self._runs.mark_queued(run, queued_at, deadline):
                run = run.model_copy(update={"status": RunStatus.QUEUED, "queued_at": queued_at})
            self._schedule.delete(item)
        return run
