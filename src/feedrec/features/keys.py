"""What each feature counts, as (key, timestamp) event streams, shared by the offline and online sides.

A key is a string such as ``user|u17|click`` or ``aff_topic|u17|t3``; counting a key's events in
``[t - w, t)`` gives every counter and affinity numerator. Building the streams in one place is
what makes offline and online agree.
"""

from __future__ import annotations

import polars as pl

from feedrec.features.definitions import ENGAGED_TYPES


def item_lookup(items: pl.DataFrame | None) -> pl.DataFrame:
    """item_id -> creator_id, topics (list), created_at; empty when no items table."""
    if items is None or items.height == 0:
        return pl.DataFrame(
            schema={
                "item_id": pl.Utf8,
                "creator_id": pl.Utf8,
                "topics": pl.List(pl.Utf8),
                "created_at": pl.Datetime("us", "UTC"),
            }
        )
    return items.select("item_id", "creator_id", "topics", "created_at")


def event_streams(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """(key, ts) rows, ts in epoch microseconds, for every counted event."""
    ev = events.select("user_id", "item_id", "type", pl.col("timestamp").dt.epoch("us").alias("ts")).join(
        items.select("item_id", "creator_id", "topics"), on="item_id", how="left"
    )
    engaged = ev.filter(pl.col("type").is_in(ENGAGED_TYPES))
    parts = [
        ev.select(pl.concat_str([pl.lit("user|"), "user_id", pl.lit("|"), "type"]).alias("key"), "ts"),
        ev.select(pl.concat_str([pl.lit("item|"), "item_id", pl.lit("|"), "type"]).alias("key"), "ts"),
        ev.filter(pl.col("creator_id").is_not_null()).select(
            pl.concat_str([pl.lit("creator|"), "creator_id", pl.lit("|"), "type"]).alias("key"), "ts"
        ),
        engaged.select(pl.concat_str([pl.lit("engaged|"), "user_id"]).alias("key"), "ts"),
        engaged.filter(pl.col("creator_id").is_not_null()).select(
            pl.concat_str([pl.lit("aff_creator|"), "user_id", pl.lit("|"), "creator_id"]).alias("key"), "ts"
        ),
        engaged.explode("topics")
        .filter(pl.col("topics").is_not_null())
        .select(pl.concat_str([pl.lit("aff_topic|"), "user_id", pl.lit("|"), "topics"]).alias("key"), "ts"),
    ]
    return pl.concat(parts)
