"""One settings model per function, read from the environment the template sets.

Each is built on first use (cold start) and fails fast with every missing variable named.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")


class JobApiSettings(_Settings):
    """get_job, and the base of the other job API functions."""

    jobs_table: str
    schedule_table: str
    runs_table: str
    scripts_bucket: str
    schedule_shards: int = Field(ge=1, le=256)


class CreateJobSettings(JobApiSettings):
    idempotency_table: str
    idempotency_ttl_seconds: int = Field(default=86400, ge=60)


class ListJobsSettings(JobApiSettings):
    page_token_secret: SecretStr = Field(min_length=16)
