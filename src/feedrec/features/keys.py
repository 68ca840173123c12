"""What each feature counts, as (key, timestamp) event streams, shared by the offline and online sides.

A key is a string such as ``user|u17|click`` or ``aff_topic|u17|t3``; counting a key's events in
``[t - w, t)`` gives every counter and affinity numerator. Building the streams in one place is
what makes offline and online agree.
"""

from __future__ import annotations

from collections.abc import Iterator

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


def stream_plans(events: pl.DataFrame, items: pl.DataFrame) -> list[tuple[str, pl.LazyFrame]]:
    """(prefix, plan of (key, ts) rows) for each kind of key: ts in epoch microseconds, and every
    key of a part starts with ``prefix|``. Each plan reads only the columns it needs (at tens of
    millions of events, a copy of the log joined to every item attribute costs gigabytes)."""
    ts = pl.col("timestamp").dt.epoch("us").alias("ts")

    def key(*parts: str | pl.Expr) -> pl.Expr:
        return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts]).alias("key")

    log = events.lazy()
    creators = items.lazy().select("item_id", "creator_id").filter(pl.col("creator_id").is_not_null())
    engaged = log.filter(pl.col("type").is_in(ENGAGED_TYPES)).select("user_id", "item_id", ts)
    topics = items.lazy().select("item_id", "topics")
    return [
        ("user", log.select(key("user|", pl.col("user_id"), "|", pl.col("type")), ts)),
        ("item", log.select(key("item|", pl.col("item_id"), "|", pl.col("type")), ts)),
        (
            "user_item",
            log.filter(pl.col("type") == "impression").select(
                key("user_item|", pl.col("user_id"), "|", pl.col("item_id"), "|", pl.col("type")), ts
            ),
        ),
        (
            "creator",
            log.select("item_id", "type", ts)
            .join(creators, on="item_id", how="inner")
            .select(key("creator|", pl.col("creator_id"), "|", pl.col("type")), "ts"),
        ),
        ("engaged", engaged.select(key("engaged|", pl.col("user_id")), "ts")),
        (
            "aff_creator",
            engaged.join(creators, on="item_id", how="inner").select(
                key("aff_creator|", pl.col("user_id"), "|", pl.col("creator_id")), "ts"
            ),
        ),
        (
            "aff_topic",
            engaged.join(topics, on="item_id", how="inner")
            .explode("topics")
            .filter(pl.col("topics").is_not_null())
            .select(key("aff_topic|", pl.col("user_id"), "|", pl.col("topics")), "ts"),
        ),
        (
            "imp_topic",
            log.filter(pl.col("type") == "impression")
            .select("user_id", "item_id", ts)
            .join(topics, on="item_id", how="inner")
            .explode("topics")
            .filter(pl.col("topics").is_not_null())
            .select(key("imp_topic|", pl.col("user_id"), "|", pl.col("topics")), "ts"),
        ),
    ]


def stream_parts(events: pl.DataFrame, items: pl.DataFrame) -> Iterator[tuple[str, pl.DataFrame]]:
    """Each of ``stream_plans`` run, one part at a time (what a large log is built with: one part's
    rows in memory at once)."""
    for prefix, plan in stream_plans(events, items):
        yield prefix, plan.collect()


def event_streams(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """(key, ts) rows, ts in epoch microseconds, for every counted event (all parts together, in
    the parts' order): one query, as a server folds a POST's few events (run part by part, the
    parts' two dozen operations each cost more than the rows: ~5.6 -> ~1 ms for one event)."""
    return pl.concat([plan for _, plan in stream_plans(events, items)]).collect()
