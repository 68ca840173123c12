"""Slow values are computed off the request path: a page gets the latest value at once."""

from __future__ import annotations

import threading
import time

from feedrec.dashboard.cache import Refreshing


def _until(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_first_look_starts_the_computation_and_answers_at_once():
    cache = Refreshing(ttl_s=60)
    release = threading.Event()
    calls = []

    def slow() -> int:
        calls.append(1)
        release.wait(5)
        return 42

    assert cache.get("k", slow) is None and cache.pending("k")
    assert cache.get("k", slow) is None  # one computation at a time per key
    release.set()
    _until(lambda: not cache.pending("k"))
    entry = cache.get("k", slow)
    assert entry is not None and entry.value == 42 and entry.error is None and len(calls) == 1
    cache.close()


def test_a_stale_value_is_served_while_it_is_recomputed_and_a_failure_keeps_it():
    cache = Refreshing(ttl_s=0)
    assert cache.get("k", lambda: 1, wait_first=True).value == 1
    _until(lambda: not cache.pending("k"))

    def broken() -> int:
        raise RuntimeError("store unreachable")

    stale = cache.get("k", broken)  # stale at once (ttl 0): answered with the old value, recomputed behind
    assert stale is not None and stale.value == 1
    _until(lambda: not cache.pending("k"))
    failed = cache.get("k", lambda: 3)
    assert failed is not None and failed.value == 1 and "store unreachable" in (failed.error or "")
    _until(lambda: not cache.pending("k"))
    assert cache.get("k", lambda: 3).value == 3
    cache.close()
