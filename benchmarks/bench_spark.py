"""The offline world on two engines: DuckDB/polars in process against Spark ``local[2]``.

    python benchmarks/bench_spark.py [--users 120000 --items 200000 --days 30] [--impressions 2000000]
                                     [--workspace DIR] [--keep-data]

1. Simulate a feed log and ingest it into the embedded store (``feedrec simulate`` / ``ingest``,
   not measured; with the defaults, the ~20-million-event log of the training benchmark).
2. **Feature build**: point-in-time features of the latest ``--impressions`` impressions over the
   whole log, once per engine, each in a fresh process: the embedded ``build_features`` over the
   events read from the store, and ``build_features_spark`` with Spark reading the store's Parquet
   parts itself and writing its result as Parquet. Wall time and the peak resident memory of the
   process tree (Spark's JVM and Python workers included; sampled every 0.5 s). The two results
   are compared row by row, every feature.
3. **Batch scoring**: an ALS model fitted on the log's positives (not measured), every user's top
   50 by the embedded batch mode (2 worker processes) and by Spark (the bundle broadcast,
   ``mapInPandas``): time, peak memory, and the two outputs compared.

Writes benchmarks/results/spark.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from _common import run_measured, simulated_store, write_result

SPARK_CONF = {"spark.driver.memory": "14g", "spark.sql.shuffle.partitions": "64"}


def _events(store: Path) -> pl.DataFrame:
    from feedrec.data.store import LocalEventStore

    return pl.DataFrame(pl.from_arrow(LocalEventStore(store).scan(columns=["user_id", "item_id", "type", "timestamp"])))


def _items(store: Path) -> pl.DataFrame:
    from feedrec.data.store import LocalEventStore

    return pl.DataFrame(pl.from_arrow(LocalEventStore(store).items()))


def step_features(engine: str, store: Path, queries: Path, out: Path) -> None:
    from feedrec.features.assemble import QUERY_COLUMNS

    items = _items(store)
    if engine == "duckdb":
        from feedrec.features.offline import build_features

        build_features(pl.read_parquet(queries), _events(store), items).write_parquet(out)
        return
    from feedrec.data.store import LocalEventStore
    from feedrec.spark.features import build_features_spark
    from feedrec.spark.session import spark_session

    spark = spark_session("local[2]", SPARK_CONF)
    parts = [str(store / "events" / name) for name in LocalEventStore(store).part_names()]
    events = spark.read.parquet(*parts).select("user_id", "item_id", "type", "timestamp")
    frame = build_features_spark(spark, spark.read.parquet(str(queries)).select(*QUERY_COLUMNS), events, items)
    frame.write.mode("overwrite").parquet(str(out))


def step_batch(engine: str, model: Path, users: Path, out: Path) -> None:
    wanted = pl.read_parquet(users)["user_id"].to_list()
    if engine == "duckdb":
        from feedrec.online.batch import recommend_batch

        recommend_batch(model, "bench", wanted, out, k=50, chunk_size=2_000, workers=2)
        return
    from feedrec.spark.batch import recommend_batch_spark
    from feedrec.spark.session import spark_session

    recommend_batch_spark(spark_session("local[2]", SPARK_CONF), model, "bench", wanted, out, k=50, chunk_size=2_000)


def _measure(*args: str) -> dict[str, float]:
    code, seconds, peak = run_measured([sys.executable, __file__, *args])
    if code != 0:
        raise SystemExit(f"step {args[:2]} failed with exit code {code}")
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(peak / 2**30, 2)}


def _read_spark_features(out: Path) -> pl.DataFrame:
    frame = pl.read_parquet(out / "*.parquet").sort("qid").drop("qid")
    numeric = [c for c in frame.columns if frame.schema[c] == pl.Float64]
    return frame.with_columns(pl.col(numeric).fill_null(float("nan")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=120_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--impressions", type=int, default=2_000_000)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/feedrec-bench-spark"))
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--step", nargs=4, help=argparse.SUPPRESS)  # internal: one measured step
    args = parser.parse_args()
    if args.step:
        kind, engine, a, b = args.step
        out = args.workspace / f"{kind}-{engine}"
        (step_features if kind == "features" else step_batch)(engine, Path(a), Path(b), out)
        return 0

    from feedrec.config import FeedrecConfig
    from feedrec.data.interactions import Interactions
    from feedrec.features.definitions import FEATURE_NAMES
    from feedrec.models import build_model

    ws = args.workspace
    start = time.perf_counter()
    store = simulated_store(ws, args.users, args.items, args.days, keep=args.keep_data)
    print(f"store ready after {time.perf_counter() - start:.0f} s", file=sys.stderr)
    events = _events(store)
    n_events = events.height
    queries_path = ws / "queries.parquet"
    from feedrec.data.store import LocalEventStore

    full = pl.DataFrame(pl.from_arrow(LocalEventStore(store).scan(types=["impression"])))
    full.sort("timestamp", maintain_order=True).tail(args.impressions).select(
        "user_id", "item_id", "timestamp", "surface", "position"
    ).write_parquet(queries_path)
    del full

    result: dict[str, object] = {"events": n_events, "queries": args.impressions}
    for engine in ("duckdb", "spark"):
        shutil.rmtree(ws / f"features-{engine}", ignore_errors=True)
        result[f"features_{engine}"] = _measure(
            "--workspace", str(ws), "--step", "features", engine, str(store), str(queries_path)
        )
        print(engine, result[f"features_{engine}"], file=sys.stderr)
    embedded = pl.read_parquet(ws / "features-duckdb")
    spark_built = _read_spark_features(ws / "features-spark")
    result["features_equal"] = bool(
        embedded.height == spark_built.height
        and spark_built.select(FEATURE_NAMES).equals(embedded.select(FEATURE_NAMES))
        and spark_built.select("user_id", "item_id").equals(embedded.select("user_id", "item_id"))
    )
    del embedded, spark_built

    positives = events.filter(pl.col("type").is_in(["click", "like", "share"])).unique(["user_id", "item_id"])
    cfg = FeedrecConfig()
    model = build_model("als", cfg).fit(Interactions.from_frame(positives.select("user_id", "item_id", "timestamp")))
    model_dir = ws / "als"
    shutil.rmtree(model_dir, ignore_errors=True)
    model.save(model_dir)
    users_path = ws / "users.parquet"
    pl.DataFrame({"user_id": sorted(set(positives["user_id"].to_list()))}).write_parquet(users_path)
    del events, positives, model
    result["batch_users"] = pl.read_parquet(users_path).height
    for engine in ("duckdb", "spark"):
        shutil.rmtree(ws / f"batch-{engine}", ignore_errors=True)
        result[f"batch_{engine}"] = _measure(
            "--workspace", str(ws), "--step", "batch", engine, str(model_dir), str(users_path)
        )
        print(engine, result[f"batch_{engine}"], file=sys.stderr)
    local = pl.read_parquet(ws / "batch-duckdb" / "part-*.parquet").sort("user_id", "rank")
    spark_out = pl.read_parquet(ws / "batch-spark" / "*.parquet").sort("user_id", "rank")
    result["batch_equal"] = bool(
        spark_out.select("user_id", "rank", "item_id").equals(local.select("user_id", "rank", "item_id"))
        and np.allclose(spark_out["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    )
    print(json.dumps(result, indent=2))
    write_result("spark", result)
    return 0 if result["features_equal"] and result["batch_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
