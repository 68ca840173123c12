"""The serving feature log: for a sample of feeds, the ranker's inputs and prediction per served item.

The server hands each sampled feed's rows to ``FeatureLog.add`` (a list append under a lock: no
I/O and no model call on the request path); a background thread scores each row at the slot it
was served in (what the click that follows is evidence about: the ranker ranked with every
candidate in the top slot) and writes the rows to rolling Parquet files,
``<folder>/part-<host>-<pid>-<seq>.parquet``, every ``flush_interval_s`` or ``flush_rows`` rows.
The folder is bounded: when its files pass ``max_bytes``, the oldest go. With the exposure log
and the events, the rows give ``feedrec monitor`` its drift, calibration and skew evidence.

A row: ``request_id``, ``time`` (the request's moment, the world's clock), ``as_of`` (the latest
event time the online store had folded in when the feed was logged: how fresh its features were;
null where the store could not say), ``user_id``, ``model_version``, ``surface``, ``item_id``,
``slot``, ``prediction`` and one column per ranker input (NaN where the ranker had none).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from feedrec.logs import get_logger

log = get_logger("featurelog")
POSITION = "position"


@dataclass
class _Sampled:
    request_id: str
    time: float
    user_id: str
    version: str
    surface: str | None
    items: list[str]
    slots: list[int]
    names: list[str]
    matrix: np.ndarray  # (served items, features): the ranker's input, position set to the slot
    predict: Callable[[np.ndarray], np.ndarray]
    as_of: float | None = None  # the online store's latest folded event time (epoch seconds)


class FeatureLog:
    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = 256 * 2**20,
        flush_rows: int = 20_000,
        flush_interval_s: float = 5.0,
    ) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.flush_rows = flush_rows
        self._pending: list[_Sampled] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._seq = 0
        self._prefix = f"part-{socket.gethostname()}-{os.getpid()}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(flush_interval_s,), name="feedrec-featurelog", daemon=True
        )
        self._thread.start()

    def add(
        self,
        *,
        request_id: str,
        time: float,
        user_id: str,
        version: str,
        surface: str | None,
        items: list[str],
        slots: list[int],
        names: list[str],
        matrix: np.ndarray,
        predict: Callable[[np.ndarray], np.ndarray],
        as_of: float | None = None,
    ) -> None:
        """Queue one feed's served rows (``matrix``: one row per item of ``items``, served at ``slots``;
        ``as_of``: the online store's latest folded event time when they were read)."""
        if not items:
            return
        x = np.array(matrix, np.float32)
        if POSITION in names:
            x[:, names.index(POSITION)] = slots
        sampled = _Sampled(request_id, time, user_id, version, surface, items, list(slots), names, x, predict, as_of)
        with self._lock:
            self._pending.append(sampled)
            self._rows += len(items)
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # monitoring must never take serving down; the rows are retried next time
                log.exception("feature log flush failed")

    def flush(self) -> Path | None:
        """Score and write what is queued to a new Parquet file; returns it (None when nothing was)."""
        with self._lock:
            pending, self._pending, self._rows = self._pending, [], 0
        if not pending:
            return None
        frame = _frame(pending)
        with self._write_lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            path = self.folder / f"{self._prefix}-{self._seq:06d}.parquet"
            tmp = path.with_name(f".{path.name}.tmp")
            frame.write_parquet(tmp)
            os.replace(tmp, path)  # readers see a file whole or not at all
            self._enforce_bound()
        return path

    def _enforce_bound(self) -> None:
        files = sorted(self.folder.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for old in files[:-1]:
            if total <= self.max_bytes:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def _frame(pending: list[_Sampled]) -> pl.DataFrame:
    """One frame of every queued feed's rows (columns: the union of their feature names); the
    feeds of one ranker are scored in one call."""
    groups: dict[tuple[tuple[str, ...], int, int], list[_Sampled]] = {}
    for s in pending:  # a bound method is a new object per access: group by its object and function
        owner, func = getattr(s.predict, "__self__", s.predict), getattr(s.predict, "__func__", s.predict)
        groups.setdefault((tuple(s.names), id(owner), id(func)), []).append(s)
    frames = []
    for (names, _, _), group in groups.items():
        x = np.concatenate([s.matrix for s in group])
        sizes = [len(s.items) for s in group]

        def each(values: list[object], sizes: list[int] = sizes) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=object), sizes)

        columns: dict[str, object] = {
            "request_id": each([s.request_id for s in group]),
            "time": _datetimes(each([s.time for s in group])),
            "as_of": _datetimes(each([s.as_of for s in group])),
            "user_id": each([s.user_id for s in group]),
            "model_version": each([s.version for s in group]),
            "surface": pl.Series(each([s.surface for s in group]).tolist(), dtype=pl.Utf8),
            "item_id": [i for s in group for i in s.items],
            "slot": np.concatenate([np.asarray(s.slots, np.int32) for s in group]),
            "prediction": np.asarray(group[0].predict(x), np.float64),
        }
        columns |= {name: x[:, j].astype(np.float64) for j, name in enumerate(names) if name != "surface"}
        frames.append(
            pl.DataFrame(columns).with_columns(pl.col("request_id", "user_id", "model_version").cast(pl.Utf8))
        )
    return pl.concat(frames, how="diagonal_relaxed")


def _datetimes(seconds: np.ndarray) -> pl.Series:
    """Epoch seconds (None: null) as UTC microsecond datetimes (truncated to the microsecond)."""
    micros = [None if v is None else int(float(v) * 1e6) for v in seconds.tolist()]
    return pl.Series(micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def read_feature_log(folder: Path, since: datetime | None = None, until: datetime | None = None) -> pl.DataFrame:
    """Every logged row with ``since <= time < until`` (empty frame when the log has none)."""
    files = sorted(Path(folder).glob("part-*.parquet")) if Path(folder).is_dir() else []
    frames = [pl.read_parquet(f) for f in files]
    if not frames:
        return pl.DataFrame(schema={"request_id": pl.Utf8, "time": pl.Datetime("us", "UTC"), "prediction": pl.Float64})
    frame = pl.concat(frames, how="diagonal_relaxed")
    if since is not None:
        frame = frame.filter(pl.col("time") >= since)
    if until is not None:
        frame = frame.filter(pl.col("time") < until)
    return frame.sort("time", "request_id", "slot")
