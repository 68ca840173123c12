"""Values the pages show that cost more than a page may take (an experiment's analysis, the
online CTR over a large event store), computed off the request path.

``Refreshing.get`` answers at once with the latest value and when it was computed; a value older
than its time to live is recomputed by one background thread (one computation per key at a time),
so a page never waits on a slow job and an idle dashboard computes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from feedrec.logs import get_logger

log = get_logger("dashboard")


@dataclass(frozen=True)
class Entry:
    value: Any
    computed_at: str  # ISO time (wall clock) the computation finished
    seconds: float  # how long it took
    error: str | None = None  # the computation failed: the value is the previous one (or None)
    monotonic: float = 0.0


class Refreshing:
    def __init__(self, ttl_s: float, *, name: str = "dashboard") -> None:
        self.ttl_s = ttl_s
        self._entries: dict[Hashable, Entry] = {}
        self._pending: set[Hashable] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"feedrec-{name}")

    def get(self, key: Hashable, compute: Callable[[], Any], *, wait_first: bool = False) -> Entry | None:
        """The latest value of ``key`` (None before the first computation finished, unless
        ``wait_first``: then the first one is computed in the caller's thread)."""
        with self._lock:
            entry = self._entries.get(key)
            stale = entry is None or time.monotonic() - entry.monotonic > self.ttl_s
            if entry is None and wait_first:
                self._pending.add(key)
            elif stale and key not in self._pending:
                self._pending.add(key)
                self._pool.submit(self._compute, key, compute)
        if entry is None and wait_first:
            return self._compute(key, compute)
        return entry

    def pending(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._pending

    def _compute(self, key: Hashable, compute: Callable[[], Any]) -> Entry:
        t = time.perf_counter()
        try:
            value, error = compute(), None
        except Exception as exc:  # shown on the page; the previous value stays
            log.exception("dashboard: computing %s failed", key)
            old = self._entries.get(key)
            value, error = (old.value if old is not None else None), f"{type(exc).__name__}: {exc}"
        entry = Entry(value, datetime.now(UTC).isoformat(), time.perf_counter() - t, error, time.monotonic())
        with self._lock:
            self._entries[key] = entry
            self._pending.discard(key)
        return entry

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
