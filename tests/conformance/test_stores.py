"""Every event store passes the same suite: write then read, idempotent appends, missing data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from feedrec.data.store import EventStore, LocalEventStore
from feedrec.schemas import EVENT_SCHEMA, ITEM_SCHEMA

STORES: dict[str, Callable[[Path], EventStore]] = {"local": LocalEventStore}
pytestmark = pytest.mark.parametrize("make", STORES.values(), ids=STORES.keys())


def events(ids: list[str], t0: int = 0) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "event_id": ids,
            "user_id": [f"u{i % 3}" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "timestamp": pa.array(
                [datetime.fromtimestamp(1_700_000_000 + t0 + i, UTC) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "type": ["click" if i % 2 else "impression" for i in range(n)],
            "value": [None] * n,
            "position": [i % 10 for i in range(n)],
            "surface": ["home"] * n,
            "request_id": ["r1"] * n,
        },
        schema=EVENT_SCHEMA,
    )


def test_write_then_read(make, tmp_path):
    store = make(tmp_path)
    assert store.count() == 0 and store.scan().num_rows == 0
    assert store.append(events(["a", "b", "c"])).stored == 3
    table = store.scan()
    assert table.schema == EVENT_SCHEMA
    assert table.column("event_id").to_pylist() == ["a", "b", "c"]


def test_appends_are_idempotent_by_event_id(make, tmp_path):
    store = make(tmp_path)
    store.append(events(["a", "b"]))
    result = store.append(events(["b", "c"], t0=10))
    assert (result.stored, result.already_stored, store.count()) == (1, 1, 3)


def test_scan_filters(make, tmp_path):
    store = make(tmp_path)
    store.append(events([f"e{i}" for i in range(10)]))
    assert store.scan(types=["click"]).num_rows == 5
    start = datetime.fromtimestamp(1_700_000_005, UTC)
    assert store.scan(start=start).num_rows == 5
    assert store.scan(end=start, columns=["event_id"]).column_names == ["event_id"]
    with pytest.raises(ValueError, match="unknown event column"):
        store.scan(columns=["nope"])


def test_persists_across_instances(make, tmp_path):
    make(tmp_path).append(events(["a"]))
    assert make(tmp_path).count() == 1


def test_items_upsert_and_missing(make, tmp_path):
    store = make(tmp_path)
    assert store.items().num_rows == 0 and store.users().num_rows == 0
    row = {"item_id": "i1", "created_at": None, "topics": ["a"], "creator_id": "c1", "text": None}
    store.put_items(pa.Table.from_pylist([row], ITEM_SCHEMA))
    store.put_items(pa.Table.from_pylist([row | {"topics": ["b"]}, row | {"item_id": "i2"}], ITEM_SCHEMA))
    items = store.items()
    assert items.column("item_id").to_pylist() == ["i1", "i2"]
    assert items.column("topics").to_pylist() == [["b"], ["a"]]
