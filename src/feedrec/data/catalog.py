"""The event store's catalog: which part files are live, and every stored event_id (SQLite).

The Parquet parts are the truth; the catalog is an index over them that makes an append cost
O(batch) instead of O(store): a batch's ids are looked up in a B-tree instead of scanning every
stored id, and readers list the live parts from one table instead of a folder. It is kept
consistent with the files by ordering (a part is fsync'ed before the transaction that names it
commits) and by ``LocalEventStore``'s recovery, which reconciles the folder with this table after
a crash (see ``feedrec.data.store``).

Tables: ``parts(name, min_seq, max_seq, rows)`` (live files; ``seq`` numbers appends in commit
order, so a reader that remembers the highest one it has seen can ask for what came later),
``ids(event_id)``, ``retired(name, at)`` (files replaced by a compaction, deleted after a grace
period so that a reader that listed them a moment ago can still open them), ``meta(key, value)``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts(name TEXT PRIMARY KEY, min_seq INTEGER NOT NULL, max_seq INTEGER NOT NULL,
                                 rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ids(event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retired(name TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
#: Up to this many ids are looked up with one ``IN (...)``; larger batches go through a temp table.
_SMALL = 500


@dataclass(frozen=True)
class Part:
    name: str
    min_seq: int
    max_seq: int
    rows: int


class Catalog:
    """One SQLite file (WAL, so readers in other processes never block the writer). Writers hold
    the store's file lock; the in-process lock serializes this connection's users."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        self._con.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit can be lost on power loss (not on a process crash); recovery re-indexes
        # any fsync'ed part that the catalog does not name, so no acknowledged event depends on it.
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute("PRAGMA cache_size=-131072")  # 128 MiB of pages: bulk id inserts stay fast
        self._con.executescript(_SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # -- reads -----------------------------------------------------------------------------------
    def parts(self) -> list[Part]:
        """Live parts in append order."""
        with self._lock:
            rows = self._con.execute("SELECT name, min_seq, max_seq, rows FROM parts ORDER BY min_seq").fetchall()
        return [Part(*r) for r in rows]

    def last_seq(self) -> int:
        """The seq of the latest committed append (0 for none)."""
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        return int(row[0]) if row else 0

    def known(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` the store holds already."""
        if not ids:
            return set()
        with self._lock:
            if len(ids) <= _SMALL:
                marks = ",".join("?" * len(ids))
                rows = self._con.execute(f"SELECT event_id FROM ids WHERE event_id IN ({marks})", list(ids))
                return {r[0] for r in rows}
            self._con.execute("CREATE TEMP TABLE IF NOT EXISTS probe(event_id TEXT PRIMARY KEY) WITHOUT ROWID")
            self._con.execute("DELETE FROM probe")
            self._con.executemany("INSERT OR IGNORE INTO probe VALUES (?)", ((i,) for i in sorted(ids)))
            found = self._con.execute("SELECT event_id FROM probe JOIN ids USING (event_id)").fetchall()
            self._con.execute("DELETE FROM probe")
            return {r[0] for r in found}

    def retired(self) -> dict[str, float]:
        with self._lock:
            return dict(self._con.execute("SELECT name, at FROM retired").fetchall())

    # -- writes (under the store's file lock) ----------------------------------------------------
    def next_seq(self) -> int:
        return self.last_seq() + 1

    def commit_append(self, part: Part, ids: Iterable[str]) -> None:
        """Name ``part`` live and index its ids, in one transaction."""
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT INTO ids VALUES (?)", ((i,) for i in sorted(ids)))
                con.execute("INSERT INTO parts VALUES (?, ?, ?, ?)", (part.name, part.min_seq, part.max_seq, part.rows))
                con.execute(
                    "INSERT INTO meta VALUES ('seq', ?) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                    (part.max_seq,),
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def commit_compaction(self, merged: Part, replaced: Sequence[str]) -> bool:
        """Replace ``replaced`` by ``merged`` in one transaction; False (and nothing changes) when
        any of them is no longer live."""
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                marks = ",".join("?" * len(replaced))
                live = con.execute(f"SELECT count(*) FROM parts WHERE name IN ({marks})", list(replaced)).fetchone()
                if live is None or live[0] != len(replaced):
                    con.execute("ROLLBACK")
                    return False
                con.execute(f"DELETE FROM parts WHERE name IN ({marks})", list(replaced))
                con.execute(
                    "INSERT INTO parts VALUES (?, ?, ?, ?)", (merged.name, merged.min_seq, merged.max_seq, merged.rows)
                )
                now = time.time()
                con.executemany("INSERT OR REPLACE INTO retired VALUES (?, ?)", ((n, now) for n in replaced))
                con.execute("COMMIT")
                return True
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def forget_retired(self, names: Sequence[str]) -> None:
        with self._lock:
            self._con.executemany("DELETE FROM retired WHERE name = ?", ((n,) for n in names))
