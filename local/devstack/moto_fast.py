"""Patches of moto, applied on import by the local stack's moto server (`devstack.moto_app`,
which `make run` and the benchmarks start): each gives moto's own answer at a cost that does
not grow with the tables and queues (sections below: transactions, queries, the service
lookup, SQS receives).

Transactions. moto 5.2.5's DynamoDB TransactWriteItems deep-copies
every table the transaction touches before it starts, so that it can roll back: each
transaction costs time in proportion to the size of those tables (about 30 ms per 1,000 items
here). The scheduler writes a transaction for every job created and every run taken, so on
stock moto a benchmark with thousands of jobs measures that copy, quadratically, and nothing
else. Here a transaction snapshots only the items it touches and, if it fails, puts exactly
those back: the same all-or-nothing outcome, at a cost independent of the table's size (which
is what DynamoDB's transactions cost too).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from moto import backends
from moto.core.utils import unix_time
from moto.dynamodb import models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.sqs.models import Message, SQSBackend

_real_deepcopy = copy.deepcopy
_state = threading.local()


class _CopyModule:
    """Stands in for the `copy` module inside moto.dynamodb.models: during a transaction, the
    whole-table "backup" is the table itself (the rollback below restores items instead)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        if getattr(_state, "in_transaction", False) and isinstance(value, Table):
            return value
        return _real_deepcopy(value, memo)


_original = models.DynamoDBBackend.transact_write_items


def _key(table: Table, attributes: dict[str, Any]) -> tuple[DynamoType, DynamoType | None]:
    hash_value = DynamoType(attributes[table.hash_key_attr])
    range_value = DynamoType(attributes[table.range_key_attr]) if table.range_key_attr else None
    return hash_value, range_value


def _restore(table: Table, hash_value: Any, range_value: Any, item: Any) -> None:
    if range_value is None:
        if item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item
        return
    if item is None:
        table.items.get(hash_value, {}).pop(range_value, None)
    else:
        table.items[hash_value][range_value] = item


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    saved = []
    for entry in transact_items:
        for kind, operation in entry.items():
            table = self.tables.get(operation.get("TableName"))
            attributes = operation.get("Item" if kind == "Put" else "Key") or {}
            try:
                hash_value, range_value = _key(table, attributes)
                current = table.get_item(hash_value, range_value)
            except Exception:  # noqa: S112  # moto itself reports what is wrong with it
                continue
            saved.append((table, hash_value, range_value, _real_deepcopy(current)))
    _state.in_transaction = True
    try:
        _original(self, transact_items)
    except Exception:
        for table, hash_value, range_value, item in reversed(saved):
            _restore(table, hash_value, range_value, item)
        raise
    finally:
        _state.in_transaction = False


models.copy = _CopyModule()  # type: ignore[assignment,attr-defined]
models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


# --------------------------------------------------------------------------- queries
#
# moto 5.2.5 answers every Query by sorting the whole table (`Table.all_items`) and testing each
# item: a query costs in proportion to the table, so listing a user's jobs or a job's runs slows
# down as the tables grow. Here a Query on the table's hash key reads that partition only, and a
# Query on a global secondary index reads the items whose index hash key matches, from an index
# kept up to date on every write (put, update, delete, a transaction's rollback), as DynamoDB's
# own indexes are. The same items then go through moto's own query (sort, filter, paging,
# projection): the same answers, at a cost independent of the table's size.


class _Index:
    """For one table: index name -> index hash value -> {(hash, range): item}."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.entries: dict[str, dict[Any, dict[Any, Any]]] = {}
        self.of_key: dict[Any, list[tuple[str, Any]]] = {}
        self.hash_attrs = {
            index.name: index.schema_key_attrs[0]
            for index in table.global_indexes or []
            if [k["KeyType"] for k in index.schema] in (["HASH"], ["HASH", "RANGE"])
        }
        for item in table.all_items():
            self.add(item)

    def add(self, item: Any) -> None:
        key = (item.hash_key, item.range_key)
        placed = []
        for name, attribute in self.hash_attrs.items():
            value = item.attrs.get(attribute)
            if value is not None:
                self.entries.setdefault(name, {}).setdefault(value, {})[key] = item
                placed.append((name, value))
        if placed:
            self.of_key[key] = placed

    def refresh(self, hash_value: Any, range_value: Any) -> None:
        key = (hash_value, range_value)
        for name, value in self.of_key.pop(key, []):
            bucket = self.entries.get(name, {}).get(value)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del self.entries[name][value]
        try:
            item = self.table.get_item(hash_value, range_value)
        except Exception:  # no such item (or key): nothing to index
            item = None
        if item is not None:
            self.add(item)


def _index_of(table: Table) -> _Index:
    index: _Index | None = table.__dict__.get("_fast_index")
    if index is None:
        index = table.__dict__["_fast_index"] = _Index(table)
    return index


def _refresh(table: Table, hash_value: Any, range_value: Any) -> None:
    if "_fast_index" in table.__dict__:
        table.__dict__["_fast_index"].refresh(hash_value, range_value)


_original_all_items = Table.all_items
_original_query = Table.query
_original_put_item = Table.put_item
_original_delete_item = Table.delete_item
_original_update_item = models.DynamoDBBackend.update_item
_original_restore = _restore


def _all_items(self: Table) -> list[Any]:
    candidates = getattr(_state, "candidates", None)
    if candidates is not None:
        _state.candidates = None
        return candidates  # type: ignore[no-any-return]
    return _original_all_items(self)


def _sorted(items: list[Any]) -> list[Any]:
    # The order moto's all_items gives: by hash key, then range key.
    return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


def _query(self: Table, *args: Any, **kwargs: Any) -> Any:
    # Table.query(hash_key, range_comparison, range_objs, limit, exclusive_start_key,
    # scan_index_forward, projection_expressions, index_name=None, ...): moto's backend passes
    # index_name by position.
    hash_key = args[0] if args else kwargs.get("hash_key")
    index_name = args[7] if len(args) > 7 else kwargs.get("index_name")
    conditions = kwargs.get("hash_key_conditions") or []
    candidates: list[Any] | None = None
    if index_name is None and hash_key is not None:
        partition = self.items.get(hash_key)
        if partition is None:
            candidates = []
        elif self.range_key_attr:
            candidates = _sorted(list(partition.values()))
        else:
            candidates = [partition]
    elif index_name is not None and len(conditions) == 1:
        index = _index_of(self)
        attribute, value = conditions[0]
        if index.hash_attrs.get(index_name) == attribute:
            found = index.entries.get(index_name, {}).get(value, {})
            candidates = _sorted(list(found.values()))
    _state.candidates = candidates
    try:
        return _original_query(self, *args, **kwargs)
    finally:
        _state.candidates = None


def _put_item(self: Table, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return _original_put_item(self, item_attrs, *args, **kwargs)
    finally:
        try:
            hash_value, range_value = _key(self, item_attrs)
        except (KeyError, TypeError):
            pass
        else:
            _refresh(self, hash_value, range_value)


def _delete_item(self: Table, hash_key: Any, range_key: Any) -> Any:
    try:
        return _original_delete_item(self, hash_key, range_key)
    finally:
        _refresh(self, hash_key, range_key)


def _update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return _original_update_item(self, table_name, key, *args, **kwargs)
    finally:
        table = self.tables.get(table_name)
        if table is not None:
            try:
                hash_value, range_value = _key(table, key)
            except (KeyError, TypeError):
                pass
            else:
                _refresh(table, hash_value, range_value)


def _restore_and_index(table: Table, hash_value: Any, range_value: Any, item: Any) -> None:
    _original_restore(table, hash_value, range_value, item)
    _refresh(table, hash_value, range_value)


Table.all_items = _all_items  # type: ignore[method-assign]
Table.query = _query  # type: ignore[method-assign]
Table.put_item = _put_item  # type: ignore[method-assign]
Table.delete_item = _delete_item  # type: ignore[method-assign]
models.DynamoDBBackend.update_item = _update_item  # type: ignore[method-assign]
_restore = _restore_and_index


# --------------------------------------------------------------------------- dispatch
#
# moto server finds the service of every request by listing moto's package directory (an
# os.listdir and ~200 os.path.isdir calls, twice a request): the list never changes while it runs.

_MODULES = tuple(backends.list_of_moto_modules())


def _list_of_moto_modules() -> tuple[str, ...]:
    return _MODULES


backends.list_of_moto_modules = _list_of_moto_modules  # type: ignore[assignment]


# --------------------------------------------------------------------------- SQS receive
#
# moto 5.2.5 checks each message a ReceiveMessage hands out against the queue's retention
# period by computing all the queue's attributes (`get_queue_attributes`), whose message counts
# walk every message in the queue: a receive costs in proportion to the square of the backlog.
# Under the chaos soak's load that was a quarter of moto's CPU (py-spy). Here the check reads
# the retention period alone: the same answer.


def _valid_for_retention(self: SQSBackend, queue_name: str, message: Message) -> bool:
    queue: Any = self.get_queue(queue_name)  # its attributes are set from a dict
    sent: Any = message.sent_timestamp
    return bool(queue.message_retention_period + sent / 1000 > unix_time())


SQSBackend.is_message_valid_based_on_retention_period = _valid_for_retention  # type: ignore[method-assign]
