"""Batch mode: precompute every user's top-k into Parquet, in parallel, resumable.

Users are cut into chunks; each chunk is written as its own part file (temp file, then rename), so
an interrupted run leaves only whole parts behind and a rerun skips them. Workers are processes,
each loading the bundle once. The API can serve from the result (``FEEDREC_PRECOMPUTED``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from feedrec.models.base import PAD_ID, Recommender
from feedrec.registry import ModelRegistry

_MODEL: Recommender | None = None


def _init_worker(model_path: str) -> None:
    global _MODEL
    _MODEL = Recommender.load(model_path)


def _write_chunk(users: list[str], k: int, out: str, version: str) -> int:
    assert _MODEL is not None
    ids, scores = _MODEL.recommend(np.asarray(users), k=k)
    rows, ranks = np.nonzero(ids != PAD_ID)
    frame = pl.DataFrame(
        {
            "user_id": np.asarray(users)[rows],
            "rank": ranks.astype(np.int32),
            "item_id": ids[rows, ranks],
            "score": scores[rows, ranks].astype(np.float32),
            "model_version": np.full(rows.size, version),
        }
    )
    tmp = Path(out).with_suffix(".tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, out)  # a part exists whole or not at all
    return len(users)


def recommend_batch(
    model_path: Path,
    version: str,
    users: list[str],
    out_dir: Path,
    *,
    k: int = 50,
    chunk_size: int = 2_000,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write ``out_dir/part-NNNNN.parquet`` for every chunk not yet written; returns counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    users = sorted(set(users))
    chunks = [users[i : i + chunk_size] for i in range(0, len(users), chunk_size)]
    todo = [(n, c) for n, c in enumerate(chunks) if not (out_dir / f"part-{n:05d}.parquet").exists()]
    done_users = sum(len(c) for n, c in enumerate(chunks) if (out_dir / f"part-{n:05d}.parquet").exists())
    if progress:
        progress(done_users, len(users))
    # spawn, not fork: forking a process that already runs torch/OpenMP threads can deadlock the child.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(str(model_path),)
    ) as pool:
        futures = [pool.submit(_write_chunk, c, k, str(out_dir / f"part-{n:05d}.parquet"), version) for n, c in todo]
        for future in as_completed(futures):
            done_users += future.result()
            if progress:
                progress(done_users, len(users))
    return {"users": len(users), "chunks": len(chunks), "written": len(todo), "skipped": len(chunks) - len(todo)}


class Precomputed(Protocol):
    """Batch mode's feeds as the server reads them (``PrecomputedFeeds``, or Redis's)."""

    version: str

    def get(self, user_id: str, k: int) -> tuple[list[str], list[float]] | None: ...


class PrecomputedFeeds:
    """Serve from a batch result: user -> (items, scores), read once into memory."""

    def __init__(self, folder: Path) -> None:
        parts = sorted(Path(folder).glob("part-*.parquet"))
        if not parts:
            raise FileNotFoundError(f"no precomputed parts in {folder}: run `feedrec recommend-batch` first")
        frame = pl.concat([pl.read_parquet(p) for p in parts]).sort(["user_id", "rank"])
        self.version = str(frame["model_version"][0]) if frame.height else ""
        self._feeds = {
            user: (items, scores)
            for user, items, scores in frame.group_by("user_id", maintain_order=True)
            .agg("item_id", "score")
            .iter_rows()
        }

    def get(self, user_id: str, k: int) -> tuple[list[str], list[float]] | None:
        found = self._feeds.get(user_id)
        return None if found is None else (found[0][:k], found[1][:k])


def recommend_production(
    registry: ModelRegistry,
    out_dir: Path,
    *,
    users: list[str] | None = None,
    k: int = 50,
    chunk_size: int = 2_000,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """``recommend_batch`` for the production bundle: for ``users``, or every user it knows."""
    if k < 1 or workers < 1 or chunk_size < 1:
        raise ValueError("k, workers and chunk size must be at least 1")
    manifest, users = registry.batch_inputs(users)
    return recommend_batch(
        registry.model_dir(manifest.version),
        manifest.version,
        users,
        out_dir,
        k=k,
        chunk_size=chunk_size,
        workers=workers,
        progress=progress,
    )
