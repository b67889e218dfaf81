"""A patch of moto's DynamoDB, applied on import by the local stack's moto server
(`devstack.moto_app`, which `make run` and the benchmarks start).

One change. moto 5.2.5's DynamoDB TransactWriteItems deep-copies
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

from moto.dynamodb import models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

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
