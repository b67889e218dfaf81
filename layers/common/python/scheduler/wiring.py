"""The one place that builds services: each function's settings (validated on first use, i.e.
at cold start), one AWS client factory with botocore's retries, one clock. Built once per Lambda
container and cached; `reset()` forgets them (tests change the environment between cases)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from botocore.config import Config

from scheduler import times
from scheduler.config import (
    CreateJobSettings,
    DispatchSettings,
    ExecutorSettings,
    JobApiSettings,
    ListJobsSettings,
    RunJobSettings,
    RunStatusSettings,
    WatcherSettings,
)
from scheduler.jobs.job_repository import JobRepository
from scheduler.jobs.job_service import JobService
from scheduler.jobs.script_store import S3ScriptStore
from scheduler.pagination import PageTokens
from scheduler.pipeline.due_runs import DispatchPolicy, DueRuns
from scheduler.pipeline.ecs_backend import EcsBackend
from scheduler.pipeline.executor import Executor
from scheduler.pipeline.manifests import Manifests
from scheduler.pipeline.ports import DispatchBackend
from scheduler.pipeline.run_queue import SqsRunQueue
from scheduler.pipeline.watcher import Watcher, WatcherPolicy
from scheduler.quotas.quota_repository import PlaceRepository, QuotaRepository
from scheduler.runs.run_cancels import RunCancels
from scheduler.runs.run_object_store import S3RunObjects
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.runs.run_repository import RunRepository
from scheduler.runs.run_service import RunService
from scheduler.runs.sns_notifier import SnsRunNotifier
from scheduler.schedule.schedule_repository import ScheduleRepository
from scheduler.times import Clock

# Throttled calls are retried by botocore with backoff before any of it reaches our code.
RETRIES = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32)

_clock: Clock = times.utc_now


def now() -> datetime:
    """The clock every service reads (see `use_clock`)."""
    return _clock()


def use_clock(clock: Clock) -> None:
    """Run every service built from now on with `clock` (tests control time this way)."""
    global _clock  # noqa: PLW0603  # the one process-wide clock, like the real one
    _clock = clock
    reset()


def client(service: str) -> Any:
    """Every AWS client: botocore's adaptive retries and a pool sized for our fan-out."""
    return boto3.client(service, config=RETRIES)  # type: ignore[call-overload]


class Stores:
    """The DynamoDB repositories of one function, on one client (a client is cold-start time)."""

    def __init__(self, settings: JobApiSettings) -> None:
        dynamodb = client("dynamodb")
        self.schedule = ScheduleRepository(
            dynamodb, table=settings.schedule_table, shards=settings.schedule_shards
        )
        self.jobs = JobRepository(
            dynamodb,
            jobs_table=settings.jobs_table,
            schedule=self.schedule,
            jobs_per_owner=settings.quotas.jobs_per_owner,
        )
        # Per-minute quota counters live in the jobs table too (QUOTA#... items, TTL).
        self.quota_counters = QuotaRepository(dynamodb, table=settings.jobs_table)
        # concurrent_runs: a pack's place item (schedule table) and its owner's count (jobs).
        self.places = PlaceRepository(dynamodb, table=settings.jobs_table, schedule=self.schedule)
        self.runs = RunRepository(
            dynamodb,
            table=settings.runs_table,
            schedule=self.schedule,
            shards=settings.schedule_shards,
            retention_days=settings.run_retention_days,
            quota_table=settings.jobs_table,
        )


# -- the job API --------------------------------------------------------------------------------


def _dispatch_fields(settings: DispatchSettings) -> dict[str, int]:
    """What every taker of due runs shares: the lead, packing and the dispatch deadline."""
    return {
        "lookahead_seconds": settings.lead_seconds,
        "pack_window_seconds": settings.pack_window_seconds,
        "max_runs_per_task": settings.max_runs_per_task,
        "dispatch_grace_seconds": settings.dispatch_grace_seconds,
        "runs_per_minute": settings.quotas.runs_per_minute,
    }


def _due_runs(settings: DispatchSettings, stores: Stores) -> DueRuns:
    queue = SqsRunQueue(client("sqs"), settings.dispatch_queue_url)
    policy = DispatchPolicy(**_dispatch_fields(settings))
    return DueRuns(stores.jobs, stores.schedule, stores.runs, queue, policy, stores.quota_counters)


@cache
def create_job_service() -> JobService:
    settings = CreateJobSettings()  # type: ignore[call-arg]  # values come from the environment
    stores = Stores(settings)
    return JobService(
        stores.jobs,
        S3ScriptStore(client("s3"), settings.scripts_bucket),
        clock=now,
        idempotency_store=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=client("dynamodb")
        ),
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        early_dispatch=_due_runs(settings, stores),
    )


@cache
def job_change_service() -> JobService:
    """update, resume, pause and delete: a new next occurrence may be due before the next tick
    sees it, and an overdue one no tick took yet is taken before the job moves past it."""
    settings = DispatchSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    return JobService(
        stores.jobs,
        S3ScriptStore(client("s3"), settings.scripts_bucket),
        clock=now,
        early_dispatch=_due_runs(settings, stores),
    )


@cache
def job_service() -> JobService:
    """get and previews."""
    settings = JobApiSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    return JobService(
        stores.jobs,
        S3ScriptStore(client("s3"), settings.scripts_bucket),
        clock=now,
        history=stores.runs,
    )


@cache
def list_jobs_service() -> JobService:
    settings = ListJobsSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    return JobService(
        stores.jobs,
        S3ScriptStore(client("s3"), settings.scripts_bucket),
        clock=now,
        page_tokens=_page_tokens(settings),
        history=stores.runs,
    )


def _page_tokens(settings: ListJobsSettings) -> PageTokens:
    """Page tokens signed with the key in Secrets Manager: fetched at cold start (a missing or
    short key fails there), then from powertools' cache, fetched again after its max age."""
    provider = parameters.SecretsProvider(boto3_client=client("secretsmanager"))

    def key() -> bytes:
        value = provider.get(
            settings.page_token_secret_id, max_age=settings.page_token_secret_max_age
        )
        text = value.decode() if isinstance(value, bytes) else str(value)
        if len(text) < MIN_PAGE_TOKEN_KEY:
            raise ValueError(f"the page token key must be at least {MIN_PAGE_TOKEN_KEY} long")
        return text.encode()

    key()
    return PageTokens(key)


MIN_PAGE_TOKEN_KEY = 16


# -- the runs API -------------------------------------------------------------------------------


@cache
def list_runs_service() -> RunService:
    settings = ListJobsSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    return RunService(stores.jobs, stores.runs, clock=now, page_tokens=_page_tokens(settings))


@cache
def run_service() -> RunService:
    """get_run and get_run_output."""
    settings = JobApiSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    objects = S3RunObjects(client("s3"), settings.scripts_bucket)
    return RunService(stores.jobs, stores.runs, clock=now, objects=objects)


@cache
def cancel_run_service() -> RunService:
    settings = JobApiSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    objects = S3RunObjects(client("s3"), settings.scripts_bucket)
    cancels = RunCancels(stores.runs, objects, now)
    return RunService(stores.jobs, stores.runs, clock=now, objects=objects, cancels=cancels)


@cache
def run_now_service() -> RunService:
    settings = RunJobSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    return RunService(
        stores.jobs,
        stores.runs,
        clock=now,
        schedule=stores.schedule,
        queue=SqsRunQueue(client("sqs"), settings.dispatch_queue_url),
        dispatch_grace_seconds=settings.dispatch_grace_seconds,
        quotas=settings.quotas,
        counters=stores.quota_counters,
    )


# -- the pipeline -------------------------------------------------------------------------------


def _run_outcomes(settings: RunStatusSettings, stores: Stores) -> RunOutcomes:
    topic = settings.notifications_topic_arn
    objects = S3RunObjects(client("s3"), settings.scripts_bucket)
    return RunOutcomes(
        stores.runs,
        objects,
        retry_base_seconds=settings.retry_base_seconds,
        running_grace_seconds=settings.running_grace_seconds,
        clock=now,
        notifier=SnsRunNotifier(client("sns"), topic) if topic else None,
        jobs=stores.jobs,
        cancels=RunCancels(stores.runs, objects, now),
        places=stores.places,
    )


@cache
def run_outcomes() -> RunOutcomes:
    """run_reports (runner reports) and task_events (ECS task-stopped events)."""
    settings = RunStatusSettings()  # type: ignore[call-arg]
    return _run_outcomes(settings, Stores(settings))


@cache
def watcher() -> Watcher:
    settings = WatcherSettings()  # type: ignore[call-arg]
    stores = Stores(settings)
    policy = WatcherPolicy(
        **_dispatch_fields(settings),
        overlap_seconds=settings.overlap_seconds,
        max_window_seconds=settings.max_window_seconds,
        workers=settings.watcher_workers,
    )
    return Watcher(
        stores.jobs,
        stores.schedule,
        stores.runs,
        SqsRunQueue(client("sqs"), settings.dispatch_queue_url),
        _run_outcomes(settings, stores),
        policy,
        now,
        counters=stores.quota_counters,
        places=stores.places,
    )


BackendFactory = Callable[[Manifests], DispatchBackend]
_backends: dict[str, BackendFactory] = {}


def register_dispatch_backend(name: str, factory: BackendFactory) -> None:
    """Another way to start runner tasks than ECS (the local stack registers "local")."""
    _backends[name] = factory
    executor.cache_clear()


def _ecs_backend(settings: ExecutorSettings, manifests: Manifests) -> DispatchBackend:
    return EcsBackend(
        client("ecs"),
        manifests,
        cluster=str(settings.ecs_cluster),
        task_definition=str(settings.task_definition),
        container=settings.runner_container,
        subnets=[s for s in settings.subnets.split(",") if s],
        security_groups=[s for s in settings.security_groups.split(",") if s],
        assign_public_ip=settings.assign_public_ip,
    )


@cache
def executor() -> Executor:
    settings = ExecutorSettings()  # type: ignore[call-arg]
    manifests = Manifests(
        client("s3"),
        settings.scripts_bucket,
        settings.presigned_url_seconds,
        clock=now,
        manifest_url_seconds=settings.manifest_url_ttl,
        started_report_seconds=settings.started_report_seconds,
    )
    if settings.dispatch_backend == "ecs":
        backend = _ecs_backend(settings, manifests)
    elif settings.dispatch_backend in _backends:
        backend = _backends[settings.dispatch_backend](manifests)
    else:
        known = ", ".join(sorted({"ecs", *_backends}))
        raise ValueError(f"DISPATCH_BACKEND={settings.dispatch_backend!r}: use one of {known}")
    stores = Stores(settings)
    return Executor(
        stores.runs,
        backend,
        stores.jobs,
        claim_seconds=settings.claim_seconds,
        dispatch_grace_seconds=settings.dispatch_grace_seconds,
        clock=now,
        concurrent_runs=settings.quotas.concurrent_runs,
        places=stores.places,
        dispatch_ahead_seconds=settings.dispatch_ahead_seconds,
        holds=(
            SqsRunQueue(client("sqs"), settings.dispatch_queue_url)
            if settings.dispatch_queue_url
            else None
        ),
    )


def reset() -> None:
    """Forget every built service."""
    for factory in (
        create_job_service,
        job_change_service,
        job_service,
        list_jobs_service,
        list_runs_service,
        run_service,
        run_now_service,
        cancel_run_service,
        run_outcomes,
        watcher,
        executor,
    ):
        factory.cache_clear()
