"""``RedisOnlineStore``: the online features in Redis, shared by every server process.

The same definitions and the same ``compute`` as the embedded store (``CountingStore``); only the
counting primitive lives in Redis. Layout under the workspace's namespace ``ns``:

- ``ns s:<key>``: a sorted set per event stream key (``user|u17|click``, ``aff_topic|u17|t3``, ...),
  one member per counted event, scored by its time in epoch microseconds (exact in a double below
  2^53). A count of ``[t - w, t)`` is ``ZCOUNT key t-w (t``. A request's features are one Lua
  call: the shared ``compute`` runs once recording the counts it asks (about 35 calls for a
  50-candidate feed), Redis answers them all, and it runs again on the answers
  (``feedrec.features.assemble.compute_batched``); the frame form asks call by call. Members
  older than the longest window behind the latest event are trimmed as keys are written, and a
  key expires a wall-clock window after its last write (``ttl_s``): idle keys cannot pile up.
- ``ns r:<user>``: the user's recent engaged or hidden items (a list, newest last, bounded).
- ``ns meta``: ``position`` (the event store position folded so far) and ``latest`` (the latest
  event time, the server's clock in a simulated world).

Folding is shared: ``catch_up`` takes a Redis lock, reads what the event store holds past
``position`` and writes it with the new position in one MULTI/EXEC transaction (WATCHed), so every
event is folded exactly once whichever worker folds it, and a worker killed mid-fold leaves
nothing half-written. A member's name is (time, fold position, row): a fold that is repeated
writes the same members again, which changes nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import redis

from feedrec.features.assemble import Call
from feedrec.features.definitions import WINDOWS
from feedrec.features.keys import event_streams
from feedrec.features.online import (
    MAX_WINDOW_US,
    CountingStore,
    RecentActions,
    frozen_streams,
    without_frozen,
)
from feedrec.redis.client import FOLD_TIMEOUT_S, connect

# ARGV: (key, lo, hi) triples; returns ZCOUNT key lo (hi for each: a whole request's counts at once.
_RANGES = """
local out = {}
for i = 1, #ARGV, 3 do
  out[#out + 1] = redis.call('ZCOUNT', ARGV[i], ARGV[i + 1], '(' .. ARGV[i + 2])
end
return out
"""
# KEYS[1]: the meta hash; ARGV[1]: an event time (us). Keeps the larger.
_LATEST = """
local known = tonumber(redis.call('HGET', KEYS[1], 'latest') or '-1')
if tonumber(ARGV[1]) > known then redis.call('HSET', KEYS[1], 'latest', ARGV[1]) end
return 0
"""


class RedisUnavailable(redis.ConnectionError):
    """Redis failed a request moments ago: the store does not ask it again until its breaker's
    cool-down has passed (a feed falls back at once instead of waiting out a timeout per call)."""


class RedisOnlineStore(CountingStore):
    shared = True

    def __init__(
        self,
        items: pl.DataFrame | None = None,
        path: Path | None = None,  # unused: Redis keeps the state (the factory passes every store one)
        *,
        url: str,
        namespace: str = "feedrec:",
        ttl_s: int = max(WINDOWS.values()) + 86_400,
        fold_lock_s: float = 5.0,
        breaker_s: float = 1.0,
    ) -> None:
        super().__init__(items)
        self.client = connect(url)
        self._fold_client = connect(url, timeout_s=FOLD_TIMEOUT_S)  # a backlog's fold may take seconds
        self.ns = namespace
        self.ttl_s = ttl_s
        self.fold_lock_s = fold_lock_s
        self._meta_key = f"{namespace}meta"
        self._ranges = self.client.register_script(_RANGES)
        self._latest = self.client.register_script(_LATEST)
        self._frozen: list[tuple[str, str]] = []
        # A circuit breaker on the request path's reads: after a connection error or a timeout,
        # every read fails at once for ``breaker_s``, then one is let through to try again. While
        # Redis is away or reloading, a feed otherwise waited its 1 s timeout on each of its calls.
        self.breaker_s = breaker_s
        self._open_until = 0.0

    def _read(self, call: Callable[[], Any]) -> Any:
        if time.monotonic() < self._open_until:
            raise RedisUnavailable(f"Redis failed less than {self.breaker_s:g} s ago; not asked again yet")
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            self._open_until = time.monotonic() + self.breaker_s
            raise

    def freeze(self, counters: list[str]) -> None:
        self._frozen = frozen_streams(counters)

    # -- writes ----------------------------------------------------------------------------------
    def update(self, events: pl.DataFrame) -> int:
        token = int(self.client.incr(f"{self.ns}updates"))
        pipe = self.client.pipeline(transaction=True)
        added = self._write(pipe, events, f"u{token}")
        pipe.execute()
        return added

    def catch_up(self, read_since: Callable[[int], tuple[pa.Table, int]]) -> int:
        known = int(self.client.hget(self._meta_key, "position") or 0)
        table, after = read_since(known)
        if table.num_rows == 0 and after == known:  # nothing new: no lock (the tail asks twice a second)
            return 0
        # Polled every 2 ms (redis-py waits 100 ms between tries by default: a POST behind another
        # worker's fold would wait that long). The lock only saves duplicate work (the WATCH keeps a
        # fold exactly-once), so it expires soon: a worker killed while holding it (kill -9) holds
        # the others up for ``fold_lock_s`` at most.
        lock = self.client.lock(
            f"{self.ns}fold", timeout=self.fold_lock_s, blocking_timeout=self.fold_lock_s, sleep=0.002
        )
        if not lock.acquire():
            raise TimeoutError(f"another process held the fold lock for {self.fold_lock_s:.0f} s")
        try:
            while True:
                with self._fold_client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(self._meta_key)
                        position = int(pipe.hget(self._meta_key, "position") or 0)
                        if position != known:  # another process folded meanwhile: read from where it left
                            known = position
                            table, after = read_since(position)
                        pipe.multi()
                        folded = 0
                        if table.num_rows:
                            events = pl.DataFrame(pl.from_arrow(table))
                            # A fresh Redis (or one far behind) folds only what a window can still reach.
                            horizon_us = int(events["timestamp"].dt.epoch("us").max()) - MAX_WINDOW_US  # type: ignore[arg-type]
                            events = events.filter(pl.col("timestamp").dt.epoch("us") >= horizon_us)
                            self._write(pipe, events, f"p{after}")
                            folded = events.height
                        pipe.hset(self._meta_key, "position", after)
                        pipe.execute()
                        return folded
                    except redis.WatchError:  # another fold committed first (its lock had expired): again
                        continue
        finally:
            with contextlib.suppress(redis.exceptions.LockError):  # it expired during a long fold
                lock.release()

    def _write(self, pipe: Any, events: pl.DataFrame, token: str) -> int:
        """Queue the commands that fold ``events`` (members named by ``token``) on ``pipe``."""
        if events.height == 0:
            return 0
        streams = without_frozen(event_streams(events, self.items_of(events)), self._frozen)
        latest = int(events["timestamp"].dt.epoch("us").max())  # type: ignore[arg-type]
        horizon = f"({latest - MAX_WINDOW_US - 1}"
        grouped = streams.with_row_index("row").group_by("key").agg("ts", "row")
        for key, times, rows in grouped.iter_rows():
            name = f"{self.ns}s:{key}"
            pipe.zadd(name, {f"{t}:{token}:{r}": t for t, r in zip(times, rows, strict=True)})
            pipe.zremrangebyscore(name, "-inf", horizon)
            pipe.expire(name, self.ttl_s)
        acted = events.filter(pl.col("type").is_in(list(RecentActions.TYPES)))
        for user, item in zip(acted["user_id"].to_list(), acted["item_id"].to_list(), strict=True):
            name = f"{self.ns}r:{user}"
            pipe.lrem(name, 0, item)
            pipe.rpush(name, item)
            pipe.ltrim(name, -RecentActions.PER_USER, -1)
            pipe.expire(name, self.ttl_s)
        self._latest(keys=[self._meta_key], args=[latest], client=pipe)
        return streams.height

    # -- reads -----------------------------------------------------------------------------------
    def _count_windows(self, keys: np.ndarray, ts: np.ndarray, windows: list[int]) -> np.ndarray:
        return self._count_calls([(np.asarray(keys).astype(str), np.asarray(ts, np.int64), windows)])[0]

    batched = True  # a feed's ~35 count calls are one Lua call (one round trip), not one each

    def _count_calls(self, calls: list[Call]) -> list[np.ndarray]:
        # Every (key, window start, end) the calls ask, once: a feed asks a user's or a creator's
        # counts for many candidates, and the same key in several calls.
        asked: dict[tuple[str, int, int], int] = {}
        wheres = []
        for keys, ts, windows in calls:
            where = [
                asked.setdefault((key, t - w, t), len(asked))
                for key, t in zip(keys.tolist(), ts.tolist(), strict=True)
                for w in windows
            ]
            wheres.append(np.asarray(where, np.int64).reshape(len(keys), len(windows)))
        if not asked:
            return [np.zeros(where.shape, np.int64) for where in wheres]
        args: list[Any] = []
        for key, lo, hi in asked:
            args += (f"{self.ns}s:{key}", lo, hi)
        counts = np.asarray(self._read(lambda: self._ranges(args=args)), np.int64)
        return [counts[where] for where in wheres]

    def recent_items(self, user_id: str) -> list[str]:
        found: list[bytes] = self._read(lambda: self.client.lrange(f"{self.ns}r:{user_id}", 0, -1))
        return [i.decode() for i in found]

    def event_time(self) -> float | None:
        latest = self._read(lambda: self.client.hget(self._meta_key, "latest"))
        return None if latest is None else int(latest) / 1e6

    @property
    def meta(self) -> dict[str, Any]:
        return {"position": int(self.client.hget(self._meta_key, "position") or 0)}

    def save(self, path: Path | None = None, meta: dict[str, Any] | None = None) -> None:
        """Nothing to do: Redis holds the state (its own persistence, RDB or AOF, keeps it across a
        restart; without it a restarted Redis is refilled from the event store by ``catch_up``)."""
        return None

    def clear(self) -> int:
        """Delete this namespace's keys (tests, a rebuild); returns how many."""
        names = list(self.client.scan_iter(match=f"{self.ns}*", count=1000))
        return int(self.client.delete(*names)) if names else 0
