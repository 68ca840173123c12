"""The event store: where validated events, items and users live.

``EventStore`` is the small interface every backend implements (a Spark backend can follow). The
embedded default, ``LocalEventStore``, keeps Parquet files in a workspace folder and queries them
with DuckDB: events are appended as immutable, fsync'ed part files, named in a SQLite catalog that
also indexes every event_id (``feedrec.data.catalog``), and merged in the background; items and
users are upserted by id. Appends are idempotent by ``event_id``: a second append of the same
events stores nothing, and a repeated id inside one append is stored once.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedrec.data.catalog import Catalog, Part
from feedrec.schemas import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA

#: A part file holds the events plus ``_seq``, the append that stored them (``read_since``).
_PART_SCHEMA = EVENT_SCHEMA.append(pa.field("_seq", pa.int64(), nullable=False))
_EVENT_COLUMNS = ", ".join(f'"{c}"' for c in EVENT_SCHEMA.names)


@dataclass(frozen=True)
class AppendResult:
    stored: int  # new events written
    already_stored: int  # events whose event_id the store held already
    stored_ids: tuple[str, ...] = ()  # the event_ids written by this append
    part: str | None = None  # the file they were written to (LocalEventStore)
    position: int | None = None  # the store's position once they were stored (``read_since``)
    # Where the backend has them at hand (LocalEventStore): the store's position just before this
    # append, and the rows written (EVENT_SCHEMA) in the order ``read_since`` returns them. Between
    # ``since`` and ``position`` the store holds exactly ``written``, so a writer folds its own
    # append without reading it back (``read_since(since)`` returns it, and any later appends).
    since: int | None = None
    written: pa.Table | None = field(default=None, repr=False, compare=False)


class EventStore(ABC):
    """Append-only events plus upserted items and users."""

    @abstractmethod
    def append(self, events: pa.Table) -> AppendResult:
        """Store ``events`` (EVENT_SCHEMA) whose event_id is new; durable when this returns."""

    @abstractmethod
    def scan(
        self,
        *,
        columns: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        users: Sequence[str] | None = None,
    ) -> pa.Table:
        """Events with ``start <= timestamp < end``, a type in ``types`` and (when given) a user
        in ``users``, ordered by time."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def stats(self) -> dict[str, object]:
        """Counts by event type, distinct users and items, and the time range."""

    def compact(self) -> int:
        """Merge small parts, if the backend has any; returns how many it merged (0: nothing to do)."""
        return 0

    def close(self) -> None:  # noqa: B027 (optional: most backends hold nothing open)
        """Release what the store holds open (connections)."""

    @abstractmethod
    def position(self) -> int:
        """An opaque, increasing mark of what the store holds now (for ``read_since``)."""

    @abstractmethod
    def read_since(self, position: int, *, skip: Collection[int] = ()) -> tuple[pa.Table, int]:
        """The events appended after ``position`` (except by the appends whose positions are in
        ``skip``: a reader's own), and the position to ask from next time."""

    @abstractmethod
    def put_items(self, items: pa.Table) -> int:
        """Insert or replace items by item_id; returns how many rows were written."""

    @abstractmethod
    def items(self) -> pa.Table: ...

    @abstractmethod
    def put_users(self, users: pa.Table) -> int: ...

    @abstractmethod
    def users(self) -> pa.Table: ...


def event_columns(columns: Sequence[str] | None) -> list[str]:
    """The columns a scan asks for (all by default); an unknown one is a clear error."""
    cols = list(columns or EVENT_SCHEMA.names)
    unknown = [c for c in cols if c not in EVENT_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown event column(s) {unknown}; columns: {EVENT_SCHEMA.names}")
    return cols


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that a crash leaves either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class SideTables:
    """Items and users as one Parquet file each under ``root``, upserted by id under the store's
    file lock (small next to the events; every backend keeps them this way)."""

    root: Path

    @contextmanager
    def _lock(self, name: str = ".lock", *, wait: bool = True) -> Iterator[bool]:
        with (self.root / name).open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def _items_path(self) -> Path:
        return self.root / "items.parquet"

    @property
    def _users_path(self) -> Path:
        return self.root / "users.parquet"

    # -- items and users -------------------------------------------------------------------------
    def _upsert(self, path: Path, table: pa.Table, schema: pa.Schema, key: str) -> int:
        table = table.select(schema.names).cast(schema)
        with self._lock():
            con = duckdb.connect()
            try:
                con.register("incoming", table)
                if path.exists():
                    con.execute(f"CREATE VIEW old AS SELECT * FROM read_parquet('{path}')")
                    merged_sql = f"SELECT * FROM old WHERE {key} NOT IN (SELECT {key} FROM incoming) UNION ALL "
                else:
                    merged_sql = ""
                merged = con.sql(f"{merged_sql}SELECT * FROM incoming ORDER BY {key}").to_arrow_table()
            finally:
                con.close()
            write_parquet_atomic(merged.cast(schema), path)
        return table.num_rows

    def put_items(self, items: pa.Table) -> int:
        return self._upsert(self._items_path, items, ITEM_SCHEMA, "item_id")

    def items(self) -> pa.Table:
        return pq.read_table(self._items_path) if self._items_path.exists() else ITEM_SCHEMA.empty_table()

    def put_users(self, users: pa.Table) -> int:
        if "attributes" in users.column_names and not pa.types.is_string(users.schema.field("attributes").type):
            users = users.set_column(
                users.column_names.index("attributes"),
                "attributes",
                pa.array([json.dumps(a) for a in users.column("attributes").to_pylist()], pa.string()),
            )
        return self._upsert(self._users_path, users, USER_SCHEMA, "user_id")

    def users(self) -> pa.Table:
        return pq.read_table(self._users_path) if self._users_path.exists() else USER_SCHEMA.empty_table()


class LocalEventStore(SideTables, EventStore):
    """Parquet files in ``root``, queried with DuckDB. Safe for several writer processes (file lock).

    An append costs O(batch): its ids are checked against the catalog's id index (SQLite), the new
    events go to one fsync'ed part file, and one catalog transaction names the part and indexes
    its ids. ``compact()`` merges parts of similar size (size-tiered, ``fanout`` at a time) so the
    part count stays logarithmic in the number of appends. After a crash, ``recover()`` (run when
    a store is opened, and by every compaction) reconciles the folder with the catalog:

    - a part the catalog does not name was fsync'ed by an append that died before its commit (or
      predates the catalog): its events are appended again, deduplicated, and the file removed;
    - a merged part the catalog does not name is an unfinished compaction: removed (the parts it
      merged are still live);
    - parts a committed compaction replaced are removed after ``grace_s`` seconds, so a reader that
      listed them a moment before can still read them.
    """

    grace_s: float = 30.0

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.events_dir = self.root / "events"
        self.events_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.events_dir / "catalog.sqlite")
        self.recover()

    def close(self) -> None:
        self.catalog.close()

    # -- internals -------------------------------------------------------------------------------
    def _parts(self) -> list[str]:
        return [str(self.events_dir / p.name) for p in self.catalog.parts()]

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with views ``events``, ``items`` and ``users`` over the store."""
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        parts = self._parts()
        if parts:
            con.execute(
                f"CREATE VIEW events AS SELECT {_EVENT_COLUMNS} FROM read_parquet({parts!r}, union_by_name=true)"
            )
        else:
            con.register("_empty_events", EVENT_SCHEMA.empty_table())
            con.execute("CREATE VIEW events AS SELECT * FROM _empty_events")
        for name, path, schema in (
            ("items", self._items_path, ITEM_SCHEMA),
            ("users", self._users_path, USER_SCHEMA),
        ):
            if path.exists():
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
            else:
                con.register(f"_empty_{name}", schema.empty_table())
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
        return con

    # -- events ----------------------------------------------------------------------------------
    def append(self, events: pa.Table) -> AppendResult:
        events = events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        if events.num_rows == 0:
            return AppendResult(0, 0)
        with self._lock():
            return self._append_locked(events)

    def _append_locked(self, events: pa.Table) -> AppendResult:
        frame = pl.DataFrame(pl.from_arrow(events))
        unique = frame.unique(subset="event_id", keep="first", maintain_order=True)  # first of a repeated id wins
        ids = unique["event_id"].to_list()
        known = self.catalog.known(ids) if self.catalog.last_seq() else set()
        new = unique.filter(~pl.col("event_id").is_in(list(known))) if known else unique
        if new.height == 0:
            return AppendResult(0, events.num_rows)
        seq = self.catalog.next_seq()
        new = new.sort("timestamp", maintain_order=True).with_columns(pl.lit(seq, pl.Int64).alias("_seq"))
        name = f"part-a-{seq:012d}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(new.to_arrow().cast(_PART_SCHEMA), self.events_dir / name)
        stored_ids = new["event_id"].to_list()
        self.catalog.commit_append(Part(name, seq, seq, new.height), stored_ids)
        return AppendResult(
            stored=new.height,
            already_stored=events.num_rows - new.height,
            stored_ids=tuple(stored_ids),
            part=name,
            position=seq,
            since=seq - 1,
            written=new.drop("_seq").to_arrow().cast(EVENT_SCHEMA),
        )

    def position(self) -> int:
        """Where the store is now: the seq of its latest append (see ``read_since``)."""
        return self.catalog.last_seq()

    def read_since(self, position: int, *, skip: Collection[int] = ()) -> tuple[pa.Table, int]:
        """The events appended after ``position`` (from ``position()`` or an earlier call), less
        those of the appends in ``skip`` (the reader's own), and the position to pass next time:
        how a reader in another process folds in only what is new."""
        last = self.catalog.last_seq()
        names = [p.name for p in self.catalog.parts() if p.max_seq > position]
        if last <= position or not names:
            return EVENT_SCHEMA.empty_table(), max(last, position)
        # Plain Arrow reads with a row filter: a tail runs this every half second, and a DuckDB
        # connection costs ~10 ms to open.
        window = [("_seq", ">", position), ("_seq", "<=", last)]
        table = pa.concat_tables(
            [pq.read_table(self.events_dir / name, schema=_PART_SCHEMA, filters=window) for name in names]
        )
        mine = [int(x) for x in skip if x > position]
        if mine:
            table = table.filter(pc.invert(pc.is_in(table.column("_seq"), pa.array(mine, pa.int64()))))
        table = table.sort_by([("_seq", "ascending"), ("timestamp", "ascending")])
        return table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA), last

    def part_names(self) -> list[str]:
        """The live event files, oldest first."""
        return [p.name for p in self.catalog.parts()]

    def recover(self) -> dict[str, int]:
        """Reconcile the folder with the catalog after a crash (see the class docstring); returns
        how many files of each kind it handled."""
        done = {"reappended": 0, "unfinished_merges": 0, "retired": 0, "temporary": 0}
        with self._lock(), self._lock(".compact.lock", wait=False) as compacting_here:
            live = {p.name for p in self.catalog.parts()}
            done["retired"] = self._drop_retired()
            retired = self.catalog.retired()
            for tmp in self.events_dir.glob(".part-a-*.tmp"):  # an append's unfinished write
                tmp.unlink(missing_ok=True)
                done["temporary"] += 1
            if compacting_here:  # no compaction runs, so its files are leftovers too
                for tmp in self.events_dir.glob(".part-c-*.tmp"):
                    tmp.unlink(missing_ok=True)
                    done["temporary"] += 1
            for path in sorted(self.events_dir.glob("part-*.parquet")):
                name = path.name
                if name in live or name in retired:
                    continue
                if name.startswith("part-c-"):
                    if compacting_here:
                        path.unlink()
                        done["unfinished_merges"] += 1
                    continue
                orphan = pq.read_table(path, columns=EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
                self._append_locked(orphan)
                path.unlink()
                done["reappended"] += 1
            if any(done.values()):
                _fsync_dir(self.events_dir)
        return done

    def _drop_retired(self) -> int:
        """Delete the files compactions replaced more than ``grace_s`` ago (under the store lock)."""
        now = time.time()
        gone = [n for n, at in self.catalog.retired().items() if now - at >= self.grace_s]
        for name in gone:
            (self.events_dir / name).unlink(missing_ok=True)
        if gone:
            self.catalog.forget_retired(gone)
        return len(gone)

    def compact(self, *, fanout: int = 10, base_rows: int = 1_000, max_rows: int = 5_000_000) -> int:
        """Merge one tier of parts of similar size (``fanout`` or more parts with rows in
        ``[base_rows * fanout**(t-1), base_rows * fanout**t)``) into one; returns how many parts it
        merged (0: nothing to do, or another process is compacting). Reading and writing happen
        without the append lock; only the swap takes it. Call it until it returns 0. It first
        runs ``recover`` (cheap when there is nothing to do), so what a crashed process left behind
        is handled while the server runs, not only when a store is opened."""
        self.recover()
        with self._lock(".compact.lock", wait=False) as mine:
            if not mine:
                return 0
            tiers: dict[int, list[Part]] = {}
            for part in self.catalog.parts():
                if part.rows < max_rows:
                    tier = 0 if part.rows < base_rows else 1 + int(math.log(part.rows / base_rows, fanout))
                    tiers.setdefault(tier, []).append(part)
            group = next((tiers[t] for t in sorted(tiers) if len(tiers[t]) >= fanout), None)
            if group is None:
                return 0
            group = group[: fanout * 4]
            merged = pa.concat_tables(
                [pq.read_table(self.events_dir / p.name, schema=_PART_SCHEMA) for p in group]
            ).sort_by([("timestamp", "ascending"), ("_seq", "ascending")])
            lo, hi = min(p.min_seq for p in group), max(p.max_seq for p in group)
            name = f"part-c-{lo:012d}-{hi:012d}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = self.events_dir / f".{name}.tmp"
            pq.write_table(merged, tmp, compression="zstd")
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            with self._lock():
                self._drop_retired()
                os.replace(tmp, self.events_dir / name)
                _fsync_dir(self.events_dir)
                if not self.catalog.commit_compaction(Part(name, lo, hi, merged.num_rows), [p.name for p in group]):
                    (self.events_dir / name).unlink()
                    return 0
            return len(group)

    def scan(
        self,
        *,
        columns: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        users: Sequence[str] | None = None,
    ) -> pa.Table:
        cols = event_columns(columns)
        where: list[str] = ["TRUE"]
        params: dict[str, object] = {}
        if types is not None:
            where.append("type IN (SELECT unnest($types))")
            params["types"] = [str(t) for t in types]
        if users is not None:
            where.append("user_id IN (SELECT unnest($users))")
            params["users"] = [str(u) for u in users]
        if start is not None:
            where.append("timestamp >= $start")
            params["start"] = start
        if end is not None:
            where.append("timestamp < $end")
            params["end"] = end
        con = self.connect()
        try:
            table = con.sql(
                f"SELECT {', '.join(cols)} FROM events WHERE {' AND '.join(where)} ORDER BY timestamp, event_id",
                params=params,
            ).to_arrow_table()
        finally:
            con.close()
        return table.cast(pa.schema([EVENT_SCHEMA.field(c) for c in cols]))

    def count(self) -> int:
        return sum(p.rows for p in self.catalog.parts())

    def stats(self) -> dict[str, object]:
        """Counts by event type, distinct users and items, and the time range."""
        con = self.connect()
        try:
            by_type = dict(con.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type").fetchall())
            row = con.execute(
                "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), CAST(min(timestamp) AS VARCHAR), "
                "CAST(max(timestamp) AS VARCHAR) FROM events"
            ).fetchone()
        finally:
            con.close()
        assert row is not None
        return {
            "events": row[0],
            "users": row[1],
            "items": row[2],
            "first": str(row[3]) if row[3] else None,
            "last": str(row[4]) if row[4] else None,
            "by_type": by_type,
        }
