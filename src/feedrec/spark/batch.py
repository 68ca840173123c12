"""Batch scoring on Spark: every user's top-k from a bundle, written as Parquet.

The bundle (its model folder, packed once) is broadcast to the executors; each Python worker
unpacks and loads it once, then scores its partitions of users with ``mapInPandas`` in chunks,
exactly as the embedded batch mode does (``Recommender.recommend``: the same rows, the same
columns). The output folder is written by Spark's committer: whole or not at all (a rerun
replaces it); the server reads it as it reads the embedded batch output (``FEEDREC_PRECOMPUTED``).
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedrec.config import BackendsConfig
from feedrec.models.base import PAD_ID, Recommender
from feedrec.registry import ModelRegistry

_SCHEMA = "user_id string, rank int, item_id string, score float, model_version string"
_LOADED: dict[str, Recommender] = {}  # per Python worker: bundle key -> model


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname="model")
    return buffer.getvalue()


def _model(key: str, packed: bytes) -> Recommender:
    if key not in _LOADED:
        target = Path(tempfile.mkdtemp(prefix="feedrec-bundle-"))
        with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
            tar.extractall(target, filter="data")
        _LOADED[key] = Recommender.load(target / "model")
    return _LOADED[key]


def recommend_batch_spark(
    spark: Any, model_path: Path, version: str, users: list[str], out_dir: Path, *, k: int = 50, chunk_size: int = 2_000
) -> dict[str, int]:
    """Write every user's top ``k`` under ``out_dir`` (Parquet parts); returns counts."""
    from pyspark.sql import functions as F

    users = sorted(set(users))
    packed = spark.sparkContext.broadcast(_pack(Path(model_path)))
    key = f"{version}:{Path(model_path).resolve()}"

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _model(key, packed.value)
        for batch in batches:
            ids_all = batch["user_id"].to_numpy().astype(str)
            for start in range(0, ids_all.size, chunk_size):
                chunk = ids_all[start : start + chunk_size]
                ids, scores = model.recommend(chunk, k=k)
                rows, ranks = np.nonzero(ids != PAD_ID)
                yield pd.DataFrame(
                    {
                        "user_id": chunk[rows],
                        "rank": ranks.astype(np.int32),
                        "item_id": ids[rows, ranks].astype(str),
                        "score": scores[rows, ranks].astype(np.float32),
                        "model_version": version,
                    }
                )

    parts = max(1, min(len(users) // chunk_size + 1, 4 * spark.sparkContext.defaultParallelism))
    frame = spark.createDataFrame(pd.DataFrame({"user_id": users})).repartition(parts)
    scored = frame.mapInPandas(score, _SCHEMA).sortWithinPartitions("user_id", "rank")
    scored.write.mode("overwrite").parquet(str(out_dir))
    written = spark.read.parquet(str(out_dir)).agg(F.countDistinct("user_id")).collect()[0][0]
    return {"users": len(users), "chunks": parts, "written": parts, "skipped": 0, "scored_users": int(written)}


def recommend_production_spark(
    registry: ModelRegistry,
    out_dir: Path,
    backends: BackendsConfig,
    *,
    users: list[str] | None = None,
    k: int = 50,
    chunk_size: int = 2_000,
) -> dict[str, int]:
    """``recommend_batch_spark`` for the production bundle: for ``users``, or every user it knows."""
    from feedrec.spark.session import session_for

    if k < 1 or chunk_size < 1:
        raise ValueError("k and chunk size must be at least 1")
    manifest, users = registry.batch_inputs(users)
    spark = session_for(backends)
    return recommend_batch_spark(
        spark, registry.model_dir(manifest.version), manifest.version, users, out_dir, k=k, chunk_size=chunk_size
    )
