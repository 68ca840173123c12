"""Two real server processes sharing one real redis-server (FEEDREC_REDIS_URL): state posted to
one is served by the other at once; Redis going away degrades feeds to fallbacks (no 500) and
stores events durably; a kill -9 of a server under load loses no acknowledged event, and the
shared features count each stored event exactly once (equal to the offline builder's)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from feedrec.data.store import LocalEventStore
from feedrec.features.definitions import FEATURE_NAMES
from feedrec.features.offline import build_features
from feedrec.redis import namespace_for
from feedrec.redis.local import LocalRedis
from feedrec.redis.online import RedisOnlineStore
from tests.integration.servers import _start_server, build_workspace

FAST = {"FEEDREC_WATCH_INTERVAL_S": "0", "FEEDREC_TAIL_INTERVAL_S": "0.2"}


@contextlib.contextmanager
def two_servers(ws: Path, redis_url: str) -> Iterator[tuple[str, str, list]]:
    started = [_start_server(ws, FEEDREC_REDIS_URL=redis_url, **FAST) for _ in range(2)]
    try:
        yield started[0][1], started[1][1], [p for p, _ in started]
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


def _last_time(ws: Path) -> str:
    last = LocalEventStore(ws).scan(columns=["timestamp"]).column("timestamp").to_pylist()[-1]
    return last.isoformat()


def _feed(url: str, user: str, k: int = 10) -> dict:
    r = httpx.get(f"{url}/v1/feed", params={"user_id": user, "k": k}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _hide(url: str, event_id: str, user: str, item: str, at: str) -> None:
    event = {"event_id": event_id, "user_id": user, "item_id": item, "timestamp": at, "type": "hide"}
    r = httpx.post(f"{url}/v1/events", json={"events": [event]}, timeout=10)
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text


def test_an_event_posted_to_one_server_changes_the_others_next_feed(tmp_path: Path, redis_server: LocalRedis):
    ws = build_workspace(tmp_path / "ws")
    at = _last_time(ws)
    with two_servers(ws, redis_server.url) as (a, b, _):
        for n in range(5):
            shown = [i["item_id"] for i in _feed(b, "u7")["items"]]
            _hide(a, f"h{n}", "u7", shown[0], at)
            after = [i["item_id"] for i in _feed(b, "u7")["items"]]  # the very next request, on the other
            assert shown[0] not in after and after, (shown, after)


def test_without_redis_feeds_fall_back_and_events_are_stored_then_folded(tmp_path: Path):
    ws = build_workspace(tmp_path / "ws")
    redis = LocalRedis(tmp_path / "redis")
    at = _last_time(ws)
    try:
        with two_servers(ws, redis.url) as (a, b, _):
            before = [i["item_id"] for i in _feed(b, "u9")["items"]]
            redis.kill()
            for n in range(20):  # no 500 while Redis is away: feeds from either, events to either
                assert _feed(a if n % 2 else b, "u9")["items"]
            _hide(a, "away-1", "u9", before[0], at)  # stored durably though Redis is away
            assert "away-1" in LocalEventStore(ws).scan(columns=["event_id"]).column("event_id").to_pylist()
            redis.start()
            deadline = time.monotonic() + 10  # the tail folds what was stored meanwhile
            while before[0] in [i["item_id"] for i in _feed(b, "u9")["items"]]:
                assert time.monotonic() < deadline, "the event stored while Redis was away was never folded"
                time.sleep(0.1)
    finally:
        redis.stop()


def _poster(url: str, prefix: str, at: str, acked: list[str], stop: threading.Event) -> None:
    n = 0
    with httpx.Client(timeout=10) as http:
        while not stop.is_set():
            batch = [
                {"event_id": f"{prefix}-{n}-{i}", "user_id": f"u{i}", "item_id": f"i{i}", "timestamp": at, "type": t}
                for i, t in enumerate(["impression", "click"] * 5)
            ]
            n += 1
            try:
                r = http.post(f"{url}/v1/events", json={"events": batch})
            except httpx.TransportError:
                return
            if r.status_code == 200:
                acked.extend(e["event_id"] for e in batch)


@pytest.mark.parametrize("round_", range(2))
def test_kill_9_of_a_server_under_load_loses_nothing_and_folds_each_event_once(
    tmp_path: Path, redis_server: LocalRedis, round_: int
):
    ws = build_workspace(tmp_path / "ws")
    at = _last_time(ws)
    with two_servers(ws, redis_server.url) as (a, b, procs):
        acked: list[str] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_poster, args=(u, f"p{round_}{u[-5:]}{c}", at, acked, stop))
            for c in range(2)
            for u in (a, b)
        ]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(acked) < 200 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3 + 0.4 * round_)
        procs[0].send_signal(signal.SIGKILL)  # server a dies mid-load, perhaps mid-fold
        procs[0].wait(timeout=10)
        for _ in range(20):  # b goes on serving
            assert _feed(b, "u3")["items"]
        stop.set()
        for t in threads:
            t.join(timeout=20)
        store = LocalEventStore(ws)
        ids = store.scan(columns=["event_id"]).column("event_id").to_pylist()
        assert len(acked) >= 200 and set(acked) <= set(ids) and len(ids) == len(set(ids))
        # b's tail folds whatever a had not: then Redis reflects the store exactly once.
        shared = RedisOnlineStore(
            pl.DataFrame(pl.from_arrow(store.items())), url=redis_server.url, namespace=namespace_for(ws)
        )
        deadline = time.time() + 10
        while shared.meta["position"] < store.position():
            assert time.time() < deadline, "the surviving server did not catch the shared store up"
            time.sleep(0.1)
        events = pl.DataFrame(pl.from_arrow(store.scan()))
        moment = events["timestamp"].max() + timedelta(seconds=1)  # type: ignore[operator]
        queries = pl.DataFrame(
            {
                "user_id": [f"u{i}" for i in range(10)],
                "item_id": [f"i{i}" for i in range(10)],
                "timestamp": [moment] * 10,
                "surface": ["home"] * 10,
                "position": list(range(10)),
            },
            schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "position": pl.Int32},
        )
        online = shared.get_online_features(queries).select(FEATURE_NAMES)
        offline = build_features(queries, events, pl.DataFrame(pl.from_arrow(store.items()))).select(FEATURE_NAMES)
        assert online.equals(offline)
        assert online["user_clicks_1h"].sum() > 0
