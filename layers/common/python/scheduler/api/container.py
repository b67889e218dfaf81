"""Builds each function's service once per Lambda container (on first use), from its settings."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import boto3
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from scheduler.config import CreateJobSettings, JobApiSettings, ListJobsSettings
from scheduler.pagination import PageTokens
from scheduler.repositories import JobRepository, ScriptStore
from scheduler.service import JobService


def utc_now() -> datetime:
    return datetime.now(UTC)


def _repositories(settings: JobApiSettings) -> tuple[JobRepository, ScriptStore]:
    jobs = JobRepository(
        boto3.client("dynamodb"),
        jobs_table=settings.jobs_table,
        schedule_table=settings.schedule_table,
        shards=settings.schedule_shards,
    )
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


def reset() -> None:
    """Forget built services (tests change the environment between cases)."""
    for factory in (create_job_service, get_job_service, list_jobs_service):
        factory.cache_clear()
