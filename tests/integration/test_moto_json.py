"""The local stack's plain-JSON answers for DynamoDB item operations (`devstack.moto_json`)
against moto's own shape-walking serializer: the same calls on two identical tables, one answered
each way, parse (through botocore, as every client sees them) to the same result."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.responses import DynamoResult

from devstack import moto_json

Call = Callable[[Any, str], dict[str, Any]]

ITEM = {
    "pk": {"S": "a"},
    "sk": {"S": "1"},
    "tenant_id": {"S": "alice"},
    "payload": {"B": b"\x00\x01\xff"},
    "number": {"N": "1.50"},
    "list": {"L": [{"BOOL": True}, {"NULL": True}, {"N": "-3"}]},
    "map": {"M": {"strings": {"SS": ["x", "y"]}, "empty": {"S": ""}}},
    "blobs": {"BS": [b"z", b"\x00"]},
    "numbers": {"NS": ["1", "2.5"]},
}


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for table in ("shapes", "plain"):
            client.create_table(
                TableName=table,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": name, "AttributeType": "S"}
                    for name in ("pk", "sk", "tenant_id")
                ],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": "by_owner",
                        "KeySchema": [{"AttributeName": "tenant_id", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            for sk in "123":
                client.put_item(TableName=table, Item=ITEM | {"sk": {"S": sk}})
        yield client
    DynamoResult.execute_result = moto_json.shape_walk  # type: ignore[method-assign]


def _answers(dynamodb: Any, call: Call) -> tuple[dict[str, Any], dict[str, Any]]:
    """`call` on the shapes table answered by moto's serializer, then on the plain table
    answered as plain JSON; table names and request ids taken out."""
    DynamoResult.execute_result = moto_json.shape_walk  # type: ignore[method-assign]
    walked = call(dynamodb, "shapes")
    moto_json.install()
    plain = call(dynamodb, "plain")
    for answer in (walked, plain):
        answer.pop("ResponseMetadata", None)
    return _untabled(walked, "shapes"), _untabled(plain, "plain")


def _untabled(value: Any, table: str) -> Any:
    if isinstance(value, dict):
        return {("T" if k == table else k): _untabled(v, table) for k, v in value.items()}
    if isinstance(value, list):
        return [_untabled(v, table) for v in value]
    return "T" if value == table else value


KEY = {"pk": {"S": "a"}, "sk": {"S": "1"}}
CALLS: dict[str, Call] = {
    "GetItem": lambda db, t: db.get_item(TableName=t, Key=KEY),
    "GetItem, absent": lambda db, t: db.get_item(TableName=t, Key=KEY | {"sk": {"S": "9"}}),
    "GetItem, projected": lambda db, t: db.get_item(
        TableName=t,
        Key=KEY,
        ProjectionExpression="payload, #m.strings",
        ExpressionAttributeNames={"#m": "map"},
    ),
    "PutItem, old values": lambda db, t: db.put_item(
        TableName=t,
        Item=ITEM | {"number": {"N": "7"}},
        ReturnValues="ALL_OLD",
        ReturnConsumedCapacity="TOTAL",
    ),
    "UpdateItem, new values": lambda db, t: db.update_item(
        TableName=t,
        Key=KEY,
        UpdateExpression="ADD #n :one SET payload = :b",
        ExpressionAttributeNames={"#n": "number"},
        ExpressionAttributeValues={":one": {"N": "1"}, ":b": {"B": b"\x02"}},
        ReturnValues="ALL_NEW",
        ReturnConsumedCapacity="INDEXES",
    ),
    "UpdateItem, nothing returned": lambda db, t: db.update_item(
        TableName=t, Key=KEY, UpdateExpression="REMOVE numbers"
    ),
    "DeleteItem": lambda db, t: db.delete_item(
        TableName=t, Key=KEY | {"sk": {"S": "3"}}, ReturnValues="ALL_OLD"
    ),
    "Query, a page": lambda db, t: db.query(
        TableName=t,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "a"}},
        Limit=1,
        ScanIndexForward=False,
        ReturnConsumedCapacity="TOTAL",
    ),
    "Query, an index": lambda db, t: db.query(
        TableName=t,
        IndexName="by_owner",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "tenant_id"},
        ExpressionAttributeValues={":o": {"S": "alice"}},
    ),
    "Query, count": lambda db, t: db.query(
        TableName=t,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "a"}},
        Select="COUNT",
    ),
    "Scan": lambda db, t: db.scan(TableName=t, Limit=2),
    "BatchGetItem": lambda db, t: db.batch_get_item(
        RequestItems={t: {"Keys": [KEY, KEY | {"sk": {"S": "2"}}]}}
    ),
    "BatchWriteItem": lambda db, t: db.batch_write_item(
        RequestItems={t: [{"PutRequest": {"Item": ITEM | {"sk": {"S": "4"}}}}]}
    ),
    "TransactGetItems": lambda db, t: db.transact_get_items(
        TransactItems=[{"Get": {"TableName": t, "Key": KEY}}]
    ),
    "TransactWriteItems": lambda db, t: db.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": t, "Item": ITEM | {"sk": {"S": "5"}}}},
            {
                "Update": {
                    "TableName": t,
                    "Key": KEY,
                    "UpdateExpression": "SET tenant_id = :o",
                    "ExpressionAttributeValues": {":o": {"S": "bob"}},
                }
            },
        ]
    ),
}


def test_every_item_operation_is_covered() -> None:
    assert {name.split(",")[0] for name in CALLS} == moto_json.ITEM_OPERATIONS


@pytest.mark.parametrize("name", CALLS)
def test_plain_json_parses_as_moto_serializes(dynamodb: Any, name: str) -> None:
    walked, plain = _answers(dynamodb, CALLS[name])
    assert plain == walked


def test_errors_are_still_moto_s(dynamodb: Any) -> None:
    moto_json.install()
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException) as raised:
        dynamodb.put_item(
            TableName="plain",
            Item=ITEM,
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert raised.value.response["Item"]["payload"] == {"B": b"\x00\x01\xff"}
