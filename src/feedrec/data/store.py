"""The event store: where validated events, items and users live.

``EventStore`` is the small interface every backend implements (a Spark backend can follow). The
embedded default, ``LocalEventStore``, keeps Parquet files in a workspace folder and queries them
with DuckDB: events are appended as immutable, fsync'ed part files; items and users are upserted
by id. Appends are idempotent by ``event_id``: a second append of the same events stores nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from feedrec.schemas import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA


@dataclass(frozen=True)
class AppendResult:
    stored: int  # new events written
    already_stored: int  # events whose event_id the store held already
    stored_ids: tuple[str, ...] = ()  # the event_ids written by this append
    part: str | None = None  # the file they were written to (LocalEventStore)


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
    ) -> pa.Table:
        """Events with ``start <= timestamp < end`` and a type in ``types``, ordered by time."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def put_items(self, items: pa.Table) -> int:
        """Insert or replace items by item_id; returns how many rows were written."""

    @abstractmethod
    def items(self) -> pa.Table: ...

    @abstractmethod
    def put_users(self, users: pa.Table) -> int: ...

    @abstractmethod
    def users(self) -> pa.Table: ...


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


class LocalEventStore(EventStore):
    """Parquet files in ``root``, queried with DuckDB. Safe for several writer processes (file lock)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.events_dir = self.root / "events"
        self.events_dir.mkdir(parents=True, exist_ok=True)
        self._items_path = self.root / "items.parquet"
        self._users_path = self.root / "users.parquet"

    # -- internals -------------------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _parts(self) -> list[str]:
        return sorted(str(p) for p in self.events_dir.glob("part-*.parquet"))

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with views ``events``, ``items`` and ``users`` over the store."""
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        parts = self._parts()
        if parts:
            con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({parts!r})")
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
            con = self.connect()
            try:
                con.register("incoming", events)
                new = con.sql(
                    "SELECT * FROM incoming WHERE event_id NOT IN (SELECT event_id FROM events) ORDER BY timestamp"
                ).to_arrow_table()
            finally:
                con.close()
            part = None
            if new.num_rows:
                seq = len(self._parts())
                part = self.events_dir / f"part-{seq:06d}-{uuid.uuid4().hex[:8]}.parquet"
                write_parquet_atomic(new.cast(EVENT_SCHEMA), part)
        return AppendResult(
            stored=new.num_rows,
            already_stored=events.num_rows - new.num_rows,
            stored_ids=tuple(new.column("event_id").to_pylist()),
            part=part.name if part is not None else None,
        )

    def part_names(self) -> list[str]:
        """The event files, oldest first: a reader that remembers them can fold in only what is new."""
        return sorted(p.name for p in self.events_dir.glob("part-*.parquet"))

    def read_parts(self, names: Sequence[str]) -> pa.Table:
        """The events of the named files (from ``part_names``)."""
        tables = [pq.read_table(self.events_dir / name, schema=EVENT_SCHEMA) for name in names]
        return pa.concat_tables(tables) if tables else EVENT_SCHEMA.empty_table()

    def scan(
        self,
        *,
        columns: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pa.Table:
        cols = list(columns or EVENT_SCHEMA.names)
        unknown = [c for c in cols if c not in EVENT_SCHEMA.names]
        if unknown:
            raise ValueError(f"unknown event column(s) {unknown}; columns: {EVENT_SCHEMA.names}")
        where: list[str] = ["TRUE"]
        params: dict[str, object] = {}
        if types is not None:
            where.append("type IN (SELECT unnest($types))")
            params["types"] = [str(t) for t in types]
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
        con = self.connect()
        try:
            row = con.execute("SELECT count(*) FROM events").fetchone()
        finally:
            con.close()
        return int(row[0]) if row else 0

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
