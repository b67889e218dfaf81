"""What every AWS adapter shares: turning botocore errors into domain errors."""

from __future__ import annotations

from botocore.exceptions import ClientError

from scheduler.errors import ServiceUnavailable

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "Throttling",
        "SlowDown",
        "TransactionConflictException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def raise_if_throttled(error: ClientError) -> None:
    """botocore already retried; what is still throttled is the client's to retry later."""
    if error_code(error) in THROTTLING_CODES:
        raise ServiceUnavailable("the service is busy; retry shortly") from error
