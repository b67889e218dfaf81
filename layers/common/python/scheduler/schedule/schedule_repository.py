"""The schedule table (DynamoDB): one item per upcoming run, keyed so that a minute's work is one
key-range Query a shard; and the watcher's durable cursor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from scheduler import keys
from scheduler.aws.client_errors import raise_if_throttled
from scheduler.aws.dynamo import condition_failed, dump, load
from scheduler.schedule.schedule_item import ScheduleItem, hour_starts
from scheduler.times import from_epoch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Long past any tick's window (a catch-up window starts at the cursor): a watcher down for
# longer than this loses the occurrences it had not taken (docs/architecture.md).
TAKEN_ITEM_TTL_SECONDS = 30 * 86400
CURSOR_BUCKET = "watcher"
CURSOR_SLOT = "cursor"
SWEPT_SLOT = "swept"  # the deadline sweep's own cursor (an ended run keeps its index entry)


class ScheduleRepository:
    def __init__(self, dynamodb: DynamoDBClient, *, table: str, shards: int) -> None:
        self._db = dynamodb
        self._table = table
        self._shards = shards

    @property
    def table(self) -> str:
        return self._table

    def key_of(self, item: ScheduleItem) -> dict[str, str]:
        due = from_epoch(item.due_at)
        shard = keys.shard_of(item.job_id, self._shards)
        slot = keys.schedule_slot(due, item.identity())
        return {"bucket": keys.hour_bucket(due, shard), "slot": slot}

    def item_of(self, item: ScheduleItem) -> dict[str, Any]:
        """The DynamoDB item (plain values) for `item`. An occurrence's item expires (the
        table's TTL) `TAKEN_ITEM_TTL_SECONDS` after it is due: once taken it is not deleted."""
        fields = self.key_of(item) | item.model_dump(mode="json", exclude_none=True)
        if item.is_occurrence():
            fields["expires_at"] = item.due_at + TAKEN_ITEM_TTL_SECONDS
        return fields

    def put_op(self, item: ScheduleItem) -> dict[str, Any]:
        """`item` as a write of a DynamoDB transaction."""
        return {"Put": {"TableName": self._table, "Item": dump(self.item_of(item))}}

    def delete_op(self, item: ScheduleItem, *, must_exist: bool = False) -> dict[str, Any]:
        delete: dict[str, Any] = {"TableName": self._table, "Key": dump(self.key_of(item))}
        if must_exist:
            delete["ConditionExpression"] = "attribute_exists(slot)"
        return {"Delete": delete}

    def due(self, start: datetime, end: datetime) -> Iterator[ScheduleItem]:
        """Items due in [start, end]: one key-range Query per shard per hour bucket."""
        low, high = keys.epoch_text(start), keys.epoch_text(end) + "#~"
        for hour in hour_starts(start, end):
            for shard in range(self._shards):
                yield from self._query(keys.hour_bucket(hour, shard), low, high)

    def _query(self, bucket: str, low: str, high: str) -> Iterator[ScheduleItem]:
        args: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#b = :b AND #s BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#b": "bucket", "#s": "slot"},
            "ExpressionAttributeValues": dump({":b": bucket, ":low": low, ":high": high}),
        }
        while True:
            try:
                page = self._db.query(**args)
            except ClientError as exc:
                raise_if_throttled(exc)
                raise
            for raw in page.get("Items", []):
                yield ScheduleItem.model_validate(load(raw))
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def put(self, item: ScheduleItem) -> None:
        self._db.put_item(TableName=self._table, Item=dump(self.item_of(item)))

    def delete(self, item: ScheduleItem) -> None:
        self._db.delete_item(TableName=self._table, Key=dump(self.key_of(item)))

    # -- the watcher's durable cursor ---------------------------------------------------------

    def cursor(self) -> int | None:
        """Epoch second up to which every due item has been taken, or None before the first tick."""
        return self._read_cursor(CURSOR_SLOT)

    def advance_cursor(self, until: int) -> None:
        """Move the cursor forward only (an overlapping, older tick never moves it back)."""
        self._move_cursor(CURSOR_SLOT, until)

    def swept(self) -> int | None:
        """The highest deadline the watcher's sweep has covered, or None before its first."""
        return self._read_cursor(SWEPT_SLOT)

    def advance_swept(self, until: int) -> None:
        self._move_cursor(SWEPT_SLOT, until)

    def _read_cursor(self, slot: str) -> int | None:
        response = self._db.get_item(
            TableName=self._table,
            Key=dump({"bucket": CURSOR_BUCKET, "slot": slot}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return int(load(item)["until"]) if item else None

    def _move_cursor(self, slot: str, until: int) -> None:
        try:
            self._db.put_item(
                TableName=self._table,
                Item=dump({"bucket": CURSOR_BUCKET, "slot": slot, "until": until}),
                ConditionExpression="attribute_not_exists(#u) OR #u < :until",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues=dump({":until": until}),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
