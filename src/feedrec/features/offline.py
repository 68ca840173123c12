"""Point-in-time training rows: every feature of an impression at time t from events strictly before t."""

from __future__ import annotations

import numpy as np
import polars as pl

from feedrec.features.assemble import CountFn, assemble
from feedrec.features.definitions import WINDOWS
from feedrec.features.keys import event_streams, item_lookup


class _SortedStreams:
    """All (key, ts) events, sorted by a composite int64 key, for vectorized window counts."""

    def __init__(self, streams: pl.DataFrame, max_window_us: int, query_ts: np.ndarray) -> None:
        # Keys become dense codes in polars (Arrow strings): a numpy unique over tens of millions of
        # fixed-width unicode keys would take many gigabytes. Only the distinct keys go to numpy.
        vocab = streams.select(pl.col("key").unique().sort())["key"]
        codes = (
            streams.select("key")
            .join(vocab.to_frame().with_row_index("code"), on="key", how="left", maintain_order="left")["code"]
            .to_numpy()
        )
        self.vocab = vocab.to_numpy().astype(str)
        ts = streams["ts"].to_numpy().astype(np.int64)
        everything = np.concatenate([ts, query_ts.astype(np.int64)])
        lo = int(everything.min()) - max_window_us - 1 if everything.size else 0
        hi = int(everything.max()) + 1 if everything.size else 1
        self.base, self.span = lo, hi - lo + 1
        if (self.vocab.size + 1) * self.span >= 2**62:
            raise ValueError(
                f"{self.vocab.size} feature keys over a {self.span / 86_400e6:.0f}-day span overflow the "
                "composite index; build features over a shorter time range"
            )
        self.sorted = np.sort(codes.astype(np.int64) * self.span + (ts - lo))

    def count(self, keys: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
        pos = np.searchsorted(self.vocab, keys)
        pos = np.clip(pos, 0, max(self.vocab.size - 1, 0))
        known = (self.vocab.size > 0) & (self.vocab[pos] == keys) if self.vocab.size else np.zeros(keys.size, bool)
        base = pos.astype(np.int64) * self.span - self.base
        hi = np.searchsorted(self.sorted, base + ts, side="left")  # events strictly before t
        lo = np.searchsorted(self.sorted, base + ts - window_us, side="left")  # ... and at or after t - w
        return np.where(known, hi - lo, 0)


def build_features(queries: pl.DataFrame, events: pl.DataFrame, items: pl.DataFrame | None = None) -> pl.DataFrame:
    """Feature rows for ``queries`` (user_id, item_id, timestamp, surface, position), computed from
    ``events`` with timestamps strictly before each query's own."""
    item_table = item_lookup(items)
    streams = event_streams(events, item_table)
    query_ts = queries["timestamp"].dt.epoch("us").to_numpy()
    index = _SortedStreams(streams, max(WINDOWS.values()) * 1_000_000, query_ts)
    count: CountFn = index.count
    return assemble(queries, item_table, count)
