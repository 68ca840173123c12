from __future__ import annotations

import numpy as np
import polars as pl

from feedrec.config import SimulatorConfig
from feedrec.data.simulator import simulate
from feedrec.schemas import EVENT_SCHEMA, EventType


def test_schema_types_and_order(small_feed):
    ev = small_feed.events
    assert ev.schema == EVENT_SCHEMA
    df = pl.from_arrow(ev)
    assert df["timestamp"].is_sorted()
    assert df["event_id"].n_unique() == df.height
    assert set(df["type"].unique()) <= {t.value for t in EventType}
    assert df.filter(pl.col("type") == "dwell")["value"].min() > 0
    assert small_feed.truth.num_rows == df.filter(pl.col("type") == "impression").height


def test_same_seed_same_feed_other_seed_other_feed():
    cfg = SimulatorConfig(n_users=50, n_items=100, days=3, seed=1)
    a, b = simulate(cfg), simulate(cfg)
    assert a.events.equals(b.events)
    c = simulate(cfg.model_copy(update={"seed": 2}))
    assert not a.events.equals(c.events)


def test_position_bias_clicks_fall_with_position(small_feed):
    df = pl.from_arrow(small_feed.events)
    imp = df.filter(pl.col("type") == "impression").select("request_id", "item_id", "position")
    clicks = df.filter(pl.col("type") == "click").select("request_id", "item_id").with_columns(pl.lit(1).alias("c"))
    ctr = (
        imp.join(clicks, on=["request_id", "item_id"], how="left")
        .group_by("position")
        .agg(pl.col("c").fill_null(0).mean())
        .sort("position")["c"]
        .to_numpy()
    )
    assert ctr[0] > 2 * ctr[-1]


def test_clicks_follow_the_ground_truth(small_feed):
    df = pl.from_arrow(small_feed.events)
    imp = df.filter(pl.col("type") == "impression").join(pl.from_arrow(small_feed.truth), on="event_id")
    clicked = df.filter(pl.col("type") == "click").select("request_id", "item_id").with_columns(pl.lit(1).alias("y"))
    j = imp.join(clicked, on=["request_id", "item_id"], how="left").with_columns(pl.col("y").fill_null(0))
    assert abs(j["y"].mean() - j["p_click"].mean()) < 0.01  # observed CTR equals the model's
    hi = j.filter(pl.col("p_click") > 0.3)["y"].mean()
    lo = j.filter(pl.col("p_click") < 0.05)["y"].mean()
    assert hi > 3 * lo


def test_cold_start_new_users_and_items_arrive(small_feed):
    items = pl.from_arrow(small_feed.items)
    users = pl.from_arrow(small_feed.users)
    start = pl.datetime(2024, 1, 1, time_zone="UTC")
    assert items.filter(pl.col("created_at") > start).height > 0.2 * items.height
    assert users.filter(pl.col("created_at") > start).height > 0.1 * users.height
    ev = pl.from_arrow(small_feed.events).join(items.select("item_id", "created_at"), on="item_id")
    assert (ev["timestamp"] >= ev["created_at"]).all()  # nothing is shown before it is published
    evu = pl.from_arrow(small_feed.events).join(users.select("user_id", "created_at"), on="user_id")
    assert (evu["timestamp"] >= evu["created_at"]).all()


def test_drift_day_changes_the_topic_mix():
    cfg = SimulatorConfig(n_users=400, n_items=500, days=20, seed=3, drift_day=10)
    feed = simulate(cfg)
    ev = pl.from_arrow(feed.events).filter(pl.col("type") == "click")
    topics = pl.from_arrow(feed.items).select("item_id", pl.col("topics").list.first().alias("topic"))
    ev = ev.join(topics, on="item_id").with_columns(
        (pl.col("timestamp") >= pl.datetime(2024, 1, 11, time_zone="UTC")).alias("after")
    )
    share = ev.group_by("after", "topic").len().with_columns(pl.col("len") / pl.col("len").sum().over("after"))
    wide = share.pivot(on="after", index="topic", values="len").fill_null(0)
    tv = 0.5 * np.abs(wide["true"].to_numpy() - wide["false"].to_numpy()).sum()
    assert tv > 0.15  # total variation between the topic mixes before and after the drift
