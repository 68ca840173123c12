"""The online feature store: the same definitions, answered at request time, updated as events arrive.

``OnlineFeatureStore`` is the interface (a Redis backend can implement it); ``LocalOnlineStore`` keeps,
per key, the sorted timestamps of its events within the longest window, in process, and persists
them to one Parquet file. ``update`` takes new events incrementally; ``get_online_features`` builds
feature rows for (user, item, time, surface, position) requests with the very code the offline
builder uses (``assemble``), so both sides give the same values for the same moment.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from feedrec.features.assemble import Call, Queries, assemble, compute, compute_batched
from feedrec.features.definitions import COUNTERS, FEATURE_NAMES, WINDOWS
from feedrec.features.keys import event_streams, item_lookup
from feedrec.schemas import POSITIVE_EVENT_TYPES, EventType

MAX_WINDOW_US = max(WINDOWS.values()) * 1_000_000
PRUNE_EVERY_US = 86_400 * 1_000_000


class OnlineFeatureStore(ABC):
    @abstractmethod
    def update(self, events: pl.DataFrame) -> int:
        """Fold new events in; returns how many (key, time) entries were added."""

    @abstractmethod
    def get_online_features(self, entity_rows: pl.DataFrame, features: list[str] | None = None) -> pl.DataFrame:
        """Feature rows for requests (user_id, item_id, timestamp, surface, position)."""

    @abstractmethod
    def save(self, path: Path | None = None, meta: dict[str, Any] | None = None) -> Path | None:
        """Persist what the store holds, with ``meta`` (what it reflects: the event store's
        position); a no-op where the backend is durable itself."""

    #: True for a store every server process shares (Redis): each event is folded into it once,
    #: by whichever process takes the fold (``catch_up``), and reads see every process's events.
    #: False for a process-local store (the embedded default), which each process feeds itself.
    shared: bool = False

    @property
    def meta(self) -> dict[str, Any]:
        """The ``meta`` of the snapshot this store was loaded from ({} when none)."""
        return {}

    @abstractmethod
    def recent_items(self, user_id: str) -> list[str]:
        """The items the user engaged with or hid in the events folded in, oldest first (at most
        ``RecentActions.PER_USER``): what a feed stops showing them at once."""

    @abstractmethod
    def event_time(self) -> float | None:
        """The latest event time folded in (epoch seconds; None before any): the server's clock
        when it keeps the events' time (a simulated world's)."""

    def catch_up(self, read_since: Callable[[int], tuple[pa.Table, int]]) -> int:
        """A shared store folds in what the event store holds past the position the store records,
        once whichever process calls it (``read_since(position) -> (events, next position)``);
        returns how many events it folded."""
        raise NotImplementedError(f"{type(self).__name__} is fed by each process (update), not shared")

    def freeze(self, counters: list[str]) -> None:
        """Fault injection (``FEEDREC_FAULT_FROZEN_COUNTERS``): stop folding the events that the
        named counters count, as a broken feature pipeline would. Every feature fed by the same
        stream (the counter's other windows, the ratios over them) freezes with it."""
        raise NotImplementedError(f"{type(self).__name__} cannot freeze counters")

    def request_features(
        self, user_id: str, item_ids: np.ndarray, ts_us: int, surface: str | None, position: int
    ) -> dict[str, np.ndarray]:
        """One request's features (every name in FEATURE_NAMES but ``surface``, as arrays, one value
        per item): what a server ranks with. This default goes through ``get_online_features``;
        a store may answer it without building a frame."""
        n = len(item_ids)
        rows = pl.DataFrame(
            {
                "user_id": [user_id] * n,
                "item_id": list(item_ids),
                "timestamp": pl.Series([ts_us] * n, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "surface": pl.Series([surface] * n, dtype=pl.Utf8),
                "position": pl.Series([position] * n, dtype=pl.Int32),
            }
        )
        frame = self.get_online_features(rows)
        return {name: frame[name].cast(pl.Float64).to_numpy() for name in FEATURE_NAMES if name != "surface"}


class RecentActions:
    """What each user engaged with or hid, newest last, bounded per user; thread-safe."""

    TYPES = frozenset(t.value for t in (*POSITIVE_EVENT_TYPES, EventType.HIDE))
    PER_USER = 200  # the most recent actions kept per user

    def __init__(self, per_user: int = PER_USER) -> None:
        self.per_user = per_user
        self._items: dict[str, dict[str, None]] = {}
        self._lock = threading.Lock()

    def add(self, events: pl.DataFrame) -> None:
        acted = events.filter(pl.col("type").is_in(list(self.TYPES)))
        with self._lock:
            for user, item in zip(acted["user_id"].to_list(), acted["item_id"].to_list(), strict=True):
                seen = self._items.setdefault(user, {})
                seen.pop(item, None)
                seen[item] = None
                if len(seen) > self.per_user:
                    del seen[next(iter(seen))]

    def items(self, user_id: str) -> list[str]:
        with self._lock:
            return list(self._items.get(user_id, ()))


def frozen_streams(counters: list[str]) -> list[tuple[str, str]]:
    """The (key prefix, key suffix) of the streams that the named counters count (``freeze``)."""
    by_name = {c.name: c for c in COUNTERS}
    unknown = [name for name in counters if name not in by_name]
    if unknown:
        raise ValueError(f"cannot freeze {unknown}: not counters; counters: {sorted(by_name)}")
    return [(f"{by_name[n].entity}|", f"|{by_name[n].event_type}") for n in counters]


def without_frozen(streams: pl.DataFrame, frozen: list[tuple[str, str]]) -> pl.DataFrame:
    key = pl.col("key")
    for prefix, suffix in frozen:
        streams = streams.filter(~(key.str.starts_with(prefix) & key.str.ends_with(suffix)))
    return streams


def max_event_time(events: pl.DataFrame, known: float | None) -> float | None:
    latest = events["timestamp"].max() if events.height else None
    if isinstance(latest, datetime):
        return max(known or latest.timestamp(), latest.timestamp())
    return known


class CountingStore(OnlineFeatureStore):
    """A store that answers "how many events of each key in [t - w, t)" (``_count_windows``): the
    features are then the shared ``compute``, over the items' attributes held in process."""

    def __init__(self, items: pl.DataFrame | None = None) -> None:
        # One chunk: gathering a POST's few items from a million rows in 8 chunks took ~10 ms.
        self.items = item_lookup(items).rechunk()
        self._index = _ItemIndex(self.items)

    @abstractmethod
    def _count_windows(self, keys: np.ndarray, ts: np.ndarray, windows: list[int]) -> np.ndarray:
        """(n, len(windows)) int64: the events of ``keys[i]`` in ``[ts[i] - w, ts[i])`` per window."""

    def _count(self, keys: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
        return self._count_windows(keys, ts, [window_us])[:, 0]

    #: Whether a request's counts are asked all at once (``_count_calls``: one round trip to a
    #: remote store) rather than call by call as ``compute`` asks them (in process, cheaper).
    batched: ClassVar[bool] = False

    def _count_calls(self, calls: list[Call]) -> list[np.ndarray]:
        """The answers to ``compute``'s recorded count calls, one array per call."""
        return [self._count_windows(keys, ts, windows) for keys, ts, windows in calls]

    def items_of(self, events: pl.DataFrame) -> pl.DataFrame:
        """The items table's rows for the items ``events`` mention, gathered by index: a POST's
        ten events must not be joined against a million-item catalogue (tens of ms a batch)."""
        rows = [r for r in map(self._index.row.get, events["item_id"].unique().to_list()) if r is not None]
        return self.items[sorted(rows)]

    def get_online_features(self, entity_rows: pl.DataFrame, features: list[str] | None = None) -> pl.DataFrame:
        unknown = [f for f in features or [] if f not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; declared: {FEATURE_NAMES}")
        rows = assemble(entity_rows, self.items, self._count)
        return rows if features is None else rows.select("user_id", "item_id", "timestamp", *features)

    def request_features(
        self, user_id: str, item_ids: np.ndarray, ts_us: int, surface: str | None, position: int
    ) -> dict[str, np.ndarray]:
        n = len(item_ids)
        items = np.asarray(item_ids).astype(str)
        queries = self._index.queries(np.full(n, user_id), items, np.full(n, ts_us, np.int64), float(position))
        if self.batched:
            return compute_batched(queries, self._count_calls)
        return compute(queries, self._count, self._count_windows)


class LocalOnlineStore(CountingStore):
    def __init__(self, items: pl.DataFrame | None = None, path: Path | None = None) -> None:
        super().__init__(items)
        self.path = path
        self._streams: dict[str, list[int]] = defaultdict(list)
        self._latest = -(2**62)
        self._pruned_at = -(2**62)
        self._meta: dict[str, Any] = {}
        self._frozen: list[tuple[str, str]] = []
        self._recent = RecentActions()
        self._event_time: float | None = None
        if path is not None and path.exists():
            self._load(path)

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    def freeze(self, counters: list[str]) -> None:
        self._frozen = frozen_streams(counters)

    def recent_items(self, user_id: str) -> list[str]:
        return self._recent.items(user_id)

    def event_time(self) -> float | None:
        return self._event_time

    def update(self, events: pl.DataFrame) -> int:
        self._recent.add(events)
        self._event_time = max_event_time(events, self._event_time)
        streams = without_frozen(event_streams(events, self.items_of(events)), self._frozen)
        added = streams.height
        if added > 1000:  # a backfill: one group-by, then a merge per key
            grouped = streams.group_by("key").agg(pl.col("ts").sort())
            for key, times in grouped.iter_rows():
                have = self._streams.get(key)
                self._streams[key] = sorted(have + times) if have else times
        else:
            for key, ts in zip(streams["key"].to_list(), streams["ts"].to_list(), strict=True):
                bisect.insort(self._streams[key], int(ts))
        if streams.height:
            self._latest = max(self._latest, int(streams["ts"].max()))  # type: ignore[arg-type]
            # Pruning walks every key: once per day of event time, not per batch (a server folds
            # a batch per request; walking 1.7 M keys each time cost ~1 s of GIL per POST).
            if self._latest - self._pruned_at >= PRUNE_EVERY_US:
                self._prune()
                self._pruned_at = self._latest
        return added

    def _prune(self) -> None:
        """Drop entries no window can reach any more (older than the latest event minus the longest window)."""
        horizon = self._latest - MAX_WINDOW_US - 1
        for key in list(self._streams):
            times = self._streams[key]
            cut = bisect.bisect_left(times, horizon)
            if cut:
                del times[:cut]
            if not times:
                del self._streams[key]

    def _count_windows(self, keys: np.ndarray, ts: np.ndarray, windows: list[int]) -> np.ndarray:
        """(n, len(windows)): one lookup per key, then a bisect per window below the first."""
        out = np.zeros((keys.size, len(windows)), np.int64)
        streams = self._streams
        for i, (key, t) in enumerate(zip(keys.tolist(), ts.tolist(), strict=True)):
            times = streams.get(key)
            if times:
                hi = bisect.bisect_left(times, t)
                if hi:
                    out[i] = [hi - bisect.bisect_left(times, t - w, 0, hi) for w in windows]
        return out

    def save(self, path: Path | None = None, meta: dict[str, Any] | None = None) -> Path:
        path = path or self.path
        if path is None:
            raise ValueError("no path to save the online store to")
        streams = self._streams
        lengths = np.fromiter((len(t) for t in streams.values()), np.int64, len(streams))
        names = pa.array(list(streams), pa.string())
        keys = names.take(pa.array(np.repeat(np.arange(len(streams)), lengths)))
        ts = np.fromiter(itertools.chain.from_iterable(streams.values()), np.int64, int(lengths.sum()))
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several server workers may save at once
        table = pa.table({"key": keys, "ts": pa.array(ts, pa.int64())})
        table = table.replace_schema_metadata({"feedrec": json.dumps(meta or {})})
        pq.write_table(table, staging)
        os.replace(staging, path)  # readers see the old snapshot or the new one, whole, with its meta
        return path

    def _load(self, path: Path) -> None:
        table = pq.read_table(path)
        self._meta = json.loads((table.schema.metadata or {}).get(b"feedrec", b"{}"))
        frame = pl.DataFrame(pl.from_arrow(table)).sort("key", "ts")
        for key, times in frame.group_by("key", maintain_order=True).agg("ts").iter_rows():
            self._streams[key] = list(times)
        if frame.height:
            self._latest = int(frame["ts"].max())  # type: ignore[arg-type]

    def __len__(self) -> int:
        return sum(len(t) for t in self._streams.values())


class _ItemIndex:
    """The items' attributes as arrays, looked up by id without a join (the request path)."""

    def __init__(self, items: pl.DataFrame) -> None:
        ids = items["item_id"].cast(pl.Utf8).to_list()
        self.row = {item: n for n, item in enumerate(ids)}
        self.creators = np.asarray([*items["creator_id"].fill_null("").to_list(), ""], dtype=object)
        created = items["created_at"].dt.epoch("us").cast(pl.Float64).to_numpy()
        self.created = np.concatenate([created, [np.nan]])
        topics = items["topics"].to_list()
        lengths = np.asarray([len(t or []) for t in topics] + [0], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.lengths = lengths
        flat = [topic for t in topics for topic in (t or [])]
        self.topics = np.asarray(flat, dtype=str) if flat else np.empty(0, dtype=str)

    def queries(self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, position: float) -> Queries:
        missing = len(self.row)  # the sentinel row: no creator, no publish time, no topics
        idx = np.fromiter((self.row.get(i, missing) for i in items.tolist()), np.int64, items.size)
        lengths = self.lengths[idx]
        topic_row = np.repeat(np.arange(idx.size), lengths)
        starts = np.repeat(self.offsets[idx], lengths)
        within = np.arange(topic_row.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return Queries(
            users=users.astype(str),
            items=items,
            ts=ts,
            position=np.full(items.size, position),
            creators=self.creators[idx].astype(str),
            created=self.created[idx],
            topic_row=topic_row,
            topics=self.topics[starts + within] if topic_row.size else np.empty(0, dtype=str),
        )
