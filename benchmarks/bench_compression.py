"""int8 compression: size, latency and NDCG@10 of fp32 versus int8, and the 1 % gate's verdict.

    python benchmarks/bench_compression.py [--users 2000 --items 5000 --days 30] [--bundle DIR]

1. The deep multi-task ranker (DCN-v2) on simulated impressions: fp32 versus PyTorch dynamic int8
   quantization. NDCG@10 ranks each test request's slate by the feed score (click = relevant);
   latency is one 500-candidate request on one thread (median of 300).
2. The two-tower's item index on MovieLens 100K (user protocol): fp32 vectors (flat, HNSW) versus
   8-bit scalar quantization (SQ8, HNSW-SQ8). NDCG@10 of the two-tower's own recommendations;
   latency per query on one thread.
3. With ``--bundle`` (a feed bundle's model folder, e.g. the one bench_serve.py builds over a
   million items): the same for its two-tower index at that scale, with recall@100 against fp32.

Target (issue 5): a gate refuses a compressed model that loses more than 1 % NDCG@10. Writes
benchmarks/results/compression.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import torch

from _common import DATA_DIR, write_result
from feedrec.config import FeedrecConfig, SimulatorConfig
from feedrec.data.simulator import simulate
from feedrec.metrics import ndcg_at_k
from feedrec.models import build_model
from feedrec.models.base import Recommender
from feedrec.models.compress import CompressionGate, compress_retrieval, index_bytes
from feedrec.models.feed import FeedRecommender
from feedrec.models.ranking.multitask import MultiTaskRanker, MultiTaskSet
from feedrec.models.retrieval.two_tower import TwoTowerRecommender
from feedrec.offline.jobs import load_file_events, load_file_side
from feedrec.offline.protocol import evaluate_recommender, prepare
from feedrec.offline.ranking_eval import impression_splits, multitask_set

GATE = CompressionGate(max_relative_loss=0.01)


def slate_ndcg(frame: pl.DataFrame, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over requests with a click, each request's slate ranked by ``scores``."""
    df = frame.select("request_id", "label").with_columns(pl.Series("score", scores), pl.int_range(pl.len()).alias("i"))
    ranked = df.sort(["request_id", "score", "i"], descending=[False, True, False])
    truth, preds = [], []
    for _, group in ranked.group_by("request_id", maintain_order=True):
        labels = group["label"].to_numpy()
        if labels.sum() == 0:
            continue
        order = group["i"].to_numpy()  # the slate's impressions, best score first
        truth.append(order[labels > 0])
        preds.append(order[:k])
    width = max(len(p) for p in preds)
    padded = np.array([np.pad(p, (0, width - len(p)), constant_values=-1) for p in preds])
    return ndcg_at_k(truth, padded, k=k)


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples) * 1e3)


def bench_ranker(args: argparse.Namespace) -> list[dict[str, object]]:
    feed = simulate(SimulatorConfig(n_users=args.users, n_items=args.items, days=args.days, seed=42))
    splits = impression_splits(pl.DataFrame(pl.from_arrow(feed.events)), pl.DataFrame(pl.from_arrow(feed.items)))
    fp32 = MultiTaskRanker(seed=42, num_threads=2).fit(
        multitask_set(splits.train, splits.x_train), multitask_set(splits.valid, splits.x_valid)
    )
    int8 = fp32.quantized()
    test = multitask_set(splits.test, splits.x_test)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, splits.x_test.shape[0], 500)
    request = MultiTaskSet(test.numeric[rows], test.surface[rows], {h: v[rows] for h, v in test.labels.items()})
    torch.set_num_threads(1)
    out = []
    for name, model in (("fp32", fp32), ("int8 (dynamic quantization)", int8)):
        out.append(
            {
                "model": "DCN-v2 multi-task ranker",
                "variant": name,
                "size_bytes": model.size_bytes(),
                "latency_ms": round(timed(lambda m=model: m.predict(request), 300), 3),
                "ndcg@10": round(slate_ndcg(splits.test, model.predict(test)), 4),
            }
        )
    return out


def bench_two_tower_ml100k() -> list[dict[str, object]]:
    path = DATA_DIR / "ml-100k" / "u.data"
    cfg = FeedrecConfig()
    events = load_file_events(path, fmt="movielens", mapping=None, cfg=cfg)
    side = load_file_side(path, fmt="movielens")
    data = prepare(events, protocol="user", test_ratio=cfg.split.test_ratio)
    model = build_model("two_tower", cfg)
    assert isinstance(model, TwoTowerRecommender)
    model.ann = "flat"
    model.fit(data.train, side)
    faiss.omp_set_num_threads(1)
    queries = model.user_emb_[:200]
    out = []
    for name, variant in (
        ("fp32 flat", model),
        ("int8 SQ8", compress_retrieval(model, "sq8")),
        ("fp32 HNSW", compress_retrieval(model, "hnsw")),
        ("int8 HNSW-SQ8", compress_retrieval(model, "hnsw_sq8")),
    ):
        assert isinstance(variant, TwoTowerRecommender) and variant._index is not None
        index = variant._index
        out.append(
            {
                "model": "two-tower item index, ML-100K",
                "variant": name,
                "size_bytes": index_bytes(variant),
                "latency_ms": round(timed(lambda ix=index: ix.search(queries, 100), 20) / queries.shape[0], 4),
                "ndcg@10": round(evaluate_recommender(variant, data, k=10)["ndcg@10"], 4),
            }
        )
    return out


def bench_bundle(folder: Path) -> list[dict[str, object]]:
    model = Recommender.load(folder)
    assert isinstance(model, FeedRecommender)
    tower = next(s for s in model.candidates_.sources_.values() if isinstance(s, TwoTowerRecommender))
    compressed = compress_retrieval(tower, "hnsw_sq8")
    assert isinstance(compressed, TwoTowerRecommender)
    faiss.omp_set_num_threads(1)
    queries = tower.user_emb_[np.random.default_rng(0).integers(0, tower.user_emb_.shape[0], 500)]
    exact = np.argsort(-(queries @ tower.item_emb_.T), axis=1)[:, :100]
    out = []
    for name, variant in (("fp32 HNSW", tower), ("int8 HNSW-SQ8", compressed)):
        assert variant._index is not None
        index = variant._index
        found, _ = index.search(queries, 100)
        recall = np.mean([np.isin(f, e).mean() for f, e in zip(found, exact, strict=True)])
        out.append(
            {
                "model": f"two-tower item index, {tower.item_emb_.shape[0]:,} items",
                "variant": name,
                "size_bytes": index_bytes(variant),
                "latency_ms": round(timed(lambda ix=index: ix.search(queries[:100], 100), 5) / 100, 4),
                "recall@100_vs_exact": round(float(recall), 4),
            }
        )
    return out


def verdicts(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The gate on each int8 row against the fp32 row before it."""
    out = []
    for ref, comp in zip(rows[::2], rows[1::2], strict=True):
        if "ndcg@10" in ref:
            result = GATE.check(float(ref["ndcg@10"]), float(comp["ndcg@10"]))  # type: ignore[arg-type]
            out.append(
                {
                    "model": comp["model"],
                    "variant": comp["variant"],
                    "accepted": result.accepted,
                    "reason": result.reason,
                }
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--bundle", type=Path, help="A feed bundle's model folder, for the at-scale index rows.")
    args = parser.parse_args()
    rows = bench_ranker(args) + bench_two_tower_ml100k()
    if args.bundle is not None:
        rows += bench_bundle(args.bundle)
    gates = verdicts(rows)
    write_result("compression", {"rows": rows, "gate": gates, "max_relative_loss": GATE.max_relative_loss})
    print("| model | variant | size | latency (ms) | NDCG@10 / recall@100 |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        quality = r.get("ndcg@10", r.get("recall@100_vs_exact"))
        print(
            f"| {r['model']} | {r['variant']} | {int(r['size_bytes']) / 2**20:.2f} MiB | {r['latency_ms']} | {quality} |"
        )  # type: ignore[call-overload]
    for g in gates:
        print(f"gate: {g['model']} {g['variant']}: {'accepted' if g['accepted'] else 'REFUSED'} - {g['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
