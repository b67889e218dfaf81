"""Small DynamoDB helpers shared by the repositories: (de)serialising items and error mapping."""

from __future__ import annotations

from collections.abc import Iterator
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


def batch_get(
    dynamodb: Any,
    table: str,
    keys: list[dict[str, Any]],
    *,
    projection: str | None = None,
    consistent: bool = False,
) -> Iterator[dict[str, Any]]:
    """The items at `keys` (DynamoDB JSON; BatchGetItem, 100 keys a call, unprocessed keys asked
    again); missing ones are not returned."""
    for offset in range(0, len(keys), 100):
        wanted: dict[str, Any] = {"Keys": keys[offset : offset + 100]}
        if projection is not None:
            wanted["ProjectionExpression"] = projection
        if consistent:
            wanted["ConsistentRead"] = True
        request: dict[str, Any] = {table: wanted}
        while request:
            try:
                response = dynamodb.batch_get_item(RequestItems=request)
            except ClientError as exc:
                raise_if_throttled(exc)
                raise
            yield from response.get("Responses", {}).get(table, [])
            request = dict(response.get("UnprocessedKeys") or {})


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
