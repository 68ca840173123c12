"""ANN index: recall against exact search, per-query latency, build time and memory.

    python benchmarks/bench_ann.py [--items 1000000 --dim 64 --queries 1000 --kinds hnsw,ivf_sq8,ivf_pq]

Target (issue 3): over 1,000,000 items with 64-dimensional embeddings, HNSW recall@100 >= 0.95
against exact search, and at least 50x faster per query than exact numpy scoring.
Vectors: a mixture of 2,000 Gaussian clusters on the unit sphere (embeddings cluster by topic);
queries: other points from the same mixture. One query at a time, as a feed request would.
Writes benchmarks/results/ann.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import write_result
from feedrec.models.index import FaissIndex


def make_vectors(n: int, dim: int, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 200_000):
        hi = min(n, lo + 200_000)
        out[lo:hi] = centers[rng.integers(0, n_clusters, hi - lo)] + 0.6 * rng.normal(size=(hi - lo, dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = x @ q
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--kinds", default="hnsw,ivf_sq8,ivf_pq")
    parser.add_argument("--ef-search", default="128,256,512")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = make_vectors(args.items, args.dim, 2000, rng)
    q = make_vectors(args.queries, args.dim, 2000, np.random.default_rng(0))  # same centers
    q = q + 0.05 * rng.normal(size=q.shape).astype(np.float32)
    k = args.k

    start = time.perf_counter()
    truth = [exact_topk(x, qi, k) for qi in q]
    exact_ms = (time.perf_counter() - start) / len(q) * 1e3
    rows = [
        {
            "index": "exact numpy (x @ q, argpartition)",
            "recall": 1.0,
            "ms_per_query": exact_ms,
            "speedup": 1.0,
            "memory_mb": x.nbytes / 2**20,
            "build_s": 0.0,
        }
    ]
    print(f"exact numpy: {exact_ms:.2f} ms/query, {x.nbytes / 2**20:.0f} MiB")

    for kind in args.kinds.split(","):
        start = time.perf_counter()
        index = FaissIndex(kind, hnsw_m=32, ef_construction=80, nprobe=32, pq_m=32).build(x)
        build_s = time.perf_counter() - start
        mem = index.memory_bytes / 2**20
        settings = [int(e) for e in args.ef_search.split(",")] if kind == "hnsw" else [16, 64]
        for setting in settings:
            if kind == "hnsw":
                index.ef_search = setting
            else:
                index.nprobe = setting
            index._configure()
            found = []
            start = time.perf_counter()
            for qi in q:
                ids, _ = index.search(qi[None, :], k)
                found.append(ids[0])
            ms = (time.perf_counter() - start) / len(q) * 1e3
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))
            label = f"{kind} ({'efSearch' if kind == 'hnsw' else 'nprobe'}={setting})"
            rows.append(
                {
                    "index": label,
                    "recall": recall,
                    "ms_per_query": ms,
                    "speedup": exact_ms / ms,
                    "memory_mb": mem,
                    "build_s": build_s,
                }
            )
            print(
                f"{label}: recall@{k} {recall:.4f}, {ms:.3f} ms/query ({exact_ms / ms:.0f}x), "
                f"{mem:.0f} MiB, build {build_s:.0f}s",
                flush=True,
            )

    write_result("ann", {"items": args.items, "dim": args.dim, "queries": args.queries, "k": k, "rows": rows})
    print(f"\n| index | recall@{k} vs exact | ms/query | speed-up vs exact | memory MiB | build s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['index']} | {r['recall']:.4f} | {r['ms_per_query']:.3f} | {r['speedup']:.0f}x | "
            f"{r['memory_mb']:.0f} | {r['build_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
