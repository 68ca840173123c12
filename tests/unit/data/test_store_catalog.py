"""The event store's catalog: O(batch) appends, compaction, read_since, and recovery after crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedrec.data import store as store_module
from feedrec.data.store import LocalEventStore
from feedrec.schemas import EVENT_SCHEMA
from tests.conformance.test_stores import events


def _ids(store: LocalEventStore) -> list[str]:
    return store.scan(columns=["event_id"]).column("event_id").to_pylist()


def _batches(store: LocalEventStore, n: int, size: int = 10, prefix: str = "e") -> list[str]:
    ids: list[str] = []
    for b in range(n):
        batch = [f"{prefix}{b}-{i}" for i in range(size)]
        store.append(events(batch, t0=b * size))
        ids += batch
    return ids


def test_an_append_reads_no_stored_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Deduplication asks the id index, not the parts: appends work with every part unreadable."""
    store = LocalEventStore(tmp_path)
    _batches(store, 20)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an append read a stored part")

    monkeypatch.setattr(store_module.pq, "read_table", refuse)
    monkeypatch.setattr(store_module.duckdb, "connect", refuse)
    result = store.append(events(["e0-1", "new-1", "new-1", "new-2"], t0=1000))
    assert (result.stored, result.already_stored) == (2, 2)


def test_a_repeated_id_within_one_append_is_stored_once(tmp_path: Path):
    store = LocalEventStore(tmp_path)
    assert store.append(events(["a", "b", "a"])).stored == 2
    assert sorted(_ids(store)) == ["a", "b"]


def test_compaction_bounds_the_parts_and_keeps_every_event(tmp_path: Path):
    store = LocalEventStore(tmp_path)
    ids = _batches(store, 120)
    before = store.scan()
    merged = 0
    while (n := store.compact(fanout=10, base_rows=100)) > 0:
        merged += n
    assert merged >= 110 and len(store.part_names()) <= 20
    after = store.scan()
    assert after.equals(before) and sorted(_ids(store)) == sorted(ids)
    assert store.count() == len(ids)
    assert store.append(events(["e5-5"])).stored == 0  # the index still knows merged ids


def test_read_since_follows_appends_across_compactions(tmp_path: Path):
    store = LocalEventStore(tmp_path)
    _batches(store, 15, prefix="a")
    position = store.position()
    mine = store.append(events(["own-1", "own-2"], t0=5000)).position
    theirs = _batches(LocalEventStore(tmp_path), 12, prefix="b")  # another process
    while store.compact(fanout=4, base_rows=100):
        pass
    table, position2 = store.read_since(position, skip=[mine])
    assert sorted(table.column("event_id").to_pylist()) == sorted(theirs)
    assert position2 == store.position()
    assert store.read_since(position2)[0].num_rows == 0


def test_an_append_returns_the_rows_read_since_reads_back(tmp_path: Path):
    """``AppendResult.written`` is what the store holds between ``since`` and ``position``, in
    read_since's order: a repeated id's first row, no id stored before, by time (what a server
    folds its own append from, without reading it back)."""
    store = LocalEventStore(tmp_path)
    store.append(events(["old"]))
    batch = events(["n0", "n1", "old", "n1", "n2"], t0=100)
    batch = batch.set_column(3, "timestamp", batch.column("timestamp").take([4, 3, 2, 1, 0]))  # late first
    result = store.append(batch)
    assert result.since == result.position - 1 == 1 and result.stored == 3  # type: ignore[operator]
    assert result.written is not None and result.written.column("event_id").to_pylist() == ["n2", "n1", "n0"]
    assert result.written.column("position").to_pylist() == [4, 1, 0]  # n1's first row (position 1), not its repeat
    table, position = store.read_since(result.since)  # type: ignore[arg-type]
    assert table.equals(result.written) and position == result.position
    store.append(events(["later"], t0=500))  # another append follows: read_since returns both
    assert store.read_since(result.since)[0].num_rows == 4  # type: ignore[arg-type]


def test_an_orphan_part_is_reappended_without_duplicates(tmp_path: Path):
    """A part fsync'ed by an append that died before its catalog commit: its events are stored,
    once, even when some were stored again by a retry in the meantime."""
    store = LocalEventStore(tmp_path)
    store.append(events(["a", "b"]))
    table = events(["b", "c", "d"], t0=10).append_column("_seq", pa.array([99, 99, 99], pa.int64()))
    pq.write_table(table, tmp_path / "events" / "part-a-000000000099-deadbeef.parquet")
    store.append(events(["c"], t0=11))  # the client retried part of it elsewhere
    reopened = LocalEventStore(tmp_path)
    assert sorted(_ids(reopened)) == ["a", "b", "c", "d"]
    assert not (tmp_path / "events" / "part-a-000000000099-deadbeef.parquet").exists()


def test_an_unfinished_merge_is_removed_and_a_legacy_workspace_migrates(tmp_path: Path):
    (tmp_path / "events").mkdir()
    pq.write_table(events(["x", "y"]), tmp_path / "events" / "part-000000-abcd1234.parquet")  # before the catalog
    store = LocalEventStore(tmp_path)
    assert sorted(_ids(store)) == ["x", "y"] and store.append(events(["x"])).stored == 0
    merged = pq.read_table(tmp_path / "events" / store.part_names()[0])
    pq.write_table(merged, tmp_path / "events" / "part-c-000000000001-000000000001-00000000.parquet")
    assert sorted(_ids(LocalEventStore(tmp_path))) == ["x", "y"]
    assert not (tmp_path / "events" / "part-c-000000000001-000000000001-00000000.parquet").exists()


def test_replaced_parts_are_removed_after_the_grace_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = LocalEventStore(tmp_path)
    _batches(store, 10)
    old = store.part_names()
    assert store.compact(fanout=10, base_rows=100) == 10
    assert all((tmp_path / "events" / n).exists() for n in old)  # a reader may still hold the list
    monkeypatch.setattr(LocalEventStore, "grace_s", 0.0)
    assert store.recover()["retired"] == 10
    assert not any((tmp_path / "events" / n).exists() for n in old)
    assert store.count() == 100 and len(set(_ids(store))) == 100


_CHURN = """
import sys, itertools
from feedrec.data.store import LocalEventStore
from tests.conformance.test_stores import events
store = LocalEventStore(sys.argv[1])
for b in itertools.count():
    ids = [f"k{b}-{i}" for i in range(10)]
    store.append(events(ids, t0=b * 10))
    print(" ".join(ids), flush=True)
    store.compact(fanout=4, base_rows=40)
"""


@pytest.mark.parametrize("delay", [0.7, 1.3, 2.1])
def test_kill_9_during_appends_and_compaction_leaves_a_consistent_store(tmp_path: Path, delay: float):
    """A process appends and compacts without pause and is killed with SIGKILL: every append it
    reported is in the store, none twice, and the store reads and appends afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHURN, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first append reported: the imports are done, however slow
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    reported = [i for line in [first, *out.splitlines()] for i in line.split()]
    store = LocalEventStore(tmp_path)
    ids = _ids(store)
    assert len(reported) >= 10
    assert set(reported) <= set(ids) and len(ids) == len(set(ids)) == store.count()
    assert store.append(events(["after"], t0=10**6)).stored == 1
    assert datetime.now(UTC) and EVENT_SCHEMA.names == store.scan().column_names


def test_a_running_store_recovers_what_a_crashed_peer_left_when_it_compacts(tmp_path: Path):
    store = LocalEventStore(tmp_path)
    store.append(events(["a"]))
    orphan = events(["z1", "z2"], t0=50).append_column("_seq", pa.array([7, 7], pa.int64()))
    pq.write_table(orphan, tmp_path / "events" / "part-a-000000000007-0badf00d.parquet")  # a peer died here
    assert store.count() == 1
    store.compact()
    assert sorted(_ids(store)) == ["a", "z1", "z2"] and store.count() == 3
