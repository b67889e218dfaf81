"""Builds each function's service once per Lambda container (on first use), from its settings."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import boto3
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from scheduler.config import CreateJobSettings, JobApiSettings, ListJobsSettings, RunJobSettings
from scheduler.pagination import PageTokens
from scheduler.queue import RunQueue
from scheduler.repositories import JobRepository, ScriptStore
from scheduler.run_repository import RunRepository
from scheduler.run_service import RunService
from scheduler.schedule import ScheduleRepository
from scheduler.service import JobService


def utc_now() -> datetime:
    return datetime.now(UTC)


def _run_stores(
    settings: JobApiSettings,
) -> tuple[JobRepository, RunRepository, ScheduleRepository]:
    """The DynamoDB repositories, on one client (building a client is cold-start time)."""
    dynamodb = boto3.client("dynamodb")
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
    return jobs, runs, schedule


def _repositories(settings: JobApiSettings) -> tuple[JobRepository, ScriptStore]:
    jobs, _, _ = _run_stores(settings)
    return jobs, ScriptStore(boto3.client("s3"), settings.scripts_bucket)


@cache
def create_job_service() -> JobService:
    settings = CreateJobSettings()  # type: ignore[call-arg]  # values come from the environment
    return JobService(
        *_repositories(settings),
        clock=utc_now,
        idempotency_store=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=boto3.client("dynamodb")
        ),
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
    )


@cache
def get_job_service() -> JobService:
    settings = JobApiSettings()  # type: ignore[call-arg]
    return JobService(*_repositories(settings), clock=utc_now)


@cache
def list_jobs_service() -> JobService:
    settings = ListJobsSettings()  # type: ignore[call-arg]
    tokens = PageTokens(settings.page_token_secret.get_secret_value().encode())
    return JobService(*_repositories(settings), clock=utc_now, page_tokens=tokens)


@cache
def manage_job_service() -> JobService:
    """update, pause, resume and delete."""
    settings = JobApiSettings()  # type: ignore[call-arg]
    return JobService(*_repositories(settings), clock=utc_now)


@cache
def list_runs_service() -> RunService:
    settings = ListJobsSettings()  # type: ignore[call-arg]
    jobs, runs, _ = _run_stores(settings)
    tokens = PageTokens(settings.page_token_secret.get_secret_value().encode())
    return RunService(jobs, runs, clock=utc_now, page_tokens=tokens)


@cache
def get_run_service() -> RunService:
    """get_run and get_run_output."""
    settings = JobApiSettings()  # type: ignore[call-arg]
    jobs, runs, _ = _run_stores(settings)
    bucket = ScriptStore(boto3.client("s3"), settings.scripts_bucket)
    return RunService(jobs, runs, clock=utc_now, bucket=bucket)


@cache
def run_job_service() -> RunService:
    settings = RunJobSettings()  # type: ignore[call-arg]
    jobs, runs, schedule = _run_stores(settings)
    return RunService(
        jobs,
        runs,
        clock=utc_now,
        schedule=schedule,
        queue=RunQueue(boto3.client("sqs"), settings.dispatch_queue_url),
        dispatch_grace_seconds=settings.dispatch_grace_seconds,
    )


def reset() -> None:
    """Forget built services (tests change the environment between cases)."""
    for factory in (
        create_job_service,
        get_job_service,
        list_jobs_service,
        manage_job_service,
        list_runs_service,
        get_run_service,
        run_job_service,
    ):
        factory.cache_clear()
