"""Every baseline on MovieLens 100K under the benchmark protocol (both splits).

    python benchmarks/bench_ml100k.py [--models popularity,covisit,als]

Writes benchmarks/results/ml100k_<protocol>.json and prints the tables for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys

from _common import DATA_DIR, write_result
from feedrec.config import FeedrecConfig
from feedrec.models import MODEL_NAMES
from feedrec.offline.jobs import evaluate, load_file_events, load_file_side


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    path = DATA_DIR / "ml-100k" / "u.data"
    if not path.exists():
        print(f"MovieLens 100K not found at {path}; set FEEDREC_DATA_DIR", file=sys.stderr)
        return 1
    cfg = FeedrecConfig()
    events = load_file_events(path, fmt="movielens", mapping=None, cfg=cfg)
    side = load_file_side(path, fmt="movielens")  # genres, release dates, demographics
    names = args.models.split(",")
    for protocol in ("user", "global"):
        report = evaluate(events, dataset="ml-100k", protocol=protocol, k=args.k, models=names, cfg=cfg, side=side)
        out = write_result(f"ml100k_{protocol}", report.to_dict())
        k = args.k
        print(f"\nml-100k, protocol={protocol}, {report.n_test_users} test users  ({out.relative_to(out.parents[2])})")
        print(
            f"| model | Recall@{k} | NDCG@{k} | HR@{k} | MRR@{k} | coverage@{k} | R@100 | R@200 | R@500 | "
            f"diversity@{k} | novelty@{k} | fit s |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, m in report.models.items():
            print(
                f"| {name} | {m[f'recall@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} | {m[f'hr@{k}']:.4f} | "
                f"{m[f'mrr@{k}']:.4f} | {m[f'coverage@{k}']:.4f} | {m['recall@100']:.4f} | "
                f"{m['recall@200']:.4f} | {m['recall@500']:.4f} | {m[f'diversity@{k}']:.4f} | "
                f"{m[f'novelty@{k}']:.2f} | {m['fit_seconds']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
