"""Domain errors. The API maps each one to an HTTP status in one table
(scheduler.api.error_responses); an error missing from it is a 500, and a unit test says so."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidInput(DomainError):
    """The request is well-formed but a field's value cannot be accepted."""

    code = "invalid_input"


class InvalidPageToken(InvalidInput):
    code = "invalid_page_token"


class JobNotFound(DomainError):
    code = "job_not_found"


class JobNameConflict(DomainError):
    code = "job_name_conflict"


class IdempotencyKeyReused(DomainError):
    """The same Idempotency-Key was sent before with a different request body."""

    code = "idempotency_key_reused"


class IdempotencyKeyInProgress(DomainError):
    """A request with this Idempotency-Key is still being processed."""

    code = "idempotency_key_in_progress"


class IdempotencyKeyStale(DomainError):
    """The job this Idempotency-Key created has been deleted since."""

    code = "idempotency_key_stale"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class ServiceUnavailable(DomainError):
    """AWS throttled us beyond botocore's retries; the client may retry later."""

    code = "service_unavailable"


class RunNotFound(DomainError):
    code = "run_not_found"


class JobBusy(DomainError):
    """The job kept changing under a pause, resume or delete (the watcher moving it)."""

    code = "job_busy"


class RunEnded(DomainError):
    """The run has already ended (SUCCEEDED, FAILED, ...): there is nothing to cancel."""

    code = "run_ended"


class UnsupportedMediaType(DomainError):
    """A request body that is not sent as JSON (`Content-Type: application/json`, UTF-8)."""

    code = "unsupported_media_type"


class JobPaused(DomainError):
    """Run now or backfill of a paused job: a paused job starts no run."""

    code = "job_paused"


class QuotaExceeded(DomainError):
    """An owner's quota is used up (docs/operations.md, "Quotas"): the message names the quota
    and its limit; `retry_after_seconds` is when the quota has room again (the end of its
    minute), or None for a quota that only a deletion frees (jobs per owner)."""

    code = "quota_exceeded"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        quota: str = "quota",
        limit: int = 0,
        retry_after_seconds: int | None = None,
    ) -> None:
        problem = {"field": quota, "problem": f"quota of {limit} reached", "limit": limit}
        super().__init__(message, details or [problem])
        self.quota = quota
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
