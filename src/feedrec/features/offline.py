"""Point-in-time training rows: every feature of an impression at time t from events strictly before t."""

from __future__ import annotations

import numpy as np
import polars as pl

from feedrec.features.assemble import CountFn, assemble
from feedrec.features.keys import item_lookup, stream_parts


class _SortedStreams:
    """One kind of (key, ts) events, sorted by a composite int64 key (key code, rank of ts among
    the part's distinct event times), for vectorized window counts. Ranks, not microseconds:
    millions of keys times a span of months in microseconds would overflow 64 bits."""

    def __init__(self, streams: pl.DataFrame) -> None:
        # Keys become dense codes in polars (Arrow strings, a hash join): numpy over tens of
        # millions of fixed-width unicode keys would take many gigabytes and a binary search each.
        self.vocab = streams.select(pl.col("key").unique()).with_row_index("code")
        codes = streams.select("key").join(self.vocab, on="key", how="left", maintain_order="left")["code"].to_numpy()
        self.times, rank = np.unique(streams["ts"].to_numpy().astype(np.int64), return_inverse=True)
        self.stride = self.times.size + 1
        if (self.vocab.height + 1) * self.stride >= 2**62:
            raise ValueError(f"{self.vocab.height} feature keys at {self.times.size} distinct times overflow the index")
        self.sorted = np.sort(codes.astype(np.int64) * self.stride + rank.astype(np.int64))

    def _at(self, base: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Position in ``sorted`` of the first event of each key (``base``) at or after ``ts``."""
        needle = base + np.searchsorted(self.times, ts, side="left")
        order = np.argsort(needle)  # sorted needles: the binary searches share their paths (cache)
        out = np.empty(needle.size, np.int64)
        out[order] = np.searchsorted(self.sorted, needle[order], side="left")
        return out

    def count(self, keys: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
        codes = pl.DataFrame({"key": pl.Series(keys, dtype=pl.Utf8)}).join(
            self.vocab, on="key", how="left", maintain_order="left"
        )["code"]
        known = codes.is_not_null().to_numpy()
        base = codes.fill_null(0).to_numpy().astype(np.int64) * self.stride
        ts = ts.astype(np.int64)
        # Events strictly before t, and at or after t - w.
        return np.where(known, self._at(base, ts) - self._at(base, ts - window_us), 0)


class _StreamIndex:
    """A ``_SortedStreams`` per kind of key (built one kind at a time: the strings of one kind
    are freed before the next is built); a count goes to the kind its keys' prefix names."""

    def __init__(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        self.parts = {prefix: _SortedStreams(frame) for prefix, frame in stream_parts(events, items)}

    def count(self, keys: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
        out = np.zeros(keys.size, np.int64)
        if keys.size == 0:
            return out
        first = str(keys[0]).split("|", 1)[0]
        if first in self.parts and np.char.startswith(keys, first + "|").all():  # one kind: the usual call
            return self.parts[first].count(keys, ts, window_us)
        for prefix, part in self.parts.items():
            mine = np.char.startswith(keys, prefix + "|")
            if mine.any():
                out[mine] = part.count(keys[mine], ts[mine], window_us)
        return out


#: A window that reaches before any event: ``count(keys, t, EVERYTHING)`` counts every event before t.
EVERYTHING = 2**60


def build_features(
    queries: pl.DataFrame,
    events: pl.DataFrame,
    items: pl.DataFrame | None = None,
    *,
    known_before: pl.Series | None = None,
) -> pl.DataFrame:
    """Feature rows for ``queries`` (user_id, item_id, timestamp, surface, position), computed from
    ``events`` with timestamps strictly before each query's own.

    ``known_before`` (a datetime per query): only the events before it count as well, each
    window still ending at the query's own moment: the features of a store that had folded in the
    events up to then (what the skew check bounds a lagging server's values with). Queries at
    the same moment take the earliest of theirs."""
    item_table = item_lookup(items)
    count: CountFn = _StreamIndex(events, item_table).count
    if known_before is not None:
        count = _known_before(count, queries["timestamp"], known_before)
    return assemble(queries, item_table, count)


def _known_before(count: CountFn, moments: pl.Series, cutoffs: pl.Series) -> CountFn:
    """``count`` over the events before each query's cutoff: the events of ``[t - w, min(t, c))``,
    as the difference of two counts of everything before (the builder's own counting)."""
    pairs = pl.DataFrame({"t": moments.dt.epoch("us"), "c": cutoffs.dt.epoch("us")})
    earliest = pairs.group_by("t").agg(pl.col("c").min()).sort("t")
    at, cut = earliest["t"].to_numpy().astype(np.int64), earliest["c"].to_numpy().astype(np.int64)

    def known(keys: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
        ts = np.asarray(ts, np.int64)
        where = np.clip(np.searchsorted(at, ts), 0, max(at.size - 1, 0))
        if at.size == 0 or not (at[where] == ts).all():
            raise ValueError("known_before: a count at a moment that is no query's")
        start = ts - window_us
        end = np.maximum(np.minimum(ts, cut[where]), start)
        return count(keys, end, EVERYTHING) - count(keys, start, EVERYTHING)

    return known
