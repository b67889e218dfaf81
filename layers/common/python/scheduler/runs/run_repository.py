"""The runs table: one item per run, updated only through conditional writes, so that a
redelivered message, an overlapping tick or a late report can never move a run backwards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from scheduler import keys, times
from scheduler.aws.client_errors import raise_if_throttled
from scheduler.aws.dynamo import batch_get, condition_failed, dump, load, transact
from scheduler.quotas.quota_repository import running_op
from scheduler.runs.run_models import (
    IN_FLIGHT,
    TERMINAL,
    AttemptRecord,
    ConcurrencyPolicy,
    Notifications,
    Run,
    RunReport,
    RunStatus,
    RunTrigger,
)
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.schedule.schedule_repository import ScheduleRepository

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

IN_FLIGHT_INDEX = "in_flight"
DISPATCH_RECORD_KEY = "task"
# A dispatch record outlives its runs' own expiry: they end at most a day after dispatch.
DISPATCH_RECORD_MARGIN_SECONDS = 2 * 86400
# No deadline is written less than this ahead: the sweep reads each deadline once, from a
# cursor, so an entry must be in the index (eventually consistent) before its deadline passes.
DEADLINE_FLOOR_SECONDS = 60


def ahead_of(now: datetime) -> int:
    """The earliest deadline that may be written at `now`."""
    return int(now.timestamp()) + DEADLINE_FLOOR_SECONDS


# A run whose current attempt is under way: its end (or failure) may still be recorded.
UNFINISHED = IN_FLIGHT | {RunStatus.QUEUED}


def _one_of(statuses: frozenset[RunStatus]) -> tuple[str, dict[str, str]]:
    """`:s0, :s1, ...` for an IN (...) condition, and their values."""
    values = {f":s{i}": status.value for i, status in enumerate(sorted(statuses))}
    return ", ".join(values), values


def _attempt_fields(report: RunReport, output_key: str | None) -> dict[str, Any]:
    """What an attempt's `finished` report records on its run (those it carries)."""
    fields = {
        "exit_code": report.exit_code,
        "duration_ms": report.duration_ms,
        "output_tail": report.output_tail,
        "output_bytes": report.output_bytes,
        "output_truncated": report.output_truncated,
        "output_key": output_key,
        "started_at": times.to_text(report.started_at) if report.started_at else None,
        "start_lag_ms": report.start_lag_ms,
    }
    return {name: value for name, value in fields.items() if value is not None}


class RunRepository:
    def __init__(
        self,
        dynamodb: DynamoDBClient,
        *,
        table: str,
        schedule: ScheduleRepository,
        shards: int,
        retention_days: int = 90,
        quota_table: str | None = None,
    ) -> None:
        self._quota_table = quota_table  # where the quota counters live (the jobs table)
        self._retention_seconds = retention_days * 86400
        self._db = dynamodb
        self._table = table
        self._schedule = schedule
        self._shards = shards

    # -- reads ---------------------------------------------------------------------------------

    def get(self, job_id: str, key: str) -> Run | None:
        item = self._item(job_id, key)
        return to_run(self._with_dispatch([item])[0]) if item else None

    def get_stored(self, job_id: str, key: str) -> Run | None:
        """The run as its own item stores it, without its pack's dispatch record: a run of a
        dispatched pack still says DISPATCHING, with no task. Enough for the status path (its
        writes take either status), at one read fewer than `get`."""
        item = self._item(job_id, key)
        return to_run(item) if item else None

    def get_with_script(self, job_id: str, key: str) -> tuple[Run, str, dict[str, Any]] | None:
        item = self._item(job_id, key)
        if item is None:
            return None
        run = to_run(self._with_dispatch([item])[0])
        return run, item["script_key"], json.loads(item["parameters_json"])

    def list_for_job(
        self, job_id: str, limit: int, start: dict[str, str] | None
    ) -> tuple[list[Run], dict[str, str] | None]:
        args: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "job_id = :job",
            "ExpressionAttributeValues": dump({":job": job_id}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            args["ExclusiveStartKey"] = dump(start)
        response = self._call(self._db.query, **args)
        items = self._with_dispatch([load(raw) for raw in response.get("Items", [])])
        runs = [to_run(item) for item in items]
        last = response.get("LastEvaluatedKey")
        return runs, ({k: v["S"] for k, v in last.items()} if last else None)

    def last_run(self, job_id: str, now: datetime) -> Run | None:
        """The job's latest run whose second has come (or is the next: a run now's): one
        key-range query, newest first (a run's key starts with its second)."""
        response = self._call(
            self._db.query,
            TableName=self._table,
            # Every key of a second S starts "S-": all are below the text of S + 1, and a run
            # now, keyed by the next whole second, counts.
            KeyConditionExpression="job_id = :job AND #k < :before",
            ExpressionAttributeNames={"#k": "key"},
            ExpressionAttributeValues=dump(
                {":job": job_id, ":before": keys.epoch_text(now + timedelta(seconds=2))}
            ),
            ScanIndexForward=False,
            Limit=1,
        )
        items = response.get("Items", [])
        return to_run(self._with_dispatch([load(items[0])])[0]) if items else None

    def overdue(self, now: datetime, since: int | None = None) -> list[tuple[str, str]]:
        """(job_id, key) of runs whose deadline passed after `since` (the sweep's cursor) and
        before `now`: lost messages or dead tasks, and runs that ended since (an ended run
        keeps its entry, read once by the sweep, rather than a write to remove it)."""
        low = -1 if since is None else since
        found = []
        for shard in range(self._shards):
            args: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": IN_FLIGHT_INDEX,
                "KeyConditionExpression": "inflight_shard = :s AND deadline BETWEEN :low AND :high",
                "ExpressionAttributeValues": dump(
                    {":s": f"{shard:02d}", ":low": low + 1, ":high": int(now.timestamp()) - 1}
                ),
            }
            while True:
                response = self._call(self._db.query, **args)
                found += [(load(i)["job_id"], load(i)["key"]) for i in response.get("Items", [])]
                if "LastEvaluatedKey" not in response:
                    break
                args["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found

    # -- writes --------------------------------------------------------------------------------

    def create(
        self,
        run: Run,
        script_key: str,
        parameters: dict[str, Any],
        *,
        items: Sequence[ScheduleItem] = (),
        deadline: int | None = None,
    ) -> bool:
        """Write a new run (PENDING, or QUEUED with its `deadline`: it enters the in-flight
        index as it is created); False if it already exists (an overlapping or retried tick).
        With schedule `items` (a dead man's switch check, a deferred run's item), one
        transaction; without, one conditional put."""
        fields = run_item(run) | {
            "script_key": script_key,
            "parameters_json": json.dumps(parameters, separators=(",", ":")),
        }
        if deadline is not None:
            fields |= {"inflight_shard": self._inflight_shard(run.job_id), "deadline": deadline}
        put = {
            "TableName": self._table,
            "Item": dump(fields),
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": "key"},
        }
        if items:
            return transact(self._db, [{"Put": put}, *(self._schedule.put_op(i) for i in items)])
        try:
            self._call(self._db.put_item, **put)
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def create_with_schedule_item(
        self, run: Run, script_key: str, parameters: dict[str, Any], item: ScheduleItem
    ) -> bool:
        """A manual run: the run and a schedule item that lets the watcher finish the job if we
        crash before the run reaches the queue. False if the run already exists."""
        return self.create(run, script_key, parameters, items=[item])

    def mark_queued(self, run: Run, now: datetime, deadline: int) -> bool:
        """PENDING -> QUEUED once sent; a QUEUED run sent again (its item was still there: a
        taker died after the send, or the send failed) gets a deadline from this send."""
        return self._update(
            run,
            "SET #st = :queued, queued_at = :now, updated_at = :now, "
            "inflight_shard = :shard, deadline = :deadline",
            "#st IN (:pending, :queued) AND attempt = :attempt",
            {
                ":queued": RunStatus.QUEUED.value,
                ":pending": RunStatus.PENDING.value,
                ":now": times.to_text(now),
                ":shard": self._inflight_shard(run.job_id),
                ":deadline": deadline,
            },
        )

    def claim(
        self, run: Run, claim_id: str, now: datetime, claim_seconds: int, pack_id: str = ""
    ) -> bool:
        """Take the run for dispatch. Only one claimant wins; an abandoned claim (the executor
        died between claim and dispatch) can be taken again once it expires. The first claim
        of an attempt binds it to its pack and the second it is due (`claim_pack`,
        `claim_second`), whose claim object every task that holds it then shares."""
        epoch = int(now.timestamp())
        return self._update(
            run,
            "SET #st = :dispatching, claim_id = :claim, claim_until = :until, updated_at = :now, "
            "claim_pack = if_not_exists(claim_pack, :pack), "
            "claim_second = if_not_exists(claim_second, :second)",
            "attempt = :attempt AND (#st IN (:pending, :queued) OR "
            "(#st = :dispatching AND claim_until < :epoch))",
            {
                ":dispatching": RunStatus.DISPATCHING.value,
                ":pending": RunStatus.PENDING.value,
                ":queued": RunStatus.QUEUED.value,
                ":claim": claim_id,
                ":until": epoch + claim_seconds,
                ":epoch": epoch,
                ":now": times.to_text(now),
                ":pack": pack_id or f"{run.key}-{run.attempt}",
                ":second": run.not_before,
            },
        )

    def release(self, run: Run, claim_id: str, now: datetime) -> None:
        """Give a claim back after a failed dispatch, so the redelivered message can retry."""
        self._update(
            run,
            "SET #st = :queued, updated_at = :now REMOVE claim_id, claim_until",
            "attempt = :attempt AND claim_id = :claim AND #st = :dispatching",
            {
                ":queued": RunStatus.QUEUED.value,
                ":dispatching": RunStatus.DISPATCHING.value,
                ":claim": claim_id,
                ":now": times.to_text(now),
            },
        )

    def mark_dispatched(
        self, run: Run, claim_id: str, task_id: str, now: datetime, deadline: int | None
    ) -> bool:
        """The claimed run is in its task. `deadline` None keeps the one it was queued with
        (the same value: the run is dispatched ahead of its second), so the in-flight index
        entry is not rewritten (a changed key costs the index a delete and a put)."""
        sets = "SET #st = :dispatched, task_id = :task, dispatched_at = :now, updated_at = :now"
        values: dict[str, Any] = {
            ":dispatched": RunStatus.DISPATCHED.value,
            ":dispatching": RunStatus.DISPATCHING.value,
            ":claim": claim_id,
            ":task": task_id,
            ":now": times.to_text(now),
        }
        if deadline is not None:
            sets += ", inflight_shard = :shard, deadline = :deadline"
            values |= {":shard": self._inflight_shard(run.job_id), ":deadline": deadline}
        return self._update(
            run, sets, "attempt = :attempt AND claim_id = :claim AND #st = :dispatching", values
        )

    def record_dispatch(self, claim_id: str, task_id: str, now: datetime) -> None:
        """The runs claimed with `claim_id` are in task `task_id`: one item for the pack instead
        of a write to each run (they stay DISPATCHING in the table and are read as DISPATCHED,
        see `_with_dispatch`; their claim may lapse, but a reader finds them dispatched). Kept
        as long as the runs are: the retention period after the longest a run can take."""
        self._call(
            self._db.put_item,
            TableName=self._table,
            Item=dump(
                dispatch_record_key(claim_id)
                | {
                    "task_id": task_id,
                    "dispatched_at": times.to_text(now),
                    "expires_at": int(now.timestamp())
                    + self._retention_seconds
                    + DISPATCH_RECORD_MARGIN_SECONDS,
                }
            ),
        )

    def mark_waiting(self, run: Run, now: datetime, deadline: int) -> bool:
        """The run's task waits for the job's previous run: its deadline covers that wait."""
        deadline = max(deadline, ahead_of(now))
        return self._update(
            run,
            "SET #st = :waiting, updated_at = :now, deadline = :deadline, inflight_shard = :shard",
            "attempt = :attempt AND #st IN (:queued, :dispatching, :dispatched)",
            {
                ":waiting": RunStatus.WAITING.value,
                ":queued": RunStatus.QUEUED.value,
                ":dispatching": RunStatus.DISPATCHING.value,
                ":dispatched": RunStatus.DISPATCHED.value,
                ":now": times.to_text(now),
                ":deadline": deadline,
                ":shard": self._inflight_shard(run.job_id),
            },
        )

    def mark_running(self, run: Run, report: RunReport, now: datetime, deadline: int) -> bool:
        deadline = max(deadline, ahead_of(now))  # a late report's start may be long past
        return self._update(
            run,
            "SET #st = :running, started_at = :started, start_lag_ms = :lag, updated_at = :now, "
            "deadline = :deadline, inflight_shard = :shard",
            "attempt = :attempt AND #st IN (:queued, :dispatching, :dispatched, :waiting)",
            {
                ":running": RunStatus.RUNNING.value,
                ":queued": RunStatus.QUEUED.value,
                ":dispatching": RunStatus.DISPATCHING.value,
                ":dispatched": RunStatus.DISPATCHED.value,
                ":waiting": RunStatus.WAITING.value,
                ":started": times.to_text(report.started_at or now),
                ":lag": report.start_lag_ms or 0,
                ":now": times.to_text(now),
                ":deadline": deadline,
                ":shard": self._inflight_shard(run.job_id),
            },
        )

    def finish(self, run: Run, report: RunReport, output_key: str | None, now: datetime) -> bool:
        """The attempt's end is the run's end: record it; the run leaves the in-flight index."""
        assert report.status is not None
        values: dict[str, Any] = {
            ":status": report.status.value,
            ":now": times.to_text(now),
            ":finished": times.to_text(report.finished_at or now),
        }
        # A finished run is history: the table's TTL removes it after the retention period.
        values[":expires"] = int(now.timestamp()) + self._retention_seconds
        sets = [
            "#st = :status",
            "updated_at = :now",
            "finished_at = :finished",
            "expires_at = :expires",
        ]
        present = _attempt_fields(report, output_key)
        if report.error is not None:
            present["error"] = report.error
        # Attribute names as placeholders: some ("error") are reserved words.
        sets += [f"#{name} = :{name}" for name in present]
        names = {f"#{name}": name for name in present}
        values |= {f":{name}": value for name, value in present.items()}
        unfinished, statuses = _one_of(UNFINISHED)
        return self._end(
            run,
            # The in-flight entry stays (removing it cost 1 WRU a run): the sweep reads it once
            # when its deadline passes, finds the run ended, and its cursor moves past it.
            # claim_id stays: it finds the run's dispatch record (its task and dispatch time).
            f"SET {', '.join(sets)} REMOVE claim_until",
            f"attempt = :attempt AND #st IN ({unfinished})",
            values | statuses,
            names,
        )

    def cancel(self, run: Run, reason: str, now: datetime) -> bool:
        """End the run as CANCELLED if it has not ended (any attempt: its claim on the attempt it
        was read at is the caller's, see RunService.cancel), and is in the pack claim it was
        read in (none, or `claim_pack`): the cancel marked that claim for its runner, so a run
        claimed since is read again and its new claim marked. It leaves the in-flight index."""
        terminal, statuses = _one_of(TERMINAL)
        values = {
            ":cancelled": RunStatus.CANCELLED.value,
            ":now": times.to_text(now),
            ":reason": reason,
            ":expires": int(now.timestamp()) + self._retention_seconds,
        } | statuses
        if run.claim_pack is None:
            same_claim = "attribute_not_exists(claim_pack)"
        else:
            same_claim = "claim_pack = :pack"
            values[":pack"] = run.claim_pack
        return self._end(
            run,
            "SET #st = :cancelled, updated_at = :now, finished_at = :now, #err = :reason, "
            "expires_at = :expires REMOVE inflight_shard, deadline, claim_until",
            f"attempt = :attempt AND NOT (#st IN ({terminal})) AND {same_claim}",
            values,
            {"#err": "error"},
        )

    def record_cancelled(
        self, run: Run, report: RunReport, output_key: str | None, now: datetime
    ) -> bool:
        """The cancelled attempt's own report: its exit code, timings and output; once."""
        present = _attempt_fields(report, output_key)
        sets = ["updated_at = :now"] + [f"#{name} = :{name}" for name in present]
        return self._update(
            run,
            f"SET {', '.join(sets)}",
            "attempt = :attempt AND #st = :cancelled AND attribute_not_exists(duration_ms)",
            {":now": times.to_text(now), ":cancelled": RunStatus.CANCELLED.value}
            | {f":{name}": value for name, value in present.items()},
            {f"#{name}": name for name in present},
        )

    def note_once(self, run: Run, note: str) -> bool:
        """Record that `note` was done for the run (e.g. its owner told it started late); False
        if it had been: what two concurrent handlers of the same run would both do, one does."""
        try:
            self._call(
                self._db.update_item,
                TableName=self._table,
                Key=dump({"job_id": run.job_id, "key": run.key}),
                UpdateExpression="ADD notes :note",
                ConditionExpression="NOT contains(notes, :one)",
                ExpressionAttributeValues={":note": {"SS": [note]}, ":one": {"S": note}},
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def skip(self, run: Run, reason: str, now: datetime) -> bool:
        """End a run that has not started as SKIPPED (its job was paused or deleted), if it is
        still at `run`'s attempt and status; it leaves the in-flight index."""
        return self._end(
            run,
            "SET #st = :skipped, updated_at = :now, finished_at = :now, #err = :reason, "
            "expires_at = :expires REMOVE inflight_shard, deadline, claim_id, claim_until",
            "attempt = :attempt AND #st = :status",
            {
                ":skipped": RunStatus.SKIPPED.value,
                ":status": run.status.value,
                ":now": times.to_text(now),
                ":reason": reason,
                ":expires": int(now.timestamp()) + self._retention_seconds,
            },
            {"#err": "error"},
        )

    def retry(self, run: Run, failed: AttemptRecord, not_before: int, now: datetime) -> bool:
        """Close the failed attempt and schedule the next one: the run back to PENDING with
        attempt + 1, and a schedule item at `not_before` for the watcher — one transaction."""
        item = ScheduleItem(
            job_id=run.job_id,
            user_id=run.user_id,
            scheduled_at=run.execution_time,
            due_at=not_before,
            trigger=RunTrigger.RETRY,
            run_key=run.key,
        )
        unfinished, statuses = _one_of(UNFINISHED)
        values = {
            ":pending": RunStatus.PENDING.value,
            ":next": run.attempt + 1,
            ":attempt": run.attempt,
            ":nb": not_before,
            ":now": times.to_text(now),
            ":history": [failed.model_dump(mode="json", exclude_none=True)],
            ":empty": [],
        } | statuses
        update = {
            "Update": {
                "TableName": self._table,
                "Key": dump({"job_id": run.job_id, "key": run.key}),
                "UpdateExpression": (
                    "SET #st = :pending, attempt = :next, not_before = :nb, "
                    "updated_at = :now, attempts = "
                    "list_append(if_not_exists(attempts, :empty), :history) "
                    "REMOVE inflight_shard, deadline, claim_id, claim_until, claim_pack, "
                    "claim_second, "
                    "task_id, queued_at, dispatched_at, started_at, start_lag_ms, "
                    "finished_at, exit_code, output_tail, output_bytes, "
                    "output_truncated, output_key, duration_ms, #err"
                ),
                "ConditionExpression": f"attempt = :attempt AND #st IN ({unfinished})",
                "ExpressionAttributeNames": {"#st": "status", "#err": "error"},
                "ExpressionAttributeValues": dump(values),
            }
        }
        give_back = self._give_back(run, update["Update"])
        return transact(self._db, [update, self._schedule.put_op(item), *give_back])

    # -- concurrent runs per owner: places are taken per pack (quotas.PlaceRepository) --------

    def defer(self, run: Run, claim_id: str, not_before: int, reason: str, now: datetime) -> bool:
        """A claimed run that found no place: back to PENDING at `not_before`, with the reason,
        and a schedule item then, which brings it back to the executor (never dropped)."""
        item = ScheduleItem(
            job_id=run.job_id,
            user_id=run.user_id,
            scheduled_at=run.execution_time,
            due_at=not_before,
            trigger=RunTrigger.RETRY,
            run_key=run.key,
        )
        update = {
            "Update": {
                "TableName": self._table,
                "Key": dump({"job_id": run.job_id, "key": run.key}),
                "UpdateExpression": "SET #st = :pending, not_before = :nb, #deferred = :reason, "
                # claim_pack and claim_second stay: a task the attempt may already be in (a
                # RunTask whose answer was lost) and the one it goes in later share one claim.
                "updated_at = :now REMOVE inflight_shard, deadline, claim_id, claim_until, "
                "queued_at",
                "ConditionExpression": "attempt = :attempt AND #st = :dispatching AND "
                "claim_id = :claim AND attribute_not_exists(holds_place)",
                "ExpressionAttributeNames": {"#st": "status", "#deferred": "deferred"},
                "ExpressionAttributeValues": dump(
                    {
                        ":pending": RunStatus.PENDING.value,
                        ":nb": not_before,
                        ":reason": reason,
                        ":now": times.to_text(now),
                        ":attempt": run.attempt,
                        ":dispatching": RunStatus.DISPATCHING.value,
                        ":claim": claim_id,
                    }
                ),
            }
        }
        return transact(self._db, [update, self._schedule.put_op(item)])

    def _give_back(self, run: Run, update: dict[str, Any]) -> list[dict[str, Any]]:
        """Make `update` (a write that ends the run's attempt) give back the place the run
        holds, if it holds one (a run dispatched before places were taken per pack, issue 12;
        a pack's place item is given back when its task stops): it removes the mark, on
        condition that it is still there, and the owner's count goes down in the same
        transaction (returned, to add to it). A run
        read without a place is written on condition that it still has none (an executor may
        have taken one since: the write fails, and the caller reads the run again)."""
        if not run.holds_place:
            update["ConditionExpression"] += " AND attribute_not_exists(holds_place)"
            return []
        if self._quota_table is None:
            raise RuntimeError("RunRepository needs the quota table to give a place back")
        expression = update["UpdateExpression"]
        if " REMOVE " in expression:
            update["UpdateExpression"] = expression + ", holds_place"
        else:
            update["UpdateExpression"] = expression + " REMOVE holds_place"
        update["ConditionExpression"] += " AND holds_place = :held"
        values = dict(update["ExpressionAttributeValues"])
        values.update(dump({":held": True}))
        update["ExpressionAttributeValues"] = values
        return [running_op(self._quota_table, run.user_id, -1, None)]

    def _end(
        self,
        run: Run,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> bool:
        """An update that ends the run's attempt, giving back its place if it holds one."""
        write: dict[str, Any] = {
            "TableName": self._table,
            "Key": dump({"job_id": run.job_id, "key": run.key}),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#st": "status"} | (names or {}),
            "ExpressionAttributeValues": dump(values | {":attempt": run.attempt}),
        }
        give_back = self._give_back(run, write)
        if not give_back:
            try:
                self._call(self._db.update_item, **write)
            except ClientError as exc:
                if condition_failed(exc):
                    return False
                raise
            return True
        return transact(self._db, [{"Update": write}, *give_back])

    # -- plumbing ------------------------------------------------------------------------------

    def _item(self, job_id: str, key: str) -> dict[str, Any] | None:
        response = self._call(
            self._db.get_item,
            TableName=self._table,
            Key=dump({"job_id": job_id, "key": key}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return load(item) if item else None

    def _with_dispatch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The run items as the pipeline knows them (`with_dispatch_record`): one read of the
        dispatch records they point at (eventually consistent: a record is written long
        before a redelivered message or a reader needs it; the claim's condition guards the
        rest)."""
        claims = {claim for item in items if (claim := undispatched_claim(item))}
        if not claims:
            return items
        wanted = [dump(dispatch_record_key(claim)) for claim in sorted(claims)]
        records = [load(raw) for raw in batch_get(self._db, self._table, wanted)]
        by_claim = {record_claim(record): record for record in records}
        return [with_dispatch_record(i, by_claim.get(i.get("claim_id", ""))) for i in items]

    def _inflight_shard(self, job_id: str) -> str:
        return keys.inflight_shard(job_id, self._shards)

    def _update(
        self,
        run: Run,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> bool:
        try:
            self._call(
                self._db.update_item,
                TableName=self._table,
                Key=dump({"job_id": run.job_id, "key": run.key}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#st": "status"} | (names or {}),
                ExpressionAttributeValues=dump(values | {":attempt": run.attempt}),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    @staticmethod
    def _call(operation: Any, **kwargs: Any) -> Any:
        try:
            return operation(**kwargs)
        except ClientError as exc:
            raise_if_throttled(exc)
            raise


_TIME_FIELDS = (
    "scheduled_at",
    "created_at",
    "updated_at",
    "queued_at",
    "dispatched_at",
    "started_at",
    "finished_at",
)


def dispatch_record_key(claim_id: str) -> dict[str, str]:
    """The key of the dispatch record of the runs claimed with `claim_id` (plain values)."""
    return {"job_id": keys.dispatch_record_id(claim_id), "key": DISPATCH_RECORD_KEY}


def undispatched_claim(item: dict[str, Any]) -> str | None:
    """The claim of a run item that may be in a recorded dispatch (claimed, no task on it)."""
    return None if "task_id" in item else item.get("claim_id")


def record_claim(item: dict[str, Any]) -> str | None:
    """The claim whose dispatch record `item` is; None for a run's item."""
    job_id = str(item.get("job_id", ""))
    prefix = keys.dispatch_record_id("")
    return job_id.removeprefix(prefix) if job_id.startswith(prefix) else None


def with_dispatch_record(item: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """A run item (plain values) as the pipeline reads it: claimed by an executor that recorded
    its pack's dispatch (`RunRepository.record_dispatch`), it is in that task, DISPATCHED if
    the item still says DISPATCHING."""
    if record is None or "task_id" in item:
        return item
    read = item | {"task_id": record["task_id"], "dispatched_at": record["dispatched_at"]}
    if read.get("status") == RunStatus.DISPATCHING.value:
        read["status"] = RunStatus.DISPATCHED.value
    return read


def run_item(run: Run) -> dict[str, Any]:
    item = run.model_dump(mode="json", exclude_none=True)
    if run.holds_place:
        item["holds_place"] = True
    if run.notifications is not None:  # not shown by the API, kept with the run
        item["notifications_json"] = run.notifications.model_dump_json(exclude_defaults=True)
    if run.pause_after_failures is not None:
        item["pause_after_failures"] = run.pause_after_failures
    if run.overlap is not ConcurrencyPolicy.ALLOW:
        item["overlap"] = run.overlap.value
    for name in _TIME_FIELDS:
        value = getattr(run, name)
        if value is not None:
            item[name] = times.to_text(value)
    if not item.get("attempts"):
        item.pop("attempts", None)
    return item


def to_run(item: dict[str, Any]) -> Run:
    fields: dict[str, Any] = {k: v for k, v in item.items() if k in Run.model_fields}
    if "notifications_json" in item:
        fields["notifications"] = Notifications.model_validate_json(item["notifications_json"])
    if "pause_after_failures" in item:
        fields["pause_after_failures"] = int(item["pause_after_failures"])
    if "overlap" in item:
        fields["overlap"] = ConcurrencyPolicy(item["overlap"])
    if item.get("holds_place"):
        fields["holds_place"] = True
    if "claim_pack" in item:
        fields["claim_pack"] = item["claim_pack"]
    for name in _TIME_FIELDS:
        if name in fields:
            fields[name] = times.from_text(fields[name])
    return Run.model_validate(fields)
