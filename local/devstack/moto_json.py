"""DynamoDB's item operations answered as plain JSON (local stack only).

moto serializes every DynamoDB answer by walking botocore's output shape member by member,
which was a fifth of moto's CPU under the API load (a list of jobs is a few hundred attribute
values). Its `DynamoResult` already holds the wire form ({"S": ...} dicts, numbers as text), so
for the operations that return items, `json.dumps` gives what the serializer gives: bytes
base64, no None members. tests/integration/test_moto_json.py compares the two on every one of
these operations, through botocore's parser.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from moto.core.responses import ActionContext
from moto.dynamodb.responses import DynamoResult

ITEM_OPERATIONS = frozenset(
    {
        "BatchGetItem",
        "BatchWriteItem",
        "DeleteItem",
        "GetItem",
        "PutItem",
        "Query",
        "Scan",
        "TransactGetItems",
        "TransactWriteItems",
        "UpdateItem",
    }
)
CONTENT_TYPE = "application/x-amz-json-1.0"

shape_walk = DynamoResult.execute_result


def _wire(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set):
        return [_wire(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def execute_result(self: DynamoResult, context: ActionContext) -> tuple[int, dict[str, str], str]:
    if context.operation_model.name not in ITEM_OPERATIONS:
        return shape_walk(self, context)  # type: ignore[return-value]
    return 200, {"Content-Type": CONTENT_TYPE}, json.dumps(_wire(self.result))


def install() -> None:
    DynamoResult.execute_result = execute_result  # type: ignore[method-assign,assignment]
