"""The schedule table: one item per upcoming run (the next occurrence of each active job, plus
pending retries and manual runs), keyed so that a minute's work is one key-range Query a shard."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from scheduler import keys
from scheduler.aws import raise_if_throttled
from scheduler.dynamo import dump, load
from scheduler.runs import RunTrigger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CURSOR_BUCKET = "watcher"
CURSOR_SLOT = "cursor"


class ScheduleItem(BaseModel):
    job_id: str
    user_id: str
    scheduled_at: int  # epoch seconds of the run's scheduled second
    due_at: int  # epoch seconds at which the watcher should enqueue it (retries: their backoff)
    trigger: RunTrigger = RunTrigger.SCHEDULE
    run_key: str | None = None  # set for retries and manual runs: the run already exists

    @classmethod
    def occurrence(cls, job_id: str, user_id: str, instant: datetime) -> ScheduleItem:
        """A job's scheduled occurrence at `instant`."""
        second = int(instant.timestamp())
        return cls(job_id=job_id, user_id=user_id, scheduled_at=second, due_at=second)


def hour_starts(start: datetime, end: datetime) -> Iterator[datetime]:
    """Every UTC hour that [start, end] touches."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour <= end:
        yield hour
        hour += timedelta(hours=1)


class ScheduleRepository:
    def __init__(self, dynamodb: DynamoDBClient, *, table: str, shards: int) -> None:
        self._db = dynamodb
        self._table = table
        self._shards = shards

    @property
    def table(self) -> str:
        return self._table

    def key_of(self, item: ScheduleItem) -> dict[str, str]:
        due = datetime.fromtimestamp(item.due_at, UTC)
        shard = keys.shard_of(item.job_id, self._shards)
        suffix = (
            item.job_id if item.trigger is RunTrigger.SCHEDULE else f"{item.job_id}#{item.run_key}"
        )
        return {"bucket": keys.hour_bucket(due, shard), "slot": f"{keys.epoch_text(due)}#{suffix}"}

    def item_of(self, item: ScheduleItem) -> dict[str, Any]:
        """The DynamoDB item (plain values) for `item`."""
        return self.key_of(item) | item.model_dump(mode="json", exclude_none=True)

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

    def delete(self, item: ScheduleItem) -> None:
        self._db.delete_item(TableName=self._table, Key=dump(self.key_of(item)))

    # -- the watcher's durable cursor ---------------------------------------------------------

    def cursor(self) -> int | None:
        """Epoch second up to which every due item has been taken, or None before the first tick."""
        response = self._db.get_item(
            TableName=self._table,
            Key=dump({"bucket": CURSOR_BUCKET, "slot": CURSOR_SLOT}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return int(load(item)["until"]) if item else None

    def advance_cursor(self, until: int) -> None:
        """Move the cursor forward only (an overlapping, older tick never moves it back)."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item=dump({"bucket": CURSOR_BUCKET, "slot": CURSOR_SLOT, "until": until}),
                ConditionExpression="attribute_not_exists(#u) OR #u < :until",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues=dump({":until": until}),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
