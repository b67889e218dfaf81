"""The quota counters' DynamoDB items, in the jobs table (next to the jobs they count):
`OWNER#<user>` holds `job_count`, changed in the transaction that creates or deletes a job;
`QUOTA#<user>#<quota>#<minute>` holds `n`, a per-minute count, with `expires_at` for the table's
TTL. Each is one conditional `ADD`, so a limit holds whatever runs at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from scheduler.aws.client_errors import raise_if_throttled
from scheduler.aws.dynamo import condition_failed, dump, load, transact
from scheduler.keys import owner_pk
from scheduler.quotas.quota_models import MinuteCounter
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.schedule.schedule_repository import ScheduleRepository

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def counter_op(table: str, counter: MinuteCounter, amount: int = 1) -> dict[str, Any]:
    """The transaction item that counts `amount` in `counter`, refused past its limit. (On a
    counter not written yet the condition holds whatever `amount`: callers refuse an amount
    over the limit themselves.)"""
    return {
        "Update": {
            "TableName": table,
            "Key": dump({"pk": counter.pk}),
            "UpdateExpression": "ADD #n :amount SET expires_at = :expires",
            "ConditionExpression": "attribute_not_exists(#n) OR #n <= :room",
            "ExpressionAttributeNames": {"#n": "n"},
            "ExpressionAttributeValues": dump(
                {
                    ":amount": amount,
                    ":room": counter.limit - amount,
                    ":expires": counter.expires_at,
                }
            ),
        }
    }


def job_count_op(table: str, user_id: str, change: int, limit: int | None) -> dict[str, Any]:
    """The transaction item that changes an owner's job count (a create: refused at `limit`)."""
    op: dict[str, Any] = {
        "TableName": table,
        "Key": dump({"pk": owner_pk(user_id)}),
        "UpdateExpression": "ADD job_count :change",
        "ExpressionAttributeValues": dump({":change": change}),
    }
    if limit is not None:
        op["ConditionExpression"] = "attribute_not_exists(job_count) OR job_count < :limit"
        op["ExpressionAttributeValues"] = dump({":change": change, ":limit": limit})
    return {"Update": op}


def running_op(table: str, user_id: str, change: int, limit: int | None) -> dict[str, Any]:
    """The transaction item that changes an owner's count of runs holding a place (concurrent
    runs): taking `change` places is refused past `limit`; giving back is unconditional."""
    values: dict[str, Any] = {":change": change}
    op: dict[str, Any] = {
        "TableName": table,
        "Key": dump({"pk": owner_pk(user_id)}),
        "UpdateExpression": "ADD running :change",
    }
    if limit is not None:
        op["ConditionExpression"] = "attribute_not_exists(running) OR running <= :room"
        values[":room"] = limit - change
    op["ExpressionAttributeValues"] = dump(values)
    return {"Update": op}


class QuotaRepository:
    """Per-minute counters, each changed alone (run now's calls, a backfill's runs, the runs a
    taker of due runs creates for one owner and minute)."""

    def __init__(self, dynamodb: DynamoDBClient, *, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def take(self, counter: MinuteCounter, amount: int = 1) -> bool:
        if amount > counter.limit:  # the condition passes on a counter not yet written
            return False
        return self._add(counter, amount) is None

    def take_up_to(self, counter: MinuteCounter, amount: int) -> int:
        """All of `amount` in one conditional ADD; refused, the refusal carries the count (no
        read: ReturnValuesOnConditionCheckFailure), and what is left of the limit is tried."""
        amount = min(amount, counter.limit)
        for _ in range(_TRIES):
            if amount <= 0:
                return 0
            count = self._add(counter, amount)
            if count is None:
                return amount
            amount = min(amount, counter.limit - count)
        return 0

    def uncount(self, counter: MinuteCounter, amount: int) -> None:
        try:
            self._db.update_item(
                TableName=self._table,
                Key=dump({"pk": counter.pk}),
                UpdateExpression="ADD #n :amount",
                ConditionExpression="attribute_exists(#n)",
                ExpressionAttributeNames={"#n": "n"},
                ExpressionAttributeValues=dump({":amount": -amount}),
            )
        except ClientError as exc:
            if not condition_failed(exc):  # expired meanwhile: nothing to take back
                raise_if_throttled(exc)
                raise

    def _add(self, counter: MinuteCounter, amount: int) -> int | None:
        """None if `amount` was counted; else the counter's count that refused it."""
        update = counter_op(self._table, counter, amount)["Update"]
        try:
            self._db.update_item(**update, ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if condition_failed(exc):
                old: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
                return int(load(old).get("n", 0)) if old else counter.limit
            raise_if_throttled(exc)
            raise
        return None


# Refused this many times in a row (others counting in the same minute), a taker defers.
_TRIES = 3


class PlaceRepository:
    """concurrent_runs places per pack: the pack's place item in the schedule table and the
    owner's `running` count in the jobs table, changed together in one transaction (4 WRU a
    pack to take, 4 to give back: ~0.8 a run in packs of ten)."""

    def __init__(self, dynamodb: DynamoDBClient, *, table: str, schedule: ScheduleRepository):
        self._db = dynamodb
        self._table = table
        self._schedule = schedule

    def take(self, place: ScheduleItem, limit: int) -> bool:
        assert place.count is not None
        if place.count > limit:  # the count's condition passes on an owner item not yet written
            return False
        put = self._schedule.put_op(place)
        put["Put"]["ConditionExpression"] = "attribute_not_exists(slot)"
        return transact(self._db, [put, running_op(self._table, place.user_id, place.count, limit)])

    def give_back(self, place: ScheduleItem) -> bool:
        assert place.count is not None
        return transact(
            self._db,
            [
                self._schedule.delete_op(place, must_exist=True),
                running_op(self._table, place.user_id, -place.count, None),
            ],
        )

    def move(self, place: ScheduleItem, due_at: int) -> ScheduleItem | None:
        moved = place.model_copy(update={"due_at": due_at, "scheduled_at": due_at})
        put = self._schedule.put_op(moved)
        put["Put"]["ConditionExpression"] = "attribute_not_exists(slot)"
        made = transact(self._db, [put, self._schedule.delete_op(place, must_exist=True)])
        return moved if made else None
