"""In-memory fakes of the domain's ports, for unit tests of the services.

Each fake keeps the promises of the adapter it stands for: the DynamoDB repositories' writes are
conditional in exactly the same way (a False, or JobNameConflict, where DynamoDB would refuse the
write), and the writes a real repository makes in one transaction happen here together, under
one lock shared by the three tables (the watcher and the executor call them from threads).

Reads return copies, so a service holds what it read, not the store's state: a change made
after the read is seen by the next read only, as with DynamoDB.

Where they differ, on purpose: reads are always consistent (the runs table's in-flight index is
eventually consistent); a list returns a position only when more items follow (DynamoDB may
return one with an empty page after it); the queue does not drop FIFO duplicates.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from scheduler import keys
from scheduler.errors import JobNameConflict
from scheduler.jobs.job_models import Job, JobFilters, JobStatus, ListPage
from scheduler.pipeline.dispatch_models import DispatchMessage, RunSpec
from scheduler.pipeline.due_runs import is_live
from scheduler.pipeline.watcher import Watcher, WatcherPolicy
from scheduler.quotas.quota_models import MinuteCounter, Places, QuotaCounters, jobs_exceeded
from scheduler.runs.run_models import (
    AttemptRecord,
    ConcurrencyPolicy,
    Run,
    RunReport,
    RunStatus,
    RunTrigger,
)
from scheduler.runs.run_outcomes import RunOutcomes
from scheduler.runs.run_repository import UNFINISHED, ahead_of
from scheduler.schedule import cron
from scheduler.schedule.schedule_item import ScheduleItem
from scheduler.times import epoch, from_epoch, to_text

if TYPE_CHECKING:
    from scheduler.jobs.ports import JobHealth, JobStore, ScriptStore
    from scheduler.pipeline.ports import DispatchBackend, RunQueue
    from scheduler.runs.ports import RunNotifier, RunObjects, RunStore
    from scheduler.schedule.ports import ScheduleStore


# -- the clock ----------------------------------------------------------------------------------


class FakeClock:
    """A `Clock` that only moves when told: `clock()` is `clock.now`."""

    def __init__(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("the clock's time must be timezone-aware")
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, now: datetime) -> datetime:
        self.now = now
        return self.now


# -- the schedule table -------------------------------------------------------------------------


def schedule_slot(item: ScheduleItem) -> str:
    """The item's sort key, as ScheduleRepository.key_of makes it: `<due second>#<job_id>`,
    plus `#<run_key>` for retries and manual runs. (The partition key, an hour bucket and a
    shard, follows from the due second and the job id: the slot alone is unique.)"""
    return keys.schedule_slot(from_epoch(item.due_at), item.identity())


class FakeScheduleStore:
    """The schedule table: items by key, and the watcher's forward-only cursor. It also holds
    the lock that the job and run fakes take for their writes (DynamoDB's transactions)."""

    def __init__(self) -> None:
        self._items: dict[str, ScheduleItem] = {}
        self._cursor: int | None = None
        self._swept: int | None = None
        self._lock = threading.RLock()

    def transaction(self) -> AbstractContextManager[Any]:
        """Hold this while writing several items that a repository writes in one transaction."""
        return self._lock

    # -- ScheduleStore ------------------------------------------------------------------------

    def due(self, start: datetime, end: datetime) -> Iterator[ScheduleItem]:
        # The same key range as the repository's Query: slots BETWEEN `<start>` and `<end>#~`.
        low, high = keys.epoch_text(start), keys.epoch_text(end) + "#~"
        with self._lock:
            found = [
                item.model_copy()
                for slot, item in sorted(self._items.items())
                if low <= slot <= high
            ]
        return iter(found)

    def delete(self, item: ScheduleItem) -> None:
        with self._lock:
            self._items.pop(schedule_slot(item), None)

    def cursor(self) -> int | None:
        with self._lock:
            return self._cursor

    def advance_cursor(self, until: int) -> None:
        with self._lock:
            if self._cursor is None or self._cursor < until:
                self._cursor = until

    def swept(self) -> int | None:
        with self._lock:
            return self._swept

    def advance_swept(self, until: int) -> None:
        with self._lock:
            if self._swept is None or self._swept < until:
                self._swept = until

    # -- what the repositories' transactions write, and what tests look at ------------------

    def put(self, item: ScheduleItem) -> None:
        """Write `item`, replacing one with the same key."""
        with self._lock:
            self._items[schedule_slot(item)] = item.model_copy()

    def contains(self, item: ScheduleItem) -> bool:
        with self._lock:
            return schedule_slot(item) in self._items

    def items(self, job_id: str | None = None) -> list[ScheduleItem]:
        """Every item (of one job, if given), in key order (due time, then job id)."""
        with self._lock:
            return [
                item.model_copy()
                for _, item in sorted(self._items.items())
                if job_id is None or item.job_id == job_id
            ]


# -- the jobs table and the scripts bucket -------------------------------------------------------


class FakeScriptStore:
    """Content-addressed scripts, as S3ScriptStore keeps them."""

    def __init__(self) -> None:
        self.objects: dict[str, str] = {}  # key -> source

    def put(self, source: str) -> tuple[str, str]:
        digest = hashlib.sha256(source.encode()).hexdigest()
        key = keys.script_key(digest)
        self.objects[key] = source
        return digest, key


@dataclass
class _JobRow:
    job: Job
    script_key: str


def _created_key(job: Job) -> str:
    """The owner index's sort key: newest first is descending order of this."""
    return f"{to_text(job.created_at)}#{job.job_id}"


def _occurrence(job: Job, instant: datetime) -> ScheduleItem:
    return ScheduleItem.occurrence(job.job_id, job.user_id, instant, job.jitter_seconds)


class FakeJobStore:
    """The jobs table, with the name guards and the schedule items that JobRepository writes in
    the same transactions. Every change but `create` and `advance` is conditional on the job's
    status and next run being as they were read; `advance` on the job being active."""

    def __init__(self, schedule: FakeScheduleStore, *, jobs_per_owner: int | None = None) -> None:
        self._schedule = schedule
        self._rows: dict[str, _JobRow] = {}
        self._names: dict[tuple[str, str], str] = {}  # (user_id, name) -> job_id
        self._failures: dict[str, int] = {}  # job_id -> runs in a row failed
        self._jobs_per_owner = jobs_per_owner
        self._job_counts: dict[str, int] = {}  # the OWNER# items' job_count

    # -- JobStore ----------------------------------------------------------------------------

    def create(self, job: Job, script_key: str) -> None:
        with self._schedule.transaction():
            if (job.user_id, job.name) in self._names:
                raise JobNameConflict(
                    f"you already have a job named {job.name!r}",
                    [{"field": "name", "problem": "already used by another of your jobs"}],
                )
            if job.job_id in self._rows:
                raise RuntimeError(f"job id {job.job_id!r} exists (the transaction is cancelled)")
            count = self._job_counts.get(job.user_id, 0)
            if self._jobs_per_owner is not None and count >= self._jobs_per_owner:
                raise jobs_exceeded(self._jobs_per_owner)
            self._job_counts[job.user_id] = count + 1
            self._rows[job.job_id] = _JobRow(_as_stored(job), script_key)
            self._names[(job.user_id, job.name)] = job.job_id
            if job.next_run_at is not None:
                self._schedule.put(_occurrence(job, job.next_run_at))

    def get(self, job_id: str) -> Job | None:
        with self._schedule.transaction():
            row = self._rows.get(job_id)
            return row.job.model_copy(deep=True) if row else None

    def get_many(self, job_ids: set[str], *, consistent: bool = False) -> dict[str, Job]:
        with self._schedule.transaction():
            return {
                job_id: self._rows[job_id].job.model_copy(deep=True)
                for job_id in job_ids
                if job_id in self._rows
            }

    def update(self, updated: Job, previous: Job, script_key: str) -> bool:
        with self._schedule.transaction():
            row = self._as_read(previous)
            if row is None:
                return False
            # An update never changes the job's identity, owner, name, status or creation.
            kept = ("job_id", "user_id", "name", "status", "created_at")
            row.job = _as_stored(
                updated.model_copy(update={name: getattr(row.job, name) for name in kept})
            )
            row.script_key = script_key
            moved = updated.next_run_at != previous.next_run_at
            if moved or updated.jitter_seconds != previous.jitter_seconds:
                if previous.next_run_at is not None:
                    self._schedule.delete(_occurrence(previous, previous.next_run_at))
                if updated.next_run_at is not None:
                    self._schedule.put(_occurrence(updated, updated.next_run_at))
            return True

    def pause(self, job: Job, now: datetime, reason: str | None = None) -> bool:
        with self._schedule.transaction():
            row = self._as_read(job)
            if row is None:
                return False
            changes: dict[str, Any] = {
                "status": JobStatus.PAUSED,
                "updated_at": now,
                "next_run_at": None,
            }
            if reason is not None:
                changes["paused_reason"] = reason
            row.job = row.job.model_copy(update=changes)
            if job.next_run_at is not None:
                self._schedule.delete(_occurrence(job, job.next_run_at))
            return True

    def resume(self, job: Job, following: datetime | None, now: datetime) -> bool:
        with self._schedule.transaction():
            row = self._as_read(job)
            if row is None:
                return False
            changes: dict[str, Any] = {
                "status": JobStatus.ACTIVE,
                "updated_at": now,
                "paused_reason": None,
            }
            if following is not None:
                changes["next_run_at"] = following
                self._schedule.put(_occurrence(job, following))
            row.job = _as_stored(row.job.model_copy(update=changes))
            self._failures.pop(job.job_id, None)
            return True

    # -- consecutive failures ----------------------------------------------------------------

    def count_failure(self, job_id: str) -> int | None:
        with self._schedule.transaction():
            if job_id not in self._rows:
                return None
            self._failures[job_id] = self._failures.get(job_id, 0) + 1
            return self._failures[job_id]

    def reset_failures(self, job_id: str) -> None:
        with self._schedule.transaction():
            self._failures.pop(job_id, None)

    def pause_for_failures(self, job_id: str, reason: str, now: datetime) -> bool:
        job = self.get(job_id)
        if job is None or job.status is not JobStatus.ACTIVE:
            return False
        return self.pause(job, now, reason)

    def delete(self, job: Job) -> bool:
        with self._schedule.transaction():
            if self._as_read(job) is None:
                return False
            del self._rows[job.job_id]
            self._names.pop((job.user_id, job.name), None)
            self._job_counts[job.user_id] = self._job_counts.get(job.user_id, 0) - 1
            if job.next_run_at is not None:
                self._schedule.delete(_occurrence(job, job.next_run_at))
            return True

    def advance(
        self, job: Job, current: ScheduleItem, following: datetime | None
    ) -> ScheduleItem | None:
        # JobRepository.advance: the next item first, then the job (ACTIVE, and showing the
        # taken occurrence or already the next); the taken item stays (it expires). Plain
        # writes: `put_next` and `move_job` are the two, for tests that crash between them.
        item = None if following is None else _occurrence(job, following)
        if item is not None:
            self.put_next(item)
        return item if self.move_job(job, current, following) else None

    def upcoming(self, job_id: str | None = None) -> list[ScheduleItem]:
        """The schedule items still to be taken (of one job, if given): `schedule.items()`
        without taken occurrences, which stay until they expire (due_runs.is_live)."""
        with self._schedule.transaction():
            return [
                item
                for item in self._schedule.items(job_id)
                if is_live(item, self._rows[item.job_id].job if item.job_id in self._rows else None)
            ]

    def put_next(self, item: ScheduleItem) -> None:
        self._schedule.put(item)

    def move_job(self, job: Job, current: ScheduleItem, following: datetime | None) -> bool:
        with self._schedule.transaction():
            row = self._rows.get(job.job_id)
            shows = row is not None and row.job.next_run_at in (
                from_epoch(current.scheduled_at),
                following,
            )
            if row is None or row.job.status is not JobStatus.ACTIVE or not shows:
                return False  # paused, gone, or advanced past this item by another taker
            row.job = _as_stored(row.job.model_copy(update={"next_run_at": following}))
            return True

    def list_for_owner(
        self, user_id: str, filters: JobFilters, limit: int, start: dict[str, str] | None
    ) -> ListPage:
        with self._schedule.transaction():
            mine = [row.job for row in self._rows.values() if row.job.user_id == user_id]
        mine.sort(key=_created_key, reverse=True)
        if start is not None:
            mine = [job for job in mine if _created_key(job) < start["created_key"]]
        matching = [job.model_copy(deep=True) for job in mine if _matches(job, filters)]
        page = matching[:limit]
        if len(matching) <= limit:
            return ListPage(page, None)
        last = page[-1]
        position = {
            "pk": keys.job_pk(last.job_id),
            "user_id": last.user_id,
            "created_key": _created_key(last),
        }
        return ListPage(page, position)

    # -- for tests ---------------------------------------------------------------------------

    def script_key_of(self, job_id: str) -> str | None:
        """The script key stored with the job (what its new runs snapshot)."""
        with self._schedule.transaction():
            row = self._rows.get(job_id)
            return row.script_key if row else None

    def all(self) -> list[Job]:
        with self._schedule.transaction():
            return [row.job.model_copy(deep=True) for row in self._rows.values()]

    # -- plumbing ----------------------------------------------------------------------------

    def _as_read(self, job: Job) -> _JobRow | None:
        """The job's row if it still has the status and next run `job` was read with (the
        repository's condition), else None."""
        row = self._rows.get(job.job_id)
        if row is None or row.job.status is not job.status:
            return None
        if row.job.next_run_at != job.next_run_at:  # instants: the stored text is UTC
            return None
        return row


def _as_stored(job: Job) -> Job:
    """The job as the repository reads it back: times in UTC, the next run in its own zone."""
    zone = cron.zone(job.timezone)
    return job.model_copy(
        deep=True,
        update={
            "next_run_at": job.next_run_at.astimezone(zone) if job.next_run_at else None,
            "created_at": job.created_at.astimezone(UTC),
            "updated_at": job.updated_at.astimezone(UTC),
        },
    )


def _matches(job: Job, filters: JobFilters) -> bool:
    """JobRepository's key condition and filter expression, on one job."""
    created = _created_key(job)
    next_run = to_text(job.next_run_at) if job.next_run_at else None
    checks = [
        filters.status is None or job.status is filters.status,
        filters.name is None or job.name.startswith(filters.name),
        filters.created_after is None or created > to_text(filters.created_after) + "#~",
        filters.created_before is None or created < to_text(filters.created_before) + "#",
        filters.next_run_after is None
        or (next_run is not None and next_run > to_text(filters.next_run_after)),
        filters.next_run_before is None
        or (next_run is not None and next_run < to_text(filters.next_run_before)),
    ]
    return all(checks)


# -- the runs table and the run objects ---------------------------------------------------------


@dataclass
class StoredRun:
    """A run's item in the runs table: the run, its snapshot of the job's script and
    parameters, and the attributes the Run model does not show."""

    run: Run
    script_key: str
    parameters: dict[str, Any]
    claim_id: str | None = None
    claim_until: int | None = None
    deadline: int | None = None  # set while the run is in the in-flight index
    expires_at: int | None = None  # the table's TTL, set when the run finishes
    notes: set[str] = field(default_factory=set)  # what was done once for it (note_once)

    def shown(self) -> Run:
        """The run as RunRepository reads it (its deadline and claim included)."""
        return self.run.model_copy(
            deep=True, update={"deadline": self.deadline, "claim_id": self.claim_id}
        )


def dies_once(store: object, method: str) -> None:
    """`store.<method>` raises TimeoutError on its first call, as a function killed right
    there would stop, and works from the second call on."""
    real = getattr(store, method)
    calls = {"n": 0}

    def once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError(f"died in {method}")
        return real(*args, **kwargs)

    setattr(store, method, once)


# -- quota counters (items of the jobs table) ----------------------------------------------------


class FakeQuotaCounters:
    """Per-minute counters, as QuotaRepository keeps them: a take that would pass the limit
    counts nothing and returns False. `counts` is what tests look at."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}  # counter pk -> count
        self.writes: list[tuple[str, int]] = []  # every change asked of a counter: (pk, amount)
        self.running: dict[str, int] = {}  # owner -> runs holding a concurrent_runs place
        self._lock = threading.Lock()

    def take_running(self, user_id: str, amount: int, limit: int) -> bool:
        with self._lock:
            count = self.running.get(user_id, 0)
            if count + amount > limit:
                return False
            self.running[user_id] = count + amount
            return True

    def give_back(self, user_id: str, amount: int = 1) -> None:
        with self._lock:
            self.running[user_id] = self.running.get(user_id, 0) - amount

    def take(self, counter: MinuteCounter, amount: int = 1) -> bool:
        with self._lock:
            self.writes.append((counter.pk, amount))
            count = self.counts.get(counter.pk, 0)
            if count + amount > counter.limit:
                return False
            self.counts[counter.pk] = count + amount
            return True

    def take_up_to(self, counter: MinuteCounter, amount: int) -> int:
        """As QuotaRepository's: all of `amount`, or what is left of the limit."""
        with self._lock:
            self.writes.append((counter.pk, amount))
            count = self.counts.get(counter.pk, 0)
            got = max(0, min(amount, counter.limit - count))
            if got:
                self.counts[counter.pk] = count + got
            return got

    def uncount(self, counter: MinuteCounter, amount: int) -> None:
        with self._lock:
            self.writes.append((counter.pk, -amount))
            if counter.pk in self.counts:  # as the repository's: an expired counter stays gone
                self.counts[counter.pk] -= amount


class FakePlaces:
    """concurrent_runs places per pack, as PlaceRepository keeps them: the pack's place item in
    the schedule table and the owner's count change together (one transaction), the item put
    only where none is and deleted only where it is."""

    def __init__(self, schedule: FakeScheduleStore, counters: FakeQuotaCounters) -> None:
        self._schedule = schedule
        self._counters = counters

    def take(self, place: ScheduleItem, limit: int) -> bool:
        assert place.count is not None
        with self._schedule.transaction():
            if self._schedule.contains(place):
                return False
            if not self._counters.take_running(place.user_id, place.count, limit):
                return False
            self._schedule.put(place)
            return True

    def give_back(self, place: ScheduleItem) -> bool:
        assert place.count is not None
        with self._schedule.transaction():
            if not self._schedule.contains(place):
                return False
            self._schedule.delete(place)
            self._counters.give_back(place.user_id, place.count)
            return True

    def move(self, place: ScheduleItem, due_at: int) -> ScheduleItem | None:
        moved = place.model_copy(update={"due_at": due_at, "scheduled_at": due_at})
        with self._schedule.transaction():
            if not self._schedule.contains(place) or self._schedule.contains(moved):
                return None
            self._schedule.delete(place)
            self._schedule.put(moved)
            return moved


class FakeRunStore:
    """The runs table. Every write is conditional on the run's attempt and status, as in
    RunRepository; `retry` and `create_with_schedule_item` also write a schedule item."""

    def __init__(
        self,
        schedule: FakeScheduleStore,
        *,
        retention_days: int = 90,
        counters: FakeQuotaCounters | None = None,
    ) -> None:
        self.counters = counters  # the quota counters of the jobs table (places, runs_per_minute)
        self._schedule = schedule
        self._retention_seconds = retention_days * 86400
        self._rows: dict[tuple[str, str], StoredRun] = {}

    # -- reads -------------------------------------------------------------------------------

    def get(self, job_id: str, key: str) -> Run | None:
        with self._schedule.transaction():
            row = self._rows.get((job_id, key))
            return row.shown() if row else None

    def get_stored(self, job_id: str, key: str) -> Run | None:
        # Dispatch records are kept on the runs here (record_dispatch): the same as get.
        return self.get(job_id, key)

    def get_with_script(self, job_id: str, key: str) -> tuple[Run, str, dict[str, Any]] | None:
        run = self.get(job_id, key)
        return None if run is None else (run, *self.script_of(job_id, key))

    def script_of(self, job_id: str, key: str) -> tuple[str, dict[str, Any]]:
        """(For tests) the script key and parameters snapshotted into the run."""
        with self._schedule.transaction():
            row = self._rows[(job_id, key)]
            return row.script_key, json.loads(json.dumps(row.parameters))

    def list_for_job(
        self, job_id: str, limit: int, start: dict[str, str] | None
    ) -> tuple[list[Run], dict[str, str] | None]:
        runs = self._newest_first(job_id)
        if start is not None:
            runs = [run for run in runs if run.key < start["key"]]
        page = runs[:limit]
        more = len(runs) > limit
        return page, ({"job_id": job_id, "key": page[-1].key} if more else None)

    def last_run(self, job_id: str, now: datetime) -> Run | None:
        return next(
            (run for run in self._newest_first(job_id) if run.execution_time <= epoch(now) + 1),
            None,
        )

    def overdue(self, now: datetime, since: int | None = None) -> list[tuple[str, str]]:
        low = -1 if since is None else since
        with self._schedule.transaction():
            return [
                (row.run.job_id, row.run.key)
                for row in self._rows.values()
                if row.deadline is not None and low < row.deadline < epoch(now)
            ]

    # -- writes ------------------------------------------------------------------------------

    def create(
        self,
        run: Run,
        script_key: str,
        parameters: dict[str, Any],
        *,
        items: Sequence[ScheduleItem] = (),
        deadline: int | None = None,
    ) -> bool:
        with self._schedule.transaction():
            if (run.job_id, run.key) in self._rows:
                return False
            self._rows[(run.job_id, run.key)] = StoredRun(
                run.model_copy(deep=True, update={"deadline": None, "claim_id": None}),
                script_key,
                json.loads(json.dumps(parameters)),
                deadline=deadline,
            )
            for item in items:
                self._schedule.put(item)
            return True

    def create_with_schedule_item(
        self, run: Run, script_key: str, parameters: dict[str, Any], item: ScheduleItem
    ) -> bool:
        return self.create(run, script_key, parameters, items=[item])

    def mark_queued(self, run: Run, now: datetime, deadline: int) -> bool:
        def apply(row: StoredRun) -> None:
            row.run = row.run.model_copy(
                update={"status": RunStatus.QUEUED, "queued_at": now, "updated_at": now}
            )
            row.deadline = deadline

        sendable = (RunStatus.PENDING, RunStatus.QUEUED)
        return self._change(run, lambda row: row.run.status in sendable, apply)

    def claim(
        self, run: Run, claim_id: str, now: datetime, claim_seconds: int, pack_id: str = ""
    ) -> bool:
        def claimable(row: StoredRun) -> bool:
            if row.run.status in (RunStatus.PENDING, RunStatus.QUEUED):
                return True
            # An abandoned claim (its executor died before dispatching) once it has expired.
            return (
                row.run.status is RunStatus.DISPATCHING
                and row.claim_until is not None
                and row.claim_until < epoch(now)
            )

        def apply(row: StoredRun) -> None:
            pack = row.run.claim_pack or pack_id or f"{row.run.key}-{row.run.attempt}"
            second = row.run.claim_second or row.run.not_before
            row.run = row.run.model_copy(
                update={
                    "status": RunStatus.DISPATCHING,
                    "updated_at": now,
                    "claim_pack": pack,
                    "claim_second": second,
                }
            )
            row.claim_id = claim_id
            row.claim_until = epoch(now) + claim_seconds

        return self._change(run, claimable, apply)

    def release(self, run: Run, claim_id: str, now: datetime) -> None:
        def apply(row: StoredRun) -> None:
            row.run = row.run.model_copy(update={"status": RunStatus.QUEUED, "updated_at": now})
            row.claim_id = row.claim_until = None

        self._change(run, _claimed_by(claim_id), apply)

    def mark_dispatched(
        self, run: Run, claim_id: str, task_id: str, now: datetime, deadline: int | None
    ) -> bool:
        def apply(row: StoredRun) -> None:
            row.run = row.run.model_copy(
                update={
                    "status": RunStatus.DISPATCHED,
                    "task_id": task_id,
                    "dispatched_at": now,
                    "updated_at": now,
                }
            )
            if deadline is not None:  # None: the deadline it was queued with stays
                row.deadline = deadline

        return self._change(run, _claimed_by(claim_id), apply)

    def record_dispatch(self, claim_id: str, task_id: str, now: datetime) -> None:
        """As RunRepository reads its runs after it: those claimed with `claim_id` DISPATCHED."""
        with self._schedule.transaction():
            for row in self._rows.values():
                if _claimed_by(claim_id)(row):
                    row.run = row.run.model_copy(
                        update={
                            "status": RunStatus.DISPATCHED,
                            "task_id": task_id,
                            "dispatched_at": now,
                        }
                    )

    def mark_waiting(self, run: Run, now: datetime, deadline: int) -> bool:
        waitable = (RunStatus.QUEUED, RunStatus.DISPATCHING, RunStatus.DISPATCHED)

        def apply(row: StoredRun) -> None:
            row.run = row.run.model_copy(update={"status": RunStatus.WAITING, "updated_at": now})
            row.deadline = max(deadline, ahead_of(now))

        return self._change(run, lambda row: row.run.status in waitable, apply)

    def mark_running(self, run: Run, report: RunReport, now: datetime, deadline: int) -> bool:
        startable = (
            RunStatus.QUEUED,
            RunStatus.DISPATCHING,
            RunStatus.DISPATCHED,
            RunStatus.WAITING,
        )

        def apply(row: StoredRun) -> None:
            row.run = row.run.model_copy(
                update={
                    "status": RunStatus.RUNNING,
                    "started_at": report.started_at or now,
                    "start_lag_ms": report.start_lag_ms or 0,
                    "updated_at": now,
                }
            )
            row.deadline = max(deadline, ahead_of(now))

        return self._change(run, lambda row: row.run.status in startable, apply)

    def finish(self, run: Run, report: RunReport, output_key: str | None, now: datetime) -> bool:
        assert report.status is not None

        def apply(row: StoredRun) -> None:
            changes: dict[str, Any] = {
                "status": report.status,
                "updated_at": now,
                "finished_at": report.finished_at or now,
            }
            optional = {
                "exit_code": report.exit_code,
                "duration_ms": report.duration_ms,
                "output_tail": report.output_tail,
                "output_bytes": report.output_bytes,
                "output_truncated": report.output_truncated,
                "output_key": output_key,
                "error": report.error,
                "started_at": report.started_at,
                "start_lag_ms": report.start_lag_ms,
            }
            changes |= {name: value for name, value in optional.items() if value is not None}
            row.run = row.run.model_copy(update=changes)
            row.expires_at = epoch(now) + self._retention_seconds
            row.claim_until = None  # the in-flight entry (deadline) and the claim_id stay

        return self._end(run, lambda row: row.run.status in UNFINISHED, apply)

    def cancel(self, run: Run, reason: str, now: datetime) -> bool:
        def apply(row: StoredRun) -> None:
            self._close(row, RunStatus.CANCELLED, reason, now)
            row.deadline = row.claim_until = None  # claim_id stays, as in RunRepository.cancel

        def cancellable(row: StoredRun) -> bool:
            return not row.run.status.terminal and row.run.claim_pack == run.claim_pack

        return self._end(run, cancellable, apply)

    def record_cancelled(
        self, run: Run, report: RunReport, output_key: str | None, now: datetime
    ) -> bool:
        def apply(row: StoredRun) -> None:
            optional = {
                "exit_code": report.exit_code,
                "duration_ms": report.duration_ms,
                "output_tail": report.output_tail,
                "output_bytes": report.output_bytes,
                "output_truncated": report.output_truncated,
                "output_key": output_key,
                "started_at": report.started_at,
                "start_lag_ms": report.start_lag_ms,
            }
            changes = {name: value for name, value in optional.items() if value is not None}
            row.run = row.run.model_copy(update=changes | {"updated_at": now})

        def once(row: StoredRun) -> bool:
            return row.run.status is RunStatus.CANCELLED and row.run.duration_ms is None

        return self._change(run, once, apply)

    def note_once(self, run: Run, note: str) -> bool:
        with self._schedule.transaction():
            row = self._rows.get((run.job_id, run.key))
            if row is None or note in row.notes:
                return False
            row.notes.add(note)
            return True

    def retry(self, run: Run, failed: AttemptRecord, not_before: int, now: datetime) -> bool:
        def apply(row: StoredRun) -> None:
            cleared = dict.fromkeys(_ATTEMPT_FIELDS)
            row.run = row.run.model_copy(
                update=cleared
                | {
                    "status": RunStatus.PENDING,
                    "attempt": row.run.attempt + 1,
                    "not_before": not_before,
                    "updated_at": now,
                    "attempts": [*row.run.attempts, failed.model_copy()],
                }
            )
            row.deadline = row.claim_id = row.claim_until = None
            self._schedule.put(
                ScheduleItem(
                    job_id=run.job_id,
                    user_id=run.user_id,
                    scheduled_at=run.execution_time,
                    due_at=not_before,
                    trigger=RunTrigger.RETRY,
                    run_key=run.key,
                )
            )

        return self._end(run, lambda row: row.run.status in UNFINISHED, apply)

    def skip(self, run: Run, reason: str, now: datetime) -> bool:
        def apply(row: StoredRun) -> None:
            self._close(row, RunStatus.SKIPPED, reason, now)
            row.deadline = row.claim_id = row.claim_until = None

        return self._end(run, lambda row: row.run.status is run.status, apply)

    def _close(self, row: StoredRun, status: RunStatus, reason: str, now: datetime) -> None:
        """The run ended without a report of its own (cancelled, skipped): history from now."""
        changes = {"status": status, "updated_at": now, "finished_at": now, "error": reason}
        row.run = row.run.model_copy(update=changes)
        row.expires_at = epoch(now) + self._retention_seconds

    # -- for tests ---------------------------------------------------------------------------

    def stored(self, job_id: str, key: str) -> StoredRun | None:
        """A copy of the run's whole item (claim, deadline and expiry included)."""
        with self._schedule.transaction():
            row = self._rows.get((job_id, key))
            if row is None:
                return None
            return replace(
                row,
                run=row.run.model_copy(deep=True),
                parameters=json.loads(json.dumps(row.parameters)),
            )

    def all(self) -> list[Run]:
        """Every run, in key order (job id, then scheduled second)."""
        with self._schedule.transaction():
            return [self._rows[k].shown() for k in sorted(self._rows)]

    # -- plumbing ----------------------------------------------------------------------------

    def _newest_first(self, job_id: str) -> list[Run]:
        with self._schedule.transaction():
            runs = [row.shown() for row in self._rows.values()]
        return sorted((r for r in runs if r.job_id == job_id), key=lambda r: r.key, reverse=True)

    def _end(
        self,
        run: Run,
        condition: Callable[[StoredRun], bool],
        apply: Callable[[StoredRun], None],
    ) -> bool:
        """A write that ends the run's attempt, as RunRepository's: it gives back the place the
        run holds (on condition that the stored run holds it too), and a run read without one
        is written only if it still has none."""

        def holding_as_read(row: StoredRun) -> bool:
            return bool(row.run.holds_place) == bool(run.holds_place) and condition(row)

        def give_back(row: StoredRun) -> None:
            apply(row)
            if run.holds_place:
                row.run = row.run.model_copy(update={"holds_place": None})
                assert self.counters is not None
                self.counters.give_back(run.user_id)

        return self._change(run, holding_as_read, give_back)

    # -- concurrent runs per owner -----------------------------------------------------------

    def defer(self, run: Run, claim_id: str, not_before: int, reason: str, now: datetime) -> bool:
        def apply(row: StoredRun) -> None:
            row.run = row.run.model_copy(
                update={
                    "status": RunStatus.PENDING,
                    "not_before": not_before,
                    "deferred": reason,
                    "updated_at": now,
                    "queued_at": None,
                }
            )
            row.deadline = row.claim_id = row.claim_until = None
            self._schedule.put(
                ScheduleItem(
                    job_id=run.job_id,
                    user_id=run.user_id,
                    scheduled_at=run.execution_time,
                    due_at=not_before,
                    trigger=RunTrigger.RETRY,
                    run_key=run.key,
                )
            )

        def claimed_without_place(row: StoredRun) -> bool:
            return _claimed_by(claim_id)(row) and not row.run.holds_place

        return self._change(run, claimed_without_place, apply)

    def _change(
        self,
        run: Run,
        condition: Callable[[StoredRun], bool],
        apply: Callable[[StoredRun], None],
    ) -> bool:
        """Apply a write if the stored run is at `run.attempt` and meets `condition`."""
        with self._schedule.transaction():
            row = self._rows.get((run.job_id, run.key))
            if row is None or row.run.attempt != run.attempt or not condition(row):
                return False
            apply(row)
            return True


def _claimed_by(claim_id: str) -> Callable[[StoredRun], bool]:
    def condition(row: StoredRun) -> bool:
        return row.run.status is RunStatus.DISPATCHING and row.claim_id == claim_id

    return condition


# What a retry clears: the finished attempt's traces (RunRepository.retry's REMOVE list).
_ATTEMPT_FIELDS = (
    "task_id",
    "claim_pack",
    "claim_second",
    "queued_at",
    "dispatched_at",
    "started_at",
    "start_lag_ms",
    "finished_at",
    "exit_code",
    "output_tail",
    "output_bytes",
    "output_truncated",
    "output_key",
    "duration_ms",
    "error",
)


class FakeRunObjects:
    """The run objects in the scripts bucket: report bodies by key, and presigned links."""

    def __init__(self) -> None:
        self.objects: dict[str, str] = {}  # key -> body
        self.links: list[tuple[str, int]] = []  # (key, seconds) of every link given out

    def put_report(self, report: RunReport, kind: str) -> str:
        """Store `report` where the runner PUTs it (`kind`: started or finished); its key."""
        key = keys.report_key(report.job_id, report.run_key, report.attempt, kind)
        self.objects[key] = report.model_dump_json(exclude_none=True)
        return key

    def put_batch(self, pack_id: str, second: int, index: int, reports: list[RunReport]) -> str:
        """A batch of finished reports of the runs of one pack claim, as a runner PUTs it."""
        key = keys.batch_report_key(pack_id, second, index)
        entries = [report.model_dump(mode="json", exclude_none=True) for report in reports]
        self.objects[key] = json.dumps({"reports": entries})
        return key

    def put_claim(self, run: Run) -> str:
        """The run's own claim, as a runner PUTs it just before the script starts; its key."""
        key = keys.claim_key(run.job_id, run.key, run.attempt)
        self.objects[key] = json.dumps({"job_id": run.job_id, "run_key": run.key})
        return key

    # -- RunObjects --------------------------------------------------------------------------

    def report(self, key: str) -> RunReport | None:
        body = self.objects.get(key)
        if body is None:
            return None
        try:
            return RunReport.model_validate_json(body)
        except ValidationError:
            return None

    def batch_reports(self, key: str) -> list[RunReport]:
        body = self.objects.get(key)
        entries = json.loads(body)["reports"] if body is not None else []
        return [RunReport.model_validate(entry) for entry in entries]

    def finished_report(self, run: Run) -> RunReport | None:
        own = self.report(keys.report_key(run.job_id, run.key, run.attempt, "finished"))
        if own is not None or run.claim_pack is None or run.claim_second is None:
            return own
        index = 0
        while (
            key := keys.batch_report_key(run.claim_pack, run.claim_second, index)
        ) in self.objects:
            for report in self.batch_reports(key):
                if (report.job_id, report.run_key, report.attempt) == (
                    run.job_id,
                    run.key,
                    run.attempt,
                ):
                    return report
            index += 1
        return None

    def link(self, key: str, seconds: int) -> str:
        self.links.append((key, seconds))
        return f"https://objects.test/{key}?expires_in={seconds}"

    def request_cancel(self, run: Run, reason: str) -> None:
        body = json.dumps({"cancelled": True, "reason": reason})
        self.objects[keys.cancel_key(run.job_id, run.key, run.attempt)] = body
        if run.claim_pack is not None and run.claim_second is not None:
            self.objects[keys.pack_cancel_key(run.claim_pack, run.claim_second)] = "{}"

    def cancel_requested(self, job_id: str, run_key: str, attempt: int) -> bool:
        return keys.cancel_key(job_id, run_key, attempt) in self.objects

    def attempt_claimed(self, run: Run) -> bool:
        if keys.claim_key(run.job_id, run.key, run.attempt) in self.objects:
            return True
        if run.claim_pack is None or run.claim_second is None:
            return True
        body = self.objects.get(keys.pack_claim_key(run.claim_pack, run.claim_second))
        if body is None:
            return False
        return keys.run_ref((run.job_id, run.key, run.attempt)) in json.loads(body).get("runs", [])

    def release_lock(self, job_id: str, run_key: str, attempt: int) -> None:
        body = self.objects.get(keys.lock_key(job_id))
        if body is not None and json.loads(body).get("run_key") == run_key:
            del self.objects[keys.lock_key(job_id)]


# -- the dispatch queue and the dispatch backend -----------------------------------------------


class FakeRunQueue:
    """The dispatch queue: records every message, accepts them unless told to refuse."""

    def __init__(self) -> None:
        self.received: list[DispatchMessage] = []  # every message send() was given
        self.accepted: list[DispatchMessage] = []  # those the queue took
        self._refuses: Callable[[DispatchMessage], bool] | None = None
        self._error: Exception | None = None

    def refuse(self, which: Callable[[DispatchMessage], bool] | None = None) -> None:
        """From now on, refuse every message (or those `which` picks): send() says False."""
        self._refuses = which or (lambda _: True)

    def fail_with(self, error: Exception | None) -> None:
        """From now on, send() raises `error` (None: it works again)."""
        self._error = error

    def accept(self) -> None:
        """Accept every message again."""
        self._refuses = None
        self._error = None

    def send(self, messages: list[DispatchMessage]) -> list[bool]:
        if self._error is not None:
            raise self._error
        results = []
        for message in messages:
            self.received.append(message.model_copy(deep=True))
            ok = self._refuses is None or not self._refuses(message)
            if ok:
                self.accepted.append(message.model_copy(deep=True))
            results.append(ok)
        return results

    def accepted_runs(self) -> list[tuple[str, int]]:
        """(run key, attempt) of every run in an accepted message, in order."""
        return [(run.key, run.attempt) for message in self.accepted for run in message.runs]


class FakeDispatchBackend:
    """Starts "tasks" task-1, task-2...: records each dispatch, or raises when told to."""

    def __init__(self) -> None:
        self.dispatched: list[tuple[str, list[RunSpec]]] = []  # (pack_id, runs) per task
        self.places: list[str | None] = []  # the place each task carries (its stop gives back)
        self._error: Exception | None = None
        self._lock = threading.Lock()

    def fail_with(self, error: Exception | None) -> None:
        """From now on, dispatch() raises `error` (None: it works again)."""
        self._error = error

    def dispatch(self, pack_id: str, runs: list[RunSpec], place: str | None = None) -> str:
        if self._error is not None:
            raise self._error
        with self._lock:
            self.dispatched.append((pack_id, [run.model_copy(deep=True) for run in runs]))
            self.places.append(place)
            return f"task-{len(self.dispatched)}"


# -- builders -----------------------------------------------------------------------------------

SCRIPT = "print('hello')\n"


def make_job(
    *,
    now: datetime,
    user_id: str = "alice",
    name: str = "job",
    schedule: str = "0 * * * *",
    timezone: str = "UTC",
    status: JobStatus = JobStatus.ACTIVE,
    max_attempts: int = 3,
    timeout_seconds: int = 300,
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
    parameters: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> Job:
    """A job as JobService creates it at `now` (next run after `now` if active)."""
    next_run = (
        cron.next_occurrence(schedule, timezone, now).astimezone(cron.zone(timezone))
        if status is JobStatus.ACTIVE
        else None
    )
    return Job(
        job_id=job_id or hashlib.sha256(f"{user_id}/{name}".encode()).hexdigest()[:32],
        user_id=user_id,
        name=name,
        schedule=schedule,
        timezone=timezone,
        parameters=parameters if parameters is not None else {"name": name},
        status=status,
        next_run_at=next_run,
        script_sha256=hashlib.sha256(SCRIPT.encode()).hexdigest(),
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        concurrency_policy=concurrency_policy,
        created_at=now,
        updated_at=now,
    )


def add_job(jobs: FakeJobStore, **fields: Any) -> Job:
    """make_job(**fields), stored (with its first schedule item) as JobService.create does."""
    job = make_job(**fields)
    jobs.create(job, keys.script_key(job.script_sha256))
    return job


def watcher_over(
    jobs: FakeJobStore,
    schedule: FakeScheduleStore,
    runs: FakeRunStore,
    clock: FakeClock,
    *,
    queue: FakeRunQueue | None = None,
    notifier: RunNotifier | None = None,
    places: FakePlaces | None = None,
    **policy: Any,
) -> Watcher:
    """A watcher over these stores, with the local stack's defaults (90 s look-ahead, 5 min
    look-back, 30 min windows) and a dispatch grace of a day: no executor takes the queued runs
    in these tests, so the deadline sweep stays off them. `policy` overrides any of it."""
    outcomes = RunOutcomes(
        runs,
        FakeRunObjects(),
        retry_base_seconds=30,
        running_grace_seconds=60,
        clock=clock,
        notifier=notifier,
        jobs=jobs,
        places=places,
    )
    settings: dict[str, Any] = {
        "lookahead_seconds": 90,
        "overlap_seconds": 300,
        "max_window_seconds": 1800,
        "pack_window_seconds": 5,
        "max_runs_per_task": 10,
        "dispatch_grace_seconds": 86400,
    }
    return Watcher(
        jobs,
        schedule,
        runs,
        queue or FakeRunQueue(),
        outcomes,
        WatcherPolicy(**settings | policy),
        clock,
        counters=runs.counters,
        places=places,
    )


if TYPE_CHECKING:  # mypy: the fakes are what the services take
    _schedule: ScheduleStore = FakeScheduleStore()
    _jobs: JobStore = FakeJobStore(FakeScheduleStore())
    _scripts: ScriptStore = FakeScriptStore()
    _runs: RunStore = FakeRunStore(FakeScheduleStore())
    _health: JobHealth = FakeJobStore(FakeScheduleStore())
    _objects: RunObjects = FakeRunObjects()
    _queue: RunQueue = FakeRunQueue()
    _backend: DispatchBackend = FakeDispatchBackend()
    _places: Places = FakePlaces(FakeScheduleStore(), FakeQuotaCounters())
    _counters: QuotaCounters = FakeQuotaCounters()
    _clock: Callable[[], datetime] = FakeClock(datetime.now(UTC))
