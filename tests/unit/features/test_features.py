from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedrec.config import SimulatorConfig
from feedrec.data.simulator import simulate
from feedrec.features.definitions import COUNTERS, FEATURE_NAMES, WINDOWS, schema_hash
from feedrec.features.offline import build_features
from feedrec.features.online import LocalOnlineStore
from feedrec.testing import ITEMS, T0  # the conformance suite's three items, shared


def _events(rows: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "timestamp": [T0 + timedelta(minutes=r[3]) for r in rows],
            "surface": ["home"] * len(rows),
            "position": [0] * len(rows),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "position": pl.Int32},
    )


event_rows = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["impression", "click", "like", "hide"]),
        st.integers(0, 3 * 24 * 60),  # minutes over three days: every window is exercised
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(rows=event_rows, future=event_rows)
def test_no_training_row_sees_an_event_at_or_after_its_own_time(rows, future):
    events = _events(rows)
    queries = events.filter(pl.col("type") == "impression")
    if queries.height == 0:
        return
    features = build_features(queries, events, ITEMS)
    # 1. Each counter equals a naive count of strictly earlier events within its window.
    for q, row in zip(queries.iter_rows(named=True), features.iter_rows(named=True), strict=True):
        t = q["timestamp"]
        for c in COUNTERS:
            if c.entity == "creator":
                continue
            cols = {"user": ["user_id"], "item": ["item_id"], "user_item": ["user_id", "item_id"]}[c.entity]
            naive = sum(
                1
                for e in events.iter_rows(named=True)
                if all(e[col] == q[col] for col in cols)
                and e["type"] == c.event_type
                and t - timedelta(seconds=WINDOWS[c.window]) <= e["timestamp"] < t
            )
            assert row[c.name] == naive, (c.name, t)
    # 2. Events at or after the latest query's time change nothing that came before.
    last = queries["timestamp"].max()
    later = _events(future).with_columns(pl.col("timestamp") - pl.col("timestamp").min() + last)  # type: ignore[operator]
    again = build_features(queries, pl.concat([events, later]), ITEMS)
    assert features.select(FEATURE_NAMES).equals(again.select(FEATURE_NAMES))


def test_affinities_and_missing_values():
    events = _events(
        [("u1", "a", "click", 0), ("u1", "b", "like", 1), ("u1", "c", "click", 2), ("u1", "b", "impression", 10)]
    )
    row = build_features(events.tail(1), events, ITEMS).row(0, named=True)
    # three engaged events before: a (t1, x), b (t1+t2, x), c (t2, no creator)
    assert row["user_topic_affinity_30d"] == pytest.approx(2 / 3)  # t1 and t2 each got 2 of 3
    assert row["user_creator_affinity_30d"] == pytest.approx(2 / 3)
    assert row["item_age_days"] == pytest.approx(10 / 60 / 24)
    no_creator = build_features(_events([("u1", "c", "impression", 5)]), events, ITEMS).row(0, named=True)
    assert np.isnan(no_creator["user_creator_affinity_30d"]) and np.isnan(no_creator["creator_clicks_7d"])
    assert row["user_ctr_30d"] == pytest.approx((2 + 20 * 0.1) / (0 + 20))


def test_topic_exposure_is_the_share_of_the_users_impressions_on_the_items_topics():
    events = _events(
        [("u1", "a", "impression", 0), ("u1", "c", "impression", 1), ("u1", "c", "impression", 2),
         ("u1", "a", "click", 3), ("u2", "a", "impression", 4), ("u1", "b", "impression", 10)]
    )  # fmt: skip
    rows = build_features(events.tail(1), events, ITEMS).row(0, named=True)
    # u1's three earlier impressions: a (t1), c (t2), c (t2); b's topics are t1 and t2: the larger share.
    assert rows["user_topic_exposure_30d"] == pytest.approx(2 / 3)
    queries = _events([("u1", "a", "impression", 10), ("u2", "c", "impression", 10), ("u3", "a", "impression", 10)])
    shares = build_features(queries, events, ITEMS)["user_topic_exposure_30d"].to_list()
    assert shares == pytest.approx([1 / 3, 0.0, 0.0])  # u2 was shown a (t1) only; u3 nothing


@pytest.fixture(scope="module")
def feed():
    return simulate(SimulatorConfig(n_users=200, n_items=400, days=10, seed=5))


def test_offline_and_online_agree_at_the_same_moment(feed, tmp_path: Path):
    events = pl.from_arrow(feed.events)
    items = pl.from_arrow(feed.items)
    impressions = events.filter(pl.col("type") == "impression")
    cut = impressions["timestamp"].sort()[int(impressions.height * 0.7)]
    queries = impressions.filter(pl.col("timestamp") >= cut).head(200)
    # The online store has seen every event before the cut, in two incremental batches.
    before = events.filter(pl.col("timestamp") < cut)
    store = LocalOnlineStore(items, path=tmp_path / "online.parquet")
    store.update(before.head(before.height // 2))
    store.update(before.tail(before.height - before.height // 2))
    at_cut = queries.with_columns(pl.lit(cut).alias("timestamp"))
    online = store.get_online_features(at_cut)
    offline = build_features(at_cut, events, items)
    assert online.select(FEATURE_NAMES).equals(offline.select(FEATURE_NAMES))
    # It survives a restart.
    store.save()
    reloaded = LocalOnlineStore(items, path=tmp_path / "online.parquet")
    assert len(reloaded) == len(store)
    assert reloaded.get_online_features(at_cut).select(FEATURE_NAMES).equals(online.select(FEATURE_NAMES))


def test_online_store_prunes_beyond_the_longest_window_and_checks_names(feed):
    events = pl.from_arrow(feed.events)
    store = LocalOnlineStore(pl.from_arrow(feed.items))
    store.update(events)
    horizon = events["timestamp"].max() - timedelta(seconds=max(WINDOWS.values()))  # type: ignore[operator]
    assert all(min(t) >= horizon.timestamp() * 1e6 - 1 for t in store._streams.values())
    with pytest.raises(ValueError, match="unknown feature"):
        store.get_online_features(events.head(1), ["user_ctr_forever"])


def test_schema_hash_is_stable():
    assert schema_hash() == schema_hash() and len(schema_hash()) == 16


def test_window_counts_over_many_keys_and_a_long_span_match_a_naive_count():
    """Thousands of keys over a century in microseconds would overflow a (key, microsecond) int64
    index; the counts must still be exact: events strictly before t and at or after t - w, for
    calls of one kind of key and of several."""
    from feedrec.features.offline import _SortedStreams, _StreamIndex

    rng = np.random.default_rng(0)
    century_us = 100 * 365 * 86_400 * 1_000_000
    keys = np.array([f"{kind}|k{n:05d}" for kind in ("user", "item") for n in range(1500)])
    ev_key = rng.choice(keys, 20_000)
    ev_ts = rng.integers(0, century_us, 20_000)
    ev_ts[:50] = ev_ts[50:100]  # ties with other events
    index = _StreamIndex.__new__(_StreamIndex)
    index.parts = {
        kind: _SortedStreams(pl.DataFrame({"key": ev_key, "ts": ev_ts}).filter(pl.col("key").str.starts_with(kind)))
        for kind in ("user", "item")
    }
    q_key = np.concatenate([rng.choice(keys, 300), ["user|unknown", "other|k00001"]])
    q_ts = rng.integers(0, century_us, q_key.size)
    q_ts[:20] = ev_ts[:20]  # queries at an event's own time: that event does not count
    window = 30 * 365 * 86_400 * 1_000_000
    naive = np.array(
        [((ev_key == k) & (ev_ts < t) & (ev_ts >= t - window)).sum() for k, t in zip(q_key, q_ts, strict=True)]
    )
    assert naive.sum() > 0
    np.testing.assert_array_equal(index.count(q_key, q_ts, window), naive)  # mixed kinds
    users = np.char.startswith(q_key, "user|")
    np.testing.assert_array_equal(index.count(q_key[users], q_ts[users], window), naive[users])  # one kind


def test_a_request_gets_the_same_features_from_the_fast_path_as_from_the_frame(feed):
    """``request_features`` (one user, many candidates, no frame) equals the builder's rows."""
    events = pl.from_arrow(feed.events)
    items = pl.from_arrow(feed.items)
    store = LocalOnlineStore(items)
    cut = events["timestamp"].sort()[int(events.height * 0.8)]
    store.update(events.filter(pl.col("timestamp") < cut))
    user = events.filter(pl.col("timestamp") < cut)["user_id"][-1]
    candidates = np.asarray([*items["item_id"].head(40).to_list(), "no-such-item"])
    ts_us = int(cut.timestamp() * 1_000_000) - 1_000_000 + 123  # off the second: hour and weekday still agree
    fast = store.request_features(user, candidates, ts_us, "home", 0)
    queries = pl.DataFrame(
        {
            "user_id": [user] * candidates.size,
            "item_id": candidates.tolist(),
            "timestamp": pl.Series([ts_us] * candidates.size).cast(pl.Datetime("us", "UTC")),
            "surface": ["home"] * candidates.size,
            "position": [0] * candidates.size,
        }
    )
    frame = build_features(queries, events, items)
    for name in FEATURE_NAMES:
        if name != "surface":
            np.testing.assert_array_equal(fast[name], frame[name].cast(pl.Float64).to_numpy(), err_msg=name)
    # The arithmetic hour and ISO weekday are polars' own.
    when = queries["timestamp"]
    assert fast["hour"][0] == when.dt.hour()[0] and fast["weekday"][0] == when.dt.weekday()[0]
    assert np.isnan(fast["item_age_days"][-1]) and np.isnan(fast["creator_ctr_7d"][-1])  # an unknown item


def test_features_known_before_a_cutoff_equal_the_builder_on_the_events_before_it():
    """``known_before``: each query's features from only the events before its cutoff (windows
    still ending at the query's moment) equal the builder run on just those events, query by query."""
    feed = simulate(SimulatorConfig(n_users=40, n_items=60, days=3, seed=4))
    events = pl.DataFrame(pl.from_arrow(feed.events))
    items = pl.DataFrame(pl.from_arrow(feed.items))
    rng = np.random.default_rng(0)
    picked = events.filter(pl.col("type") == "impression").sample(30, seed=1).sort("timestamp")
    queries = picked.select("user_id", "item_id", "timestamp", "surface", "position")
    lags = rng.choice([0, 60, 1800, 4 * 3600, 3 * 86400], size=queries.height)  # seconds, up to before the log
    cutoffs = (queries["timestamp"] - pl.Series([timedelta(seconds=int(s)) for s in lags])).alias("cutoff")
    got = build_features(queries, events, items, known_before=cutoffs)
    want = pl.concat(
        [
            build_features(queries[i : i + 1], events.filter(pl.col("timestamp") < cutoffs[i]), items)
            for i in range(queries.height)
        ]
    )
    for name in FEATURE_NAMES:
        if name == "surface":
            continue
        np.testing.assert_allclose(
            got[name].cast(pl.Float64).to_numpy(), want[name].cast(pl.Float64).to_numpy(), equal_nan=True, err_msg=name
        )
    counts = [n for n in FEATURE_NAMES if n.endswith("_7d") and "ctr" not in n]
    cut, full = got.select(counts).to_numpy(), build_features(queries, events, items).select(counts).to_numpy()
    assert (cut <= full).all() and (cut < full).any() and cut.sum() > 0  # fewer events, not none
