"""Builds the scheduling pipeline's services once per Lambda container, from each function's
settings (validated on first use, i.e. at cold start)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import boto3
from botocore.config import Config

from scheduler.config import (
    ExecutorSettings,
    JobApiSettings,
    RunStatusSettings,
    WatcherSettings,
)
from scheduler.dispatch import DispatchBackend, EcsBackend, LocalBackend, Manifests
from scheduler.executor import Executor
from scheduler.lifecycle import RunOutcomes
from scheduler.queue import RunQueue
from scheduler.repositories import JobRepository
from scheduler.run_repository import RunRepository
from scheduler.run_status import RunStatusService
from scheduler.schedule import ScheduleRepository
from scheduler.watcher import Watcher, WatcherPolicy

# Throttled calls are retried by botocore with backoff before any of it reaches our code.
RETRIES = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _stores(settings: JobApiSettings) -> tuple[JobRepository, ScheduleRepository, RunRepository]:
    dynamodb = boto3.client("dynamodb", config=RETRIES)
    schedule = ScheduleRepository(
        dynamodb, table=settings.schedule_table, shards=settings.schedule_shards
    )
    jobs = JobRepository(dynamodb, jobs_table=settings.jobs_table, schedule=schedule)
    runs = RunRepository(
        dynamodb,
        table=settings.runs_table,
        schedule=schedule,
        shards=settings.schedule_shards,
        retention_days=settings.run_retention_days,
    )
    return jobs, schedule, runs


@cache
def watcher() -> Watcher:
    settings = WatcherSettings()  # type: ignore[call-arg]  # values come from the environment
    jobs, schedule, runs = _stores(settings)
    queue = RunQueue(boto3.client("sqs", config=RETRIES), settings.dispatch_queue_url)
    policy = WatcherPolicy(
        lookahead_seconds=settings.lookahead_seconds,
        overlap_seconds=settings.overlap_seconds,
        max_window_seconds=settings.max_window_seconds,
        pack_window_seconds=settings.pack_window_seconds,
        max_runs_per_task=settings.max_runs_per_task,
        dispatch_grace_seconds=settings.dispatch_grace_seconds,
        workers=settings.watcher_workers,
    )
    silent_runs = _run_status_service(settings, runs)
    return Watcher(jobs, schedule, runs, queue, silent_runs, policy, utc_now)


@cache
def executor() -> Executor:
    settings = ExecutorSettings()  # type: ignore[call-arg]
    _, _, runs = _stores(settings)
    manifests = Manifests(
        boto3.client("s3", config=RETRIES), settings.scripts_bucket, settings.presigned_url_seconds
    )
    backend: DispatchBackend
    if settings.dispatch_backend == "ecs":
        backend = EcsBackend(
            boto3.client("ecs", config=RETRIES),
            manifests,
            cluster=str(settings.ecs_cluster),
            task_definition=str(settings.task_definition),
            container=settings.runner_container,
            subnets=[s for s in settings.subnets.split(",") if s],
            security_groups=[s for s in settings.security_groups.split(",") if s],
            assign_public_ip=settings.assign_public_ip,
        )
    else:
        assert settings.runner_path
        assert settings.task_events_queue_url
        assert settings.local_work_dir
        backend = LocalBackend(
            manifests,
            runner=settings.runner_path,
            events=boto3.client("sqs", config=RETRIES),
            events_queue_url=settings.task_events_queue_url,
            work_dir=settings.local_work_dir,
        )
    return Executor(
        runs,
        backend,
        claim_seconds=settings.claim_seconds,
        dispatch_grace_seconds=settings.dispatch_grace_seconds,
        clock=utc_now,
    )


def _run_status_service(settings: RunStatusSettings, runs: RunRepository) -> RunStatusService:
    outcomes = RunOutcomes(runs, retry_base_seconds=settings.retry_base_seconds, clock=utc_now)
    return RunStatusService(
        runs,
        outcomes,
        boto3.client("s3", config=RETRIES),
        bucket=settings.scripts_bucket,
        running_grace_seconds=settings.running_grace_seconds,
        clock=utc_now,
    )


@cache
def run_status() -> RunStatusService:
    settings = RunStatusSettings()  # type: ignore[call-arg]
    _, _, runs = _stores(settings)
    return _run_status_service(settings, runs)


def reset() -> None:
    for factory in (watcher, executor, run_status):
        factory.cache_clear()
