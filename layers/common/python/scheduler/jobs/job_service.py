"""The job API's use cases: create, get, list, update, pause, resume and delete jobs. Storage
sits behind the ports of scheduler.jobs.ports."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.typing import LambdaContext

from scheduler import keys
from scheduler.errors import (
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyKeyStale,
    InvalidInput,
    JobBusy,
    JobNotFound,
)
from scheduler.fanout import fan_out
from scheduler.jobs.job_models import (
    Job,
    JobCreate,
    JobFilters,
    JobPage,
    JobStatus,
    JobUpdate,
    Occurrence,
    SchedulePreview,
    SchedulePreviewRequest,
    check_bounds,
)
from scheduler.jobs.ports import EarlyDispatch, JobReader, JobStore, RunHistory, ScriptStore
from scheduler.pagination import PageTokens
from scheduler.runs.run_models import RunSummary
from scheduler.schedule import cron
from scheduler.times import Clock

Result = TypeVar("Result")


def schedule_preview(
    schedule: str,
    timezone: str,
    after: datetime,
    count: int,
    policy: cron.DstPolicy = cron.DEFAULT_DST,
) -> SchedulePreview:
    """The next `count` occurrences of a schedule after `after`, in UTC and local time, each
    marked when daylight saving moved or doubled its wall time."""
    tz = cron.zone(timezone)
    occurrences = [
        Occurrence(at=at, local=at.astimezone(tz), dst=dst)  # type: ignore[arg-type]
        for at, dst in cron.upcoming(schedule, timezone, after, count, policy)
    ]
    return SchedulePreview(schedule=schedule, timezone=timezone, occurrences=occurrences)


def _first_run(job: Job, now: datetime, context: str = "") -> datetime:
    """A new, changed or resumed job's next run; InvalidInput if its schedule has none in its
    bounds (`context` prefixes the message)."""
    try:
        following = job.next_run_after(now)
    except cron.CronError as exc:
        raise InvalidInput(
            f"{context}{exc}", [{"field": "schedule", "problem": str(exc)}]
        ) from None
    if following is None:
        problem = "the schedule has no occurrence between now (or start_at) and end_at"
        raise InvalidInput(f"{context}{problem}", [{"field": "end_at", "problem": problem}])
    return following


def owned_job(jobs: JobReader, user_id: str, job_id: str) -> Job:
    """The caller's job; someone else's is reported as missing, never revealed."""
    job = jobs.get(job_id)
    if job is None or job.user_id != user_id:
        raise JobNotFound(f"job {job_id!r} not found")
    return job


class JobService:
    def __init__(
        self,
        jobs: JobStore,
        scripts: ScriptStore,
        *,
        clock: Clock,
        page_tokens: PageTokens | None = None,
        idempotency_store: BasePersistenceLayer | None = None,
        idempotency_ttl_seconds: int = 86400,
        early_dispatch: EarlyDispatch | None = None,
        history: RunHistory | None = None,
    ) -> None:
        self._history = history
        self._early = early_dispatch
        self._jobs = jobs
        self._scripts = scripts
        self._clock = clock
        self._tokens = page_tokens
        self._create_once: Callable[..., Job] | None = None
        self._idempotency = IdempotencyConfig(
            event_key_jmespath="[user_id, key]",
            payload_validation_jmespath="body",
            expires_after_seconds=idempotency_ttl_seconds,
        )
        if idempotency_store is not None:
            self._create_once = idempotent_function(
                data_keyword_argument="request",
                persistence_store=idempotency_store,
                config=self._idempotency,
                output_serializer=PydanticSerializer(Job),
            )(self._create_for_request)

    def create(
        self,
        user_id: str,
        body: JobCreate,
        idempotency_key: str | None = None,
        lambda_context: LambdaContext | None = None,
    ) -> Job:
        """Create a job; with an idempotency key, a retry returns the first result instead."""
        if idempotency_key is None or self._create_once is None:
            return self._create(user_id, body)
        if lambda_context is not None:
            # Lets an in-flight record expire with the invocation if it dies mid-create.
            self._idempotency.register_lambda_context(lambda_context)
        request = {"user_id": user_id, "key": idempotency_key, "body": body.model_dump()}
        try:
            job = self._create_once(request=request)
        except IdempotencyValidationError:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body"
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise IdempotencyKeyInProgress(
                "a request with this Idempotency-Key is still being processed; retry shortly"
            ) from None
        if self._jobs.get(job.job_id) is None:  # a retry would point at a job that is gone
            raise IdempotencyKeyStale(
                f"the job this Idempotency-Key created ({job.job_id}) has been deleted since; "
                "send a new key to create another"
            )
        return job

    def _create_for_request(self, request: dict[str, Any]) -> Job:
        return self._create(request["user_id"], JobCreate.model_validate(request["body"]))

    def _create(self, user_id: str, body: JobCreate) -> Job:
        now = self._clock()
        job = Job(
            job_id=uuid.uuid4().hex,
            user_id=user_id,
            name=body.name,
            schedule=body.schedule,
            timezone=body.timezone,
            parameters=body.parameters,
            description=body.description,
            status=JobStatus.ACTIVE,
            next_run_at=None,
            script_sha256="",
            timeout_seconds=body.timeout_seconds,
            max_attempts=body.max_attempts,
            concurrency_policy=body.concurrency_policy,
            notifications=body.notifications,
            catch_up=body.catch_up,
            start_at=body.start_at,
            end_at=body.end_at,
            jitter_seconds=body.jitter_seconds,
            dst=body.dst,
            pause_after_failures=body.pause_after_failures,
            created_at=now,
            updated_at=now,
        )
        next_run = _first_run(job, now)  # a schedule with no run refuses before any write
        # The script goes first: content-addressed, so a crash after it leaves no job, only an
        # object that the next identical create reuses.
        sha256, script_key = self._scripts.put(body.script)
        job = job.model_copy(
            update={
                "next_run_at": next_run.astimezone(cron.zone(body.timezone)),
                "script_sha256": sha256,
            }
        )
        self._jobs.create(job, script_key)
        self._take_if_soon(job, now)
        return job

    def get(self, user_id: str, job_id: str) -> Job:
        """The caller's job; someone else's is reported as missing, never revealed."""
        return owned_job(self._jobs, user_id, job_id)

    def describe(self, user_id: str, job_id: str) -> Job:
        """The caller's job with its last run (GET /jobs/{job_id})."""
        return self._with_last_runs([self.get(user_id, job_id)])[0]

    def _with_last_runs(self, jobs: list[Job]) -> list[Job]:
        """Each job with its latest run: one query each, in parallel (a page is at most 100)."""
        history = self._history
        if history is None:
            return jobs
        now = self._clock()
        last = fan_out(lambda job: history.last_run(job.job_id, now), jobs, _HISTORY_WORKERS)
        return [
            job.model_copy(update={"last_run": RunSummary.of(run) if run else None})
            for job, run in zip(jobs, last, strict=True)
        ]

    def preview(
        self, user_id: str, job_id: str, count: int, after: datetime | None
    ) -> SchedulePreview:
        """The caller's job's next occurrences (whether it is paused or not)."""
        job = self.get(user_id, job_id)
        preview = schedule_preview(
            job.schedule, job.timezone, after or self._clock(), count, job.dst
        )
        inside = [
            o
            for o in preview.occurrences
            if (job.start_at is None or o.at >= job.start_at)
            and (job.end_at is None or o.at <= job.end_at)
        ]
        return preview.model_copy(update={"occurrences": inside})

    def preview_schedule(self, request: SchedulePreviewRequest) -> SchedulePreview:
        """A schedule's next occurrences, before any job has it."""
        after = request.after or self._clock()
        return schedule_preview(
            request.schedule, request.timezone, after, request.count, request.dst
        )

    def update(self, user_id: str, job_id: str, patch: JobUpdate) -> Job:
        """Change some of a job's fields. A new schedule or time zone takes effect from now:
        the upcoming run moves to the new next occurrence (a paused job stays paused)."""
        changes = patch.model_dump(exclude_unset=True)
        nulls = sorted(name for name, value in changes.items() if value is None)
        if set(nulls) - _CLEARABLE:
            fields = [n for n in nulls if n not in _CLEARABLE]
            raise InvalidInput(
                f"{', '.join(fields)} cannot be null",
                [{"field": name, "problem": "cannot be null"} for name in fields],
            )
        # Models, not the dicts model_dump made of them.
        if patch.notifications is not None:
            changes["notifications"] = patch.notifications
        if patch.catch_up is not None:
            changes["catch_up"] = patch.catch_up
        if patch.dst is not None:
            changes["dst"] = patch.dst
        script = changes.pop("script", None)
        sha256, script_key = self._scripts.put(script) if script is not None else (None, None)

        def change(job: Job) -> Job | None:
            if not changes and script is None:
                return job
            if self._took_overdue(job):
                return None  # the job moved on: read it again
            now = self._clock()
            updated = job.model_copy(
                update=changes | {"updated_at": now, "script_sha256": sha256 or job.script_sha256}
            )
            try:
                check_bounds(updated.start_at, updated.end_at)
            except ValueError as exc:
                raise InvalidInput(str(exc), [{"field": "end_at", "problem": str(exc)}]) from None
            reschedule = {"schedule", "timezone", "start_at", "end_at", "dst"} & set(changes)
            # Checked paused or not, as on create: a paused job resumes onto this schedule.
            following = _first_run(updated, now) if reschedule else None
            if following is not None and job.status is JobStatus.ACTIVE:
                updated.next_run_at = following.astimezone(cron.zone(updated.timezone))
            elif job.next_run_at is not None:
                updated.next_run_at = job.next_run_at.astimezone(cron.zone(updated.timezone))
            key = script_key or keys.script_key(updated.script_sha256)
            if not self._jobs.update(updated, job, key):
                return None
            if updated.next_run_at != job.next_run_at:
                self._take_if_soon(updated, now)
            return updated

        return self._change(user_id, job_id, change)

    def pause(self, user_id: str, job_id: str) -> Job:
        """Stop scheduling the job; a run already queued still runs. Pausing twice is a no-op."""

        def change(job: Job) -> Job | None:
            if job.status is JobStatus.PAUSED:
                return self.get(user_id, job_id)
            if self._took_overdue(job):
                return None  # the job moved on: read it again
            if self._jobs.pause(job, self._clock()):
                return self.get(user_id, job_id)
            return None

        return self._change(user_id, job_id, change)

    def resume(self, user_id: str, job_id: str) -> Job:
        """Schedule the job again from now on (runs missed while paused are not made up).
        A job with no occurrence left (its end_at passed while it was paused) is refused: an
        active job that never runs would only hide it."""

        def change(job: Job) -> Job | None:
            if job.status is JobStatus.ACTIVE:
                return job
            now = self._clock()
            following = _first_run(job, now, "cannot resume: ")
            if not self._jobs.resume(job, following, now):
                return None
            resumed = self.get(user_id, job_id)
            self._take_if_soon(resumed, now)
            return resumed

        return self._change(user_id, job_id, change)

    def delete(self, user_id: str, job_id: str) -> None:
        """Delete the job and its schedule; its run history stays readable to nobody."""

        def change(job: Job) -> bool | None:
            if self._took_overdue(job):
                return None  # the job moved on: read it again
            return True if self._jobs.delete(job) else None

        self._change(user_id, job_id, change)

    def _took_overdue(self, job: Job) -> bool:
        """An occurrence already past its second that no tick has taken yet (the watcher is
        late or down) is taken before a pause, update or delete moves the job past it: else it
        would be neither run nor recorded. Its run then runs late (update) or ends SKIPPED
        (pause, delete), as any run queued before such a change. True if it was taken. If the
        take fails, so does the change (the client retries): the occurrence is never lost."""
        now = self._clock()
        if job.status is not JobStatus.ACTIVE or job.next_run_at is None or job.next_run_at > now:
            return False
        return self._early is not None and self._early.take_soon(job, now) is not None

    def _take_if_soon(self, job: Job, now: datetime) -> None:
        """A new occurrence the next tick might see too late is queued now (the job keeps
        showing it as next_run_at until a later read)."""
        if self._early is not None:
            self._early.take_if_soon(job, now)

    def _change(self, user_id: str, job_id: str, attempt: Callable[[Job], Result | None]) -> Result:
        """Apply a conditional change to the caller's job, reading it again when the watcher
        moved its next run between our read and our write (`attempt` returns None then)."""
        for _ in range(_CHANGE_ATTEMPTS):
            result = attempt(self.get(user_id, job_id))
            if result is not None:
                return result
        raise JobBusy(f"job {job_id!r} kept changing; retry")

    def list(
        self, user_id: str, filters: JobFilters, limit: int, next_token: str | None
    ) -> JobPage:
        if self._tokens is None:
            raise RuntimeError("JobService.list needs page tokens")
        scope = _filters_digest(filters)
        start = self._tokens.decode(next_token, owner=user_id, scope=scope) if next_token else None
        if _empty_range(filters):
            return JobPage(items=[])
        page = self._jobs.list_for_owner(user_id, filters, limit, start)
        token = (
            self._tokens.encode(page.position, owner=user_id, scope=scope)
            if page.position
            else None
        )
        return JobPage(items=self._with_last_runs(page.jobs), next_token=token)


# What an update may set to null: a job without a description, or without a bound.
_CLEARABLE = frozenset({"description", "start_at", "end_at"})
# Last runs read at once for a page of jobs.
_HISTORY_WORKERS = 16
# The watcher may move a job's next run between our read and our write: read again, a few times.
_CHANGE_ATTEMPTS = 5


_RANGES = (("created_after", "created_before"), ("next_run_after", "next_run_before"))


def _empty_range(filters: JobFilters) -> bool:
    """Whether a time range of the filters holds no instant (`before` not after `after`): no
    job can match, and DynamoDB would refuse the created_* one as a key condition."""
    for after, before in _RANGES:
        low, high = getattr(filters, after), getattr(filters, before)
        if low is not None and high is not None and low >= high:
            return True
    return False


def _filters_digest(filters: JobFilters) -> str:
    """A token is only valid for the filters it was issued with (else pages skip or repeat)."""
    canonical = json.dumps(filters.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
