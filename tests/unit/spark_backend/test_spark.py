"""The Spark engine against the embedded one, on the same events: the point-in-time features are
equal (every feature, every row), and batch scoring writes the same feeds. Spark runs for real,
in local mode on the machine's Java."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from feedrec.config import BackendsConfig, SimulatorConfig
from feedrec.data.interactions import Interactions
from feedrec.data.simulator import simulate
from feedrec.features.definitions import FEATURE_NAMES
from feedrec.features.offline import build_features
from feedrec.models.retrieval.covisit import CovisitRecommender
from feedrec.offline.ranking_eval import feature_builder, impression_dataset
from feedrec.online.batch import recommend_batch
from feedrec.spark.batch import recommend_batch_spark
from feedrec.spark.features import features_with_spark
from feedrec.spark.session import spark_session
from feedrec.spark.store import SparkEventStore


@pytest.fixture(scope="module")
def spark():
    return spark_session("local[2]")


@pytest.fixture(scope="module")
def world():
    feed = simulate(SimulatorConfig(n_users=120, n_items=250, days=6, seed=3))
    return pl.DataFrame(pl.from_arrow(feed.events)), pl.DataFrame(pl.from_arrow(feed.items))


def test_spark_features_equal_the_embedded_builders(spark, world):
    events, items = world
    impressions = events.filter(pl.col("type") == "impression")
    # The log's own impressions (events at exactly the query's time must not count), plus a user and
    # an item nobody has seen, an item without a creator, and a moment after the log.
    extra = pl.DataFrame(
        {
            "user_id": ["nobody", impressions["user_id"][0], impressions["user_id"][1]],
            "item_id": [impressions["item_id"][0], "no-such-item", impressions["item_id"][2]],
            "timestamp": [events["timestamp"].max() + timedelta(hours=h) for h in (1, 2, 30)],  # type: ignore[operator]
            "surface": ["home", None, "search"],
            "position": [0, 3, None],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "position": pl.Int32},
    )
    queries = pl.concat([impressions.select(extra.columns).cast(extra.schema), extra])
    embedded = build_features(queries, events, items)
    spark_built = features_with_spark(queries, events, items, spark)
    assert spark_built.height == queries.height
    assert spark_built.select("user_id", "item_id", "timestamp").equals(
        queries.select("user_id", "item_id", "timestamp")
    )
    assert spark_built.select(FEATURE_NAMES).equals(embedded.select(FEATURE_NAMES))
    # Not vacuous: the counters count something, and differ across rows.
    assert spark_built["user_impressions_30d"].sum() > 0 and spark_built["item_ctr_7d"].n_unique() > 10


def test_the_configured_engine_builds_the_ranking_set(spark, world):
    events, items = world
    builder = feature_builder(BackendsConfig(engine="spark", spark_master="local[2]"))
    with_spark = impression_dataset(events, items, max_impressions=800, builder=builder)
    embedded = impression_dataset(events, items, max_impressions=800)
    assert with_spark.equals(embedded) and with_spark.height == 800


def test_spark_reads_the_store_it_writes_and_builds_from_it(spark, world, tmp_path: Path):
    events, items = world
    store = SparkEventStore(tmp_path, master="local[2]")
    half = events.height // 2
    store.append(events.head(half).to_arrow())
    store.append(events.to_arrow())  # the first half again: stored once
    assert store.count() == events.height
    queries = (
        events.filter(pl.col("type") == "impression")
        .tail(300)
        .select("user_id", "item_id", "timestamp", "surface", "position")
    )
    from_store = features_with_spark(queries, store.frame(), items, spark)
    assert from_store.select(FEATURE_NAMES).equals(build_features(queries, events, items).select(FEATURE_NAMES))
    dates = sorted(p.name for p in (tmp_path / "events_by_date").glob("date=*"))
    assert len(dates) >= 6  # partitioned by event date


def test_spark_batch_scoring_writes_the_embedded_feeds(spark, world, tmp_path: Path):
    events, _ = world
    clicks = events.filter(pl.col("type") == "click")
    model = CovisitRecommender().fit(Interactions.from_frame(clicks))
    model.save(tmp_path / "model")
    users = sorted(set(clicks["user_id"].to_list()))[:90]
    recommend_batch(tmp_path / "model", "v0007", users, tmp_path / "embedded", k=10, chunk_size=40, workers=1)
    result = recommend_batch_spark(spark, tmp_path / "model", "v0007", users, tmp_path / "spark", k=10, chunk_size=40)
    assert result["scored_users"] == len(users)

    def read(folder: Path) -> pl.DataFrame:
        frame = pl.concat([pl.read_parquet(p) for p in sorted(folder.glob("part-*.parquet"))])
        return frame.sort("user_id", "rank")

    embedded, spark_out = read(tmp_path / "embedded"), read(tmp_path / "spark")
    assert spark_out.select("user_id", "rank", "item_id", "model_version").equals(
        embedded.select("user_id", "rank", "item_id", "model_version")
    )
    assert np.allclose(spark_out["score"].to_numpy(), embedded["score"].to_numpy())
