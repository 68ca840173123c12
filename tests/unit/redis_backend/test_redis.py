"""The Redis backend's own behaviour, against a real redis-server: precomputed feeds loaded once
and served like the embedded ones, keys that expire, namespaces that do not collide, and a Redis
that lost its data refilled from the event store, a breaker that stops asking a Redis that is away."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import redis

from feedrec.config import BackendsConfig
from feedrec.models.retrieval.covisit import CovisitRecommender
from feedrec.online.batch import PrecomputedFeeds, recommend_batch
from feedrec.online.service import Bundle, FeedService
from feedrec.redis import namespace_for
from feedrec.redis.feeds import RedisPrecomputedFeeds
from feedrec.redis.online import RedisOnlineStore, RedisUnavailable
from feedrec.testing import ITEMS, sample_stream
from tests.conftest import make_interactions


def test_precomputed_feeds_in_redis_are_loaded_once_and_served_like_the_embedded(tmp_path: Path, redis_server):
    data = make_interactions(n_users=12, n_items=30)
    model = CovisitRecommender().fit(data)
    model.save(tmp_path / "model")
    recommend_batch(tmp_path / "model", "v7", ["u1", "u2", "u3"], tmp_path / "recs", k=6, workers=1)
    local = PrecomputedFeeds(tmp_path / "recs")
    first = RedisPrecomputedFeeds(tmp_path / "recs", url=redis_server.url, namespace="t-pre:")
    second = RedisPrecomputedFeeds(tmp_path / "recs", url=redis_server.url, namespace="t-pre:")  # finds it loaded
    assert first.load_id == second.load_id and second.version == local.version == "v7"
    for user in ("u1", "u2", "u3"):
        items, scores = second.get(user, 4)  # type: ignore[misc]
        want_items, want_scores = local.get(user, 4)  # type: ignore[misc]
        assert items == want_items and [round(s, 5) for s in scores] == [round(s, 5) for s in want_scores]
    assert second.get("nobody", 4) is None
    backends = BackendsConfig(online_store="redis", redis_url=redis_server.url)
    service = FeedService(tmp_path / "ws", precomputed=tmp_path / "recs", backends=backends)
    service._bundle = Bundle("v8", model)
    feed = service.feed("u1", 3)
    assert [i.source for i in feed.items] == ["precomputed"] * 3 and feed.model_version == "v7"
    service.close()


def test_keys_expire_and_namespaces_do_not_collide(tmp_path: Path, redis_server):
    one = RedisOnlineStore(ITEMS, url=redis_server.url, namespace=namespace_for(tmp_path / "a"), ttl_s=1000)
    other = RedisOnlineStore(ITEMS, url=redis_server.url, namespace=namespace_for(tmp_path / "b"))
    one.update(sample_stream(50))
    keys = list(one.client.scan_iter(match=f"{one.ns}s:*"))
    assert keys and all(0 < one.client.ttl(k) <= 1000 for k in keys)
    assert other.event_time() is None and other.recent_items("u1") == []
    assert one.clear() > 0 and one.event_time() is None


def test_a_redis_that_lost_its_data_is_refilled_from_the_event_store(tmp_path: Path, redis_server):
    events = sample_stream(200, seed=4)
    log = events.to_arrow()

    def read_since(position: int) -> tuple[pa.Table, int]:
        return (log if position < 1 else log.slice(0, 0)), 1

    store = RedisOnlineStore(ITEMS, url=redis_server.url, namespace="t-refill:")
    assert store.catch_up(read_since) == 200
    before = store.recent_items("u1"), store.event_time()
    store.clear()  # what a restart without persistence leaves
    assert store.meta["position"] == 0
    assert store.catch_up(read_since) == 200
    assert (store.recent_items("u1"), store.event_time()) == before
    assert pl.Series(store.recent_items("u1")).n_unique() == len(before[0])


def test_a_redis_that_went_away_is_not_asked_again_until_the_breaker_cools_down(tmp_path: Path):
    """After a failed read, the store's reads fail at once (RedisUnavailable, Redis not asked)
    for breaker_s; then one goes through again, and once Redis is back the answers are as before."""
    from feedrec.redis.local import LocalRedis

    server = LocalRedis(tmp_path / "redis")
    try:
        store = RedisOnlineStore(ITEMS, url=server.url, namespace="t-breaker:", breaker_s=0.5)
        store.update(sample_stream(100, seed=2))
        ts = int(store.event_time() * 1_000_000) + 1  # type: ignore[operator]
        before = store.request_features("u1", np.asarray(["a", "b"]), ts, "home", 0)
        server.kill()
        with pytest.raises(redis.ConnectionError) as first:
            store.request_features("u1", np.asarray(["a", "b"]), ts, "home", 0)
        assert not isinstance(first.value, RedisUnavailable)  # this one asked Redis
        for read in (lambda: store.recent_items("u1"), store.event_time):
            with pytest.raises(RedisUnavailable):  # these did not: the breaker is open
                read()
        server.start()  # it reloads its append-only file
        time.sleep(0.6)
        after = store.request_features("u1", np.asarray(["a", "b"]), ts, "home", 0)
        assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k], equal_nan=True) for k in after)
    finally:
        server.stop()


def test_a_post_is_folded_from_memory_and_counts_as_a_fold_read_back_from_the_store(tmp_path: Path, redis_server):
    """A server folds its own append into Redis without reading it back (``AppendResult.written``);
    when another process appended first, the store is read (both appends folded). Either way the
    features equal a fold of the whole store read back into another namespace."""
    from feedrec.data.store import LocalEventStore
    from feedrec.schemas import EVENT_SCHEMA, Event

    ws = tmp_path / "ws"
    LocalEventStore(ws).put_items(ITEMS.with_columns(text=pl.lit(None, pl.Utf8)).to_arrow())
    backends = BackendsConfig(online_store="redis", redis_url=redis_server.url, redis_namespace="t-own:")
    service = FeedService(ws, backends=backends)
    reads: list[int] = []
    read_since = service.store.read_since
    service.store.read_since = lambda position, **kw: reads.append(position) or read_since(position, **kw)  # type: ignore[method-assign]
    stream = sample_stream(60, seed=9).with_columns(event_id=pl.format("e{}", pl.int_range(60)))
    posts = [[Event(**row) for row in part.to_dicts()] for part in stream.iter_slices(20)]
    try:
        assert service.ingest(posts[0]) == (20, 0) and reads == []  # its own append: from memory
        before = service.store.position()
        other = pl.DataFrame([e.model_dump() for e in posts[1]]).to_arrow().select(EVENT_SCHEMA.names)
        LocalEventStore(ws).append(other.cast(EVENT_SCHEMA))  # another process's append, not yet folded
        assert service.ingest(posts[2]) == (20, 0) and reads == [before]  # read from the store: both folded
        assert service.features.meta["position"] == service.store.position()
        reference = RedisOnlineStore(ITEMS, url=redis_server.url, namespace="t-own-ref:")
        assert reference.catch_up(service.store.read_since) == 60
        at = int(stream["timestamp"].max().timestamp() * 1e6) + 60_000_000  # type: ignore[union-attr]
        for user in ("u1", "u2"):
            got = service.features.request_features(user, np.array(["a", "b", "c"]), at, "home", 0)
            want = reference.request_features(user, np.array(["a", "b", "c"]), at, "home", 0)
            np.testing.assert_equal(got, want)  # NaN where both have no value
            assert got["user_impressions_7d"].max() > 0 and got["creator_clicks_7d"][0] > 0
            assert service.features.recent_items(user) == reference.recent_items(user)
        assert service.features.event_time() == reference.event_time()
    finally:
        service.close()
