"""Small DynamoDB helpers shared by the repositories: (de)serialising items and error mapping."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from scheduler.aws.client_errors import error_code, raise_if_throttled

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def dump(item: dict[str, Any]) -> dict[str, Any]:
    """A plain dict as a DynamoDB item; None values are left out."""
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def load(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    # Numbers come back as Decimal; every number we store is an integer.
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def transact(dynamodb: Any, writes: list[dict[str, Any]]) -> bool:
    """Write all or nothing; False if a write's condition failed (the caller decides why)."""
    try:
        dynamodb.transact_write_items(TransactItems=writes)
    except ClientError as exc:
        if any(cancelled_by_condition(exc)):
            return False
        raise_if_throttled(exc)
        raise
    return True


def condition_failed(error: ClientError) -> bool:
    return error_code(error) == "ConditionalCheckFailedException"


def cancelled_by_condition(error: ClientError) -> list[bool]:
    """For a cancelled transaction: which of its writes failed their condition."""
    if error_code(error) != "TransactionCanceledException":
        return []
    reasons = error.response.get("CancellationReasons", [])  # type: ignore[typeddict-item]
    return [r.get("Code") == "ConditionalCheckFailed" for r in reasons]
