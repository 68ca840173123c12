"""The point-in-time feature build as Spark jobs, from the same definitions and the same code.

Every feature is ``compute`` (``feedrec.features.assemble``) over counts of "events of key k in
``[t - w, t)``"; only the counting needs the whole log. So the Spark build runs the shared code
where the rows are, and Spark answers the counts:

1. **Streams**: ``stream_parts`` (the keys each event counts toward) runs on each partition of the
   events (``mapInPandas``), the items' attributes broadcast with it.
2. **Requests**: the queries, cut into blocks, each block run through ``compute`` with a counting
   function that records what it asks (block, call, row, key, time) instead of answering.
3. **Counts**: requests and stream rows are unioned and shuffled by key; a running sum over
   each key's rows in time order (a window function, natively in the JVM) gives C(x), the
   key's events before x, at each request's time t and at t - w for each window it asks: the
   events in ``[t - w, t)`` are the difference. The shuffle by key is the build's one wide step.
4. **Features**: per block, the same ``compute`` again, now answered from the counts in the order
   it asks them (it is deterministic), and the rows it returns are the features.

What moves on a cluster: the events' stream rows and the requests are shuffled by key (step 3),
the counts back by block (step 4); the items table is broadcast; nothing is collected to the
driver. The features equal the embedded builder's exactly (a test), because they are computed by
the same function from the same counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from feedrec.features.assemble import (
    FRAME_COLUMNS,
    QUERY_COLUMNS,
    Recorder,
    Replay,
    compute,
    feature_frame,
    queries_of,
)
from feedrec.features.definitions import FEATURE_NAMES
from feedrec.features.keys import item_lookup, stream_parts

#: Queries per block of steps 2 and 4 at most: one Python call each (~15 request rows per query).
BLOCK = 50_000
_REQUEST_SCHEMA = "block long, call int, j long, key string, ts long, windows array<long>"


def _block_queries(frame: pd.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, Any]:
    queries = pl.from_pandas(frame.sort_values("qid")[["qid", *QUERY_COLUMNS]])
    queries = queries.with_columns(pl.col("timestamp").dt.cast_time_unit("us").dt.replace_time_zone("UTC"))
    q, arrays = queries_of(queries, items)
    return queries, (q, arrays)


def build_features_spark(spark: Any, queries: Any, events: Any, items: pl.DataFrame | None) -> Any:
    """Feature rows (the query columns, then FEATURE_NAMES) for ``queries`` (a Spark DataFrame:
    user_id, item_id, timestamp, surface, position) from ``events`` (a Spark DataFrame of the event
    schema), as a Spark DataFrame with ``qid``: the query's row number in ``queries``' order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    table = item_lookup(items)
    shared = spark.sparkContext.broadcast(table.to_arrow())

    def streams(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        lookup = pl.DataFrame(pl.from_arrow(shared.value))
        for batch in batches:
            frame = pl.from_pandas(batch).with_columns(
                pl.col("timestamp").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
            )
            for _, part in stream_parts(frame, lookup):
                yield part.to_pandas()

    needed = ["user_id", "item_id", "type", "timestamp"]
    stream_rows = events.select(*needed).mapInPandas(streams, "key string, ts long")

    # qid: increasing in the queries' order (not dense); blocks: ranges of it, about BLOCK queries each.
    numbered = queries.select(*QUERY_COLUMNS).withColumn("qid", F.monotonically_increasing_id())
    n_blocks = max(1, -(-numbered.count() // BLOCK), spark.sparkContext.defaultParallelism)
    numbered = numbered.repartitionByRange(n_blocks, "qid").withColumn("block", F.spark_partition_id().cast("long"))
    numbered = numbered.cache()

    def record(frame: pd.DataFrame) -> pd.DataFrame:
        lookup = pl.DataFrame(pl.from_arrow(shared.value))
        _, (_, arrays) = _block_queries(frame, lookup)
        recorder = Recorder()
        compute(arrays, recorder.count, recorder.windows)
        block = int(frame["block"].iloc[0])
        out = [
            pd.DataFrame(
                {
                    "block": block,
                    "call": c,
                    "j": np.arange(len(keys)),
                    "key": keys,
                    "ts": ts,
                    "windows": [windows] * len(keys),
                }
            )
            for c, (keys, ts, windows) in enumerate(recorder.calls)
            if len(keys)
        ]
        return pd.concat(out) if out else pd.DataFrame(columns=["block", "call", "j", "key", "ts", "windows"])

    requests = numbered.groupBy("block").applyInPandas(record, _REQUEST_SCHEMA)

    # Step 3: C(key, x), the events of the key before time x, is a running sum over the key's rows
    # in time order (one sort, then linear); the events in [t - w, t) are C(t) - C(t - w). So each
    # request asks C at t (slot -1) and at t - w for each of its windows (slot i). At equal times an
    # ask sorts before the events, which are then not "before" it. (A bounded range frame,
    # rangeBetween(-w, -1), recounts every row's whole window: quadratic in a popular key.)
    # One pass over the requests (their Python step runs once): offsets [0, *windows], slot = pos - 1.
    offsets = F.concat(F.array(F.lit(0).cast("long")), "windows")
    asks = requests.select("block", "call", "j", "key", "ts", F.posexplode(offsets).alias("pos", "w"))
    asks = asks.select(
        "block", "call", "j", "key", (F.col("ts") - F.col("w")).alias("ts"), (F.col("pos") - 1).alias("slot")
    )
    union = asks.withColumn("event", F.lit(0)).unionByName(
        stream_rows.select(
            F.lit(None).cast("long").alias("block"),
            F.lit(None).cast("int").alias("call"),
            F.lit(None).cast("long").alias("j"),
            "key",
            "ts",
            F.lit(None).cast("int").alias("slot"),
            F.lit(1).alias("event"),
        )
    )
    by_key = Window.partitionBy("key").orderBy("ts", "event").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    before = union.select("block", "call", "j", "slot", "event", F.sum("event").over(by_key).alias("before"))
    before = before.filter(F.col("event") == 0).drop("event")

    def features(frame: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
        lookup = pl.DataFrame(pl.from_arrow(shared.value))
        ordered, (q, arrays) = _block_queries(frame, lookup)
        by_call: dict[int, np.ndarray] = {}
        for call, group in answers.sort_values(["call", "j", "slot"]).groupby("call", sort=True):
            # Per request, C(t) then C(t - w) for each window: the counts are the differences.
            n = int(group["j"].nunique())
            at = group["before"].to_numpy(np.int64).reshape(n, -1)
            by_call[int(call)] = at[:, :1] - at[:, 1:]
        replay = Replay(by_call)
        rows = feature_frame(q, compute(arrays, replay.count, replay.windows))
        rows = rows.with_columns(ordered["qid"].alias("qid"))
        return rows.select("qid", *QUERY_COLUMNS[:3], *FEATURE_NAMES).to_pandas()

    schema = _feature_schema()
    return numbered.groupBy("block").cogroup(before.groupBy("block")).applyInPandas(features, schema)


def _feature_schema() -> str:
    numeric = [f"`{name}` double" for name in FEATURE_NAMES if name != "surface"]
    fields = ["qid long", "user_id string", "item_id string", "timestamp timestamp", *numeric, "surface string"]
    by_name = {f.split(" ")[0].strip("`"): f for f in fields}
    return ", ".join(by_name[n] for n in ["qid", "user_id", "item_id", "timestamp", *FEATURE_NAMES])


def collect_features(frame: Any) -> pl.DataFrame:
    """A feature frame from ``build_features_spark`` in query order, as polars (the embedded form)."""
    table: pa.Table = frame.orderBy("qid").toArrow()
    out = pl.DataFrame(pl.from_arrow(table)).drop("qid")
    numeric = [name for name in FEATURE_NAMES if name != "surface"]
    return out.with_columns(
        pl.col("timestamp").dt.cast_time_unit("us").dt.replace_time_zone("UTC"),
        # pandas -> Arrow (inside Spark's Python workers) turns NaN into null; the features are NaN.
        pl.col(numeric).fill_null(float("nan")),
    ).select(FRAME_COLUMNS)


def features_with_spark(
    queries: pl.DataFrame, events: pl.DataFrame | Any, items: pl.DataFrame | None, spark: Any
) -> pl.DataFrame:
    """``build_features`` (the embedded builder's signature and result) computed by Spark:
    ``events`` is a polars frame or already a Spark DataFrame (a store's ``frame()``)."""
    if isinstance(events, pl.DataFrame):
        events = spark.createDataFrame(events.select("user_id", "item_id", "type", "timestamp").to_arrow())
    frame = build_features_spark(spark, spark.createDataFrame(queries.select(*QUERY_COLUMNS).to_arrow()), events, items)
    return collect_features(frame)
