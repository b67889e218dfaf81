"""One settings model per function, read from the environment the template sets.

Each is built on first use (cold start) and fails fast with every missing variable named.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.pipeline.due_runs import dispatch_lead_seconds
from scheduler.quotas.quota_models import Quotas

# A task that has not read its manifest this long after its expected start finds the URL
# expired: it exits, its runs fail and are retried (docs/architecture.md, trust boundary).
MANIFEST_URL_MARGIN_SECONDS = 60


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")


class JobApiSettings(_Settings):
    """get_job, and the base of the other job API functions."""

    jobs_table: str
    schedule_table: str
    runs_table: str
    scripts_bucket: str
    schedule_shards: int = Field(ge=1, le=256)
    run_retention_days: int = Field(default=90, ge=1)  # finished runs expire (runs table TTL)
    # Per-owner quotas (template parameters Quota*; docs/operations.md, "Quotas").
    quota_jobs_per_owner: int = Field(default=1000, ge=1)
    quota_runs_per_minute: int = Field(default=600, ge=1)
    quota_run_now_per_minute: int = Field(default=30, ge=1)
    quota_concurrent_runs: int = Field(default=100, ge=1)

    @property
    def quotas(self) -> Quotas:
        return Quotas(
            jobs_per_owner=self.quota_jobs_per_owner,
            runs_per_minute=self.quota_runs_per_minute,
            run_now_per_minute=self.quota_run_now_per_minute,
            concurrent_runs=self.quota_concurrent_runs,
        )


class DispatchSettings(JobApiSettings):
    """Whoever takes due runs into the dispatch queue: the watcher, and create, update and
    resume for a new occurrence the next tick could see too late (docs/architecture.md, "On
    time", has the argument and the sources of the defaults)."""

    dispatch_queue_url: str
    # Fargate: RunTask to a running container (image pull, ENI); users report 45-90 s.
    task_start_seconds: int = Field(default=90, ge=0, le=600)
    dispatch_seconds: int = Field(default=5, ge=0, le=60)  # queue -> executor -> RunTask
    tick_seconds: int = Field(default=60, ge=1, le=600)  # the EventBridge rule's rate
    tick_delay_seconds: int = Field(default=15, ge=0, le=300)  # how late a tick may fire
    # Set to override the lead derived from the four above.
    lookahead_seconds: int | None = Field(default=None, ge=0, le=900)
    pack_window_seconds: int = Field(default=5, ge=1, le=60)
    max_runs_per_task: int = Field(default=10, ge=1, le=10)
    dispatch_grace_seconds: int = Field(default=300, ge=30)

    @property
    def lead_seconds(self) -> int:
        if self.lookahead_seconds is not None:
            return self.lookahead_seconds
        return dispatch_lead_seconds(
            task_start_seconds=self.task_start_seconds,
            dispatch_seconds=self.dispatch_seconds,
            tick_seconds=self.tick_seconds,
            tick_delay_seconds=self.tick_delay_seconds,
        )


class CreateJobSettings(DispatchSettings):
    idempotency_table: str
    idempotency_ttl_seconds: int = Field(default=86400, ge=60)


class ListJobsSettings(JobApiSettings):
    """list_jobs and list_runs."""

    # The Secrets Manager secret (ARN or name) holding the page tokens' HMAC key: read at cold
    # start and cached, re-read after this many seconds (a rotation reaches warm containers).
    page_token_secret_id: str = Field(min_length=1)
    page_token_secret_max_age: int = Field(default=300, ge=0, le=86400)


class RunJobSettings(JobApiSettings):
    """run_job ("run now")."""

    dispatch_queue_url: str
    dispatch_grace_seconds: int = Field(default=300, ge=30)


class RunStatusSettings(JobApiSettings):
    retry_base_seconds: int = Field(default=30, ge=1)
    running_grace_seconds: int = Field(default=60, ge=0)
    # The SNS topic of run notifications; unset: nobody is told.
    notifications_topic_arn: str | None = None


class WatcherSettings(DispatchSettings, RunStatusSettings):
    """The watcher also concludes silent runs, as the run status functions do."""

    overlap_seconds: int = Field(default=300, ge=0, le=3600)
    max_window_seconds: int = Field(default=1800, ge=60)
    watcher_workers: int = Field(default=16, ge=1, le=64)


class ExecutorSettings(JobApiSettings):
    # "ecs" in AWS; the local stack registers its own backend ("local") with the wiring.
    dispatch_backend: str = Field(pattern=r"^[a-z]+$")
    claim_seconds: int = Field(default=60, ge=5)
    dispatch_grace_seconds: int = Field(default=300, ge=30)
    presigned_url_seconds: int = Field(default=900, ge=60)
    # The manifest's URL, visible in the RunTask overrides, lives only until the task should
    # have read it: the expected task start plus MANIFEST_URL_MARGIN_SECONDS (unless set).
    task_start_seconds: int = Field(default=90, ge=0, le=600)
    manifest_url_seconds: int | None = Field(default=None, ge=30)
    # The dispatch queue: a pack that comes more than task_start_seconds + this margin before
    # its second (the watcher's lead is longer by a tick) is held back in it until then, so
    # its task does not wait long for the second. The margin covers the queue's return of
    # the message, the dispatch and a task slower than expected ("On time", D + J).
    dispatch_queue_url: str | None = None
    dispatch_margin_seconds: int = Field(default=20, ge=0, le=600)
    # A run still running this long after its script started reports "started" (RUNNING); a
    # shorter one goes from DISPATCHED to its end with one report (docs/performance.md, cost).
    started_report_seconds: int = Field(default=10, ge=0, le=600)
    # ecs backend
    ecs_cluster: str | None = None
    task_definition: str | None = None
    runner_container: str = "runner"
    subnets: str = ""  # comma-separated
    security_groups: str = ""
    assign_public_ip: bool = False

    @property
    def dispatch_ahead_seconds(self) -> int:
        return self.task_start_seconds + self.dispatch_margin_seconds

    @property
    def manifest_url_ttl(self) -> int:
        return self.manifest_url_seconds or self.task_start_seconds + MANIFEST_URL_MARGIN_SECONDS

    @model_validator(mode="after")
    def _backend_configured(self) -> ExecutorSettings:
        if self.dispatch_backend != "ecs":
            return self
        required = {"ecs_cluster", "task_definition", "subnets", "security_groups"}
        missing = sorted(name.upper() for name in required if not getattr(self, name))
        if missing:
            raise ValueError(f"the ecs backend needs {', '.join(missing)}")
        return self
