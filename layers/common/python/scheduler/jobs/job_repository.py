"""The jobs table (DynamoDB): job items (by id, and per owner through a sparse GSI), name guards,
and the schedule items that move with a job in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from scheduler import times
from scheduler.aws.client_errors import error_code, raise_if_throttled
from scheduler.aws.dynamo import batch_get, condition_failed, dump, load, transact
from scheduler.errors import JobNameConflict
from scheduler.jobs.job_models import CatchUp, Job, JobFilters, JobStatus, ListPage
from scheduler.keys import job_pk, name_pk
from scheduler.quotas.quota_models import jobs_exceeded
from scheduler.quotas.quota_repository import job_count_op
from scheduler.runs.run_models import ConcurrencyPolicy, Notifications
from scheduler.schedule import cron
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.schedule.schedule_repository import ScheduleRepository
from scheduler.times import from_epoch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

OWNER_INDEX = "by_owner"
# What an update may change (the name, owner, status and creation stay).
_MUTABLE = (
    "schedule",
    "timezone",
    "parameters_json",
    "description",
    "timeout_seconds",
    "max_attempts",
    "concurrency_policy",
    "notifications_json",
    "catch_up_json",
    "start_at",
    "end_at",
    "jitter_seconds",
    "dst_json",
    "pause_after_failures",
    "script_sha256",
    "script_key",
    "next_run_utc",
    "updated_at",
)
# A list request reads at most this many index pages, so its latency is bounded even when
# filters match little; the client follows next_token for the rest.
MAX_PAGES_PER_LIST = 8


class JobRepository:
    """Job items (by id, and per owner through a sparse GSI), name guards and schedule items."""

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        *,
        jobs_table: str,
        schedule: ScheduleRepository,
        jobs_per_owner: int | None = None,
    ) -> None:
        self._db = dynamodb
        self._jobs = jobs_table
        self._schedule = schedule
        self._jobs_per_owner = jobs_per_owner

    def create(self, job: Job, script_key: str) -> None:
        """Write the job, its name guard, its first schedule item and one more in its owner's
        job count (refused at the jobs-per-owner quota: QuotaExceeded): all, or none."""
        item = job_item(job, script_key)
        writes: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._jobs,
                    "Item": dump(item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self._jobs,
                    "Item": dump({"pk": name_pk(job.user_id, job.name), "job_id": job.job_id}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        if job.next_run_at is not None:
            writes.append(
                self._schedule.put_op(
                    ScheduleItem.occurrence(
                        job.job_id, job.user_id, job.next_run_at, job.jitter_seconds
                    )
                )
            )
        writes.append(job_count_op(self._jobs, job.user_id, 1, self._jobs_per_owner))
        try:
            self._db.transact_write_items(TransactItems=writes)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    raise JobNameConflict(
                        f"you already have a job named {job.name!r}",
                        [{"field": "name", "problem": "already used by another of your jobs"}],
                    ) from None
                if reasons and reasons[-1] == "ConditionalCheckFailed":
                    assert self._jobs_per_owner is not None
                    raise jobs_exceeded(self._jobs_per_owner) from None
            raise_if_throttled(exc)
            raise

    def get(self, job_id: str) -> Job | None:
        try:
            response = self._db.get_item(TableName=self._jobs, Key=dump({"pk": job_pk(job_id)}))
        except ClientError as exc:
            raise_if_throttled(exc)
            raise
        item = response.get("Item")
        return to_job(load(item)) if item else None

    def get_many(self, job_ids: set[str], *, consistent: bool = False) -> dict[str, Job]:
        """Jobs by id (BatchGetItem, 100 a call); missing ones are absent from the result.
        `consistent` for the watcher, which tells a taken occurrence from the job's next run."""
        pks = [job_pk(i) for i in sorted(job_ids)]
        jobs = (to_job(item) for item in self._batch_get(pks, consistent=consistent))
        return {job.job_id: job for job in jobs}

    def _batch_get(
        self, pks: list[str], projection: str | None = None, *, consistent: bool = False
    ) -> Iterator[dict[str, Any]]:
        """The job items `pks` (BatchGetItem, 100 keys a call, unprocessed keys asked again)."""
        keys = [dump({"pk": pk}) for pk in pks]
        for raw in batch_get(
            self._db, self._jobs, keys, projection=projection, consistent=consistent
        ):
            yield load(raw)

    def advance(
        self, job: Job, current: ScheduleItem, following: datetime | None
    ) -> ScheduleItem | None:
        """Replace the job's taken schedule item by its next occurrence, and show that
        occurrence on the job. Two plain writes, each safe to repeat, in this order:

        1. the next occurrence's item is put (idempotent: the same key);
        2. the job's `next_run_utc` moves to `following`, on condition that the job is ACTIVE
           and shows the taken occurrence or already `following`.

        The taken item is not deleted (1 WRU a run): it expires (the table's TTL), and the
        watcher, which re-reads it in its overlap, tells it is taken because its job no longer
        shows it (`due_runs.is_live`). Until step 2 the job shows it, so a crash anywhere is
        redone by the next tick; the next item exists before the job points at it, so a job
        never shows an occurrence without its item. A job paused, deleted or moved elsewhere
        meanwhile (an update took its item) fails step 2: the item put in step 1 is then an
        orphan its job does not show, skipped when it falls due and left to expire (deleting
        it could delete an update's item of the same key)."""
        item = None
        if following is not None:
            item = ScheduleItem.occurrence(job.job_id, job.user_id, following, job.jitter_seconds)
            self._schedule.put(item)
        next_utc = times.to_text(following) if following else None
        taken = times.to_text(from_epoch(current.scheduled_at))
        values: dict[str, Any] = {":active": JobStatus.ACTIVE.value, ":taken": taken}
        if next_utc:
            values[":next"] = next_utc
            shows = "(next_run_utc = :taken OR next_run_utc = :next)"
        else:
            shows = "(next_run_utc = :taken OR attribute_not_exists(next_run_utc))"
        try:
            self._db.update_item(
                TableName=self._jobs,
                Key=dump({"pk": job_pk(job.job_id)}),
                UpdateExpression="SET next_run_utc = :next" if next_utc else "REMOVE next_run_utc",
                ConditionExpression=f"#status = :active AND {shows}",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=dump(values),
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise_if_throttled(exc)
                raise
            return None  # paused, gone, or advanced past this item by another taker
        return item

    def update(self, updated: Job, previous: Job, script_key: str) -> bool:
        """Store `updated` over `previous`; a changed next run moves its schedule item in the
        same transaction. False if the job changed since `previous` was read."""
        item = job_item(updated, script_key)
        fields = [name for name in _MUTABLE if item.get(name) is not None]
        cleared = [name for name in _MUTABLE if item.get(name) is None]
        update = "SET " + ", ".join(f"#{name} = :{name}" for name in fields)
        if cleared:
            update += " REMOVE " + ", ".join(f"#{name}" for name in cleared)
        names = {f"#{name}": name for name in fields + cleared}
        condition, expected = self._unchanged(previous)
        writes: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._jobs,
                    "Key": dump({"pk": job_pk(updated.job_id)}),
                    "UpdateExpression": update,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names | {"#status": "status"},
                    "ExpressionAttributeValues": dump(
                        {f":{name}": item[name] for name in fields} | expected
                    ),
                }
            }
        ]
        moved = updated.next_run_at != previous.next_run_at
        if moved or updated.jitter_seconds != previous.jitter_seconds:
            writes += self._delete_upcoming(previous)
            if updated.next_run_at is not None:
                upcoming = ScheduleItem.occurrence(
                    updated.job_id, updated.user_id, updated.next_run_at, updated.jitter_seconds
                )
                writes.append(self._schedule.put_op(upcoming))
        return transact(self._db, writes)

    def pause(self, job: Job, now: datetime, reason: str | None = None) -> bool:
        """ACTIVE -> PAUSED, and its upcoming schedule item goes. False if the job changed
        since it was read (the watcher moved its next run): read it again and retry."""
        update = "SET #status = :paused, updated_at = :now REMOVE next_run_utc"
        values: dict[str, Any] = {":paused": JobStatus.PAUSED.value, ":now": times.to_text(now)}
        if reason is not None:
            update = update.replace(" REMOVE", ", paused_reason = :reason REMOVE")
            values[":reason"] = reason
        writes = [self._job_update(job, update, values)]
        writes += self._delete_upcoming(job)
        return transact(self._db, writes)

    # -- consecutive failures (pause_after_failures) --------------------------------------

    def count_failure(self, job_id: str) -> int | None:
        try:
            response = self._db.update_item(
                TableName=self._jobs,
                Key=dump({"pk": job_pk(job_id)}),
                UpdateExpression="ADD consecutive_failures :one",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=dump({":one": 1}),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise_if_throttled(exc)
            raise
        return int(load(response["Attributes"])["consecutive_failures"])

    def reset_failures(self, job_id: str) -> None:
        try:
            self._db.update_item(
                TableName=self._jobs,
                Key=dump({"pk": job_pk(job_id)}),
                UpdateExpression="REMOVE consecutive_failures",
                ConditionExpression="attribute_exists(pk) AND consecutive_failures > :zero",
                ExpressionAttributeValues=dump({":zero": 0}),
            )
        except ClientError as exc:
            if not condition_failed(exc):  # no failures to forget, or no job
                raise_if_throttled(exc)
                raise

    def pause_for_failures(self, job_id: str, reason: str, now: datetime) -> bool:
        for _ in range(5):  # the watcher may move the job's next run meanwhile: read again
            job = self.get(job_id)
            if job is None or job.status is not JobStatus.ACTIVE:
                return False
            if self.pause(job, now, reason):
                return True
        return False

    def resume(self, job: Job, following: datetime | None, now: datetime) -> bool:
        """PAUSED -> ACTIVE with a schedule item at `following`. False if the job changed."""
        values: dict[str, Any] = {":active": JobStatus.ACTIVE.value, ":now": times.to_text(now)}
        update = "SET #status = :active, updated_at = :now"
        writes = []
        # A resume starts afresh: no reason to show, no failures counted.
        update_tail = " REMOVE paused_reason, consecutive_failures"
        if following is not None:
            update += ", next_run_utc = :next"
            values[":next"] = times.to_text(following)
            item = ScheduleItem.occurrence(job.job_id, job.user_id, following, job.jitter_seconds)
            writes.append(self._schedule.put_op(item))
        update += update_tail
        return transact(self._db, [self._job_update(job, update, values), *writes])

    def delete(self, job: Job) -> bool:
        """The job, its name guard and its upcoming schedule item, together. Its runs stay
        (history, expired by the runs table's TTL). False if the job changed since read."""
        condition = self._unchanged(job)
        writes: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self._jobs,
                    "Key": dump({"pk": job_pk(job.job_id)}),
                    "ConditionExpression": condition[0],
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": dump(condition[1]),
                }
            },
            {
                "Delete": {
                    "TableName": self._jobs,
                    "Key": dump({"pk": name_pk(job.user_id, job.name)}),
                }
            },
            *self._delete_upcoming(job),
            job_count_op(self._jobs, job.user_id, -1, None),
        ]
        return transact(self._db, writes)

    def _unchanged(self, job: Job) -> tuple[str, dict[str, Any]]:
        """Condition: the job still has the status and next run it was read with."""
        values: dict[str, Any] = {":was": job.status.value}
        if job.next_run_at is None:
            return "#status = :was AND attribute_not_exists(next_run_utc)", values
        values[":was_next"] = times.to_text(job.next_run_at)
        return "#status = :was AND next_run_utc = :was_next", values

    def _job_update(self, job: Job, update: str, values: dict[str, Any]) -> dict[str, Any]:
        condition, expected = self._unchanged(job)
        return {
            "Update": {
                "TableName": self._jobs,
                "Key": dump({"pk": job_pk(job.job_id)}),
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": dump(values | expected),
            }
        }

    def _delete_upcoming(self, job: Job) -> list[dict[str, Any]]:
        if job.next_run_at is None:
            return []
        item = ScheduleItem.occurrence(job.job_id, job.user_id, job.next_run_at, job.jitter_seconds)
        return [self._schedule.delete_op(item)]

    def list_for_owner(
        self, user_id: str, filters: JobFilters, limit: int, start: dict[str, str] | None
    ) -> ListPage:
        """The owner's jobs newest first, filtered; created_* filters narrow the key range."""
        query = self._owner_query(user_id, filters)
        filtered = "FilterExpression" in query or bool(
            filters.next_run_after or filters.next_run_before
        )
        jobs: list[Job] = []
        last_evaluated: dict[str, Any] | None = dump(start) if start else None
        for _ in range(MAX_PAGES_PER_LIST):
            page_args = dict(query, Limit=limit if not filtered else max(limit, 100))
            if last_evaluated:
                page_args["ExclusiveStartKey"] = last_evaluated
            try:
                response = self._db.query(**page_args)
            except ClientError as exc:
                raise_if_throttled(exc)
                raise
            page = response.get("Items", [])
            # The index does not project next_run_utc (the watcher moves it at every run):
            # read from the table for the page's jobs, and filtered on here.
            next_runs = self._next_runs([load(raw)["pk"] for raw in page])
            for raw in page:
                item = load(raw)
                next_run = next_runs.get(item["pk"])
                if not _next_run_matches(next_run, filters):
                    continue
                jobs.append(to_job(item | {"next_run_utc": next_run}))
                if len(jobs) == limit:
                    more = raw is not response["Items"][-1] or "LastEvaluatedKey" in response
                    return ListPage(jobs, self._position(item) if more else None)
            last_evaluated = response.get("LastEvaluatedKey")
            if not last_evaluated:
                return ListPage(jobs, None)
        assert last_evaluated is not None  # the loop above returns on the last page
        return ListPage(jobs, {k: v["S"] for k, v in last_evaluated.items()})

    # -- item mapping -------------------------------------------------------------------------

    def _owner_query(self, user_id: str, filters: JobFilters) -> dict[str, Any]:
        key = "user_id = :user"
        values: dict[str, Any] = {":user": user_id}
        names: dict[str, str] = {}
        low = times.to_text(filters.created_after) + "#~" if filters.created_after else None
        high = times.to_text(filters.created_before) + "#" if filters.created_before else None
        if low and high:
            key += " AND created_key BETWEEN :low AND :high"
            values |= {":low": low, ":high": high}
        elif low:
            key += " AND created_key > :low"
            values[":low"] = low
        elif high:
            key += " AND created_key < :high"
            values[":high"] = high
        conditions = []
        if filters.status:
            conditions.append("#status = :status")
            names["#status"] = "status"
            values[":status"] = filters.status.value
        if filters.name:
            conditions.append("begins_with(#name, :name)")
            names["#name"] = "name"
            values[":name"] = filters.name
        query: dict[str, Any] = {
            "TableName": self._jobs,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": key,
            "ScanIndexForward": False,
        }
        if conditions:
            query["FilterExpression"] = " AND ".join(conditions)
        if names:
            query["ExpressionAttributeNames"] = names
        query["ExpressionAttributeValues"] = dump(values)
        return query

    def _next_runs(self, pks: list[str]) -> dict[str, str | None]:
        """next_run_utc of the jobs `pks` (BatchGetItem, 100 keys a call)."""
        items = self._batch_get(pks, "pk, next_run_utc")
        return {item["pk"]: item.get("next_run_utc") for item in items}

    @staticmethod
    def _position(item: dict[str, Any]) -> dict[str, str]:
        return {"pk": item["pk"], "user_id": item["user_id"], "created_key": item["created_key"]}


def _next_run_matches(next_run: str | None, filters: JobFilters) -> bool:
    """The next_run_after/before filters, as DynamoDB's filter compared the stored text (a job
    with no next run matches neither)."""
    if filters.next_run_after and not (
        next_run is not None and next_run > times.to_text(filters.next_run_after)
    ):
        return False
    return not filters.next_run_before or (
        next_run is not None and next_run < times.to_text(filters.next_run_before)
    )


def job_item(job: Job, script_key: str) -> dict[str, Any]:
    """The DynamoDB item (plain values) of a job."""
    return {
        "pk": job_pk(job.job_id),
        "job_id": job.job_id,
        "user_id": job.user_id,
        "name": job.name,
        "schedule": job.schedule,
        "timezone": job.timezone,
        "parameters_json": json.dumps(job.parameters, separators=(",", ":")),
        "description": job.description,
        "status": job.status.value,
        "next_run_utc": times.to_text(job.next_run_at) if job.next_run_at else None,
        "script_sha256": job.script_sha256,
        "script_key": script_key,
        "timeout_seconds": job.timeout_seconds,
        "max_attempts": job.max_attempts,
        "concurrency_policy": job.concurrency_policy.value,
        "notifications_json": job.notifications.model_dump_json(exclude_defaults=True),
        "catch_up_json": job.catch_up.model_dump_json(exclude_defaults=True),
        "start_at": times.to_text(job.start_at) if job.start_at else None,
        "end_at": times.to_text(job.end_at) if job.end_at else None,
        "jitter_seconds": job.jitter_seconds,
        "dst_json": job.dst.model_dump_json(exclude_none=True),
        "pause_after_failures": job.pause_after_failures,
        "paused_reason": job.paused_reason,
        "created_at": times.to_text(job.created_at),
        "updated_at": times.to_text(job.updated_at),
        "created_key": f"{times.to_text(job.created_at)}#{job.job_id}",
    }


def to_job(item: dict[str, Any]) -> Job:
    tz = cron.zone(item["timezone"])
    next_run = item.get("next_run_utc")
    return Job(
        job_id=item["job_id"],
        user_id=item["user_id"],
        name=item["name"],
        schedule=item["schedule"],
        timezone=item["timezone"],
        parameters=json.loads(item["parameters_json"]),
        description=item.get("description"),
        status=JobStatus(item["status"]),
        next_run_at=times.from_text(next_run).astimezone(tz) if next_run else None,
        script_sha256=item["script_sha256"],
        timeout_seconds=int(item["timeout_seconds"]),
        max_attempts=int(item["max_attempts"]),
        concurrency_policy=ConcurrencyPolicy(item.get("concurrency_policy", "ALLOW")),
        notifications=Notifications.model_validate_json(item.get("notifications_json") or "{}"),
        catch_up=CatchUp.model_validate_json(item.get("catch_up_json") or "{}"),
        start_at=times.from_text(item["start_at"]) if item.get("start_at") else None,
        end_at=times.from_text(item["end_at"]) if item.get("end_at") else None,
        jitter_seconds=int(item.get("jitter_seconds", 0)),
        dst=cron.DstPolicy.model_validate_json(item.get("dst_json") or "{}"),
        pause_after_failures=item.get("pause_after_failures"),
        paused_reason=item.get("paused_reason"),
        created_at=times.from_text(item["created_at"]),
        updated_at=times.from_text(item["updated_at"]),
    )
