"""Cold start on simulated logs: sparse users, new users and items published after the cut.

    python benchmarks/bench_cold_start.py [--users 5000 --items 10000 --days 30]

Target (issue 3): cold-start metrics reported, and better than popularity on the user slice and
the new-item slice. Writes benchmarks/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

from _common import write_result
from feedrec.config import FeedrecConfig, SimulatorConfig
from feedrec.data.side import SideInfo
from feedrec.data.simulator import simulate
from feedrec.offline.cold_start import evaluate_cold_start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--models", default="popularity,trending,als,two_tower,content,fresh,candidates")
    args = parser.parse_args()
    cfg = FeedrecConfig()
    feed = simulate(SimulatorConfig(n_users=args.users, n_items=args.items, days=args.days, seed=42))
    events = pl.from_arrow(feed.events)
    assert isinstance(events, pl.DataFrame)
    positives = events.filter(pl.col("type").is_in([t.value for t in cfg.eval.positive_types]))
    report = evaluate_cold_start(
        positives, SideInfo(items=feed.items, users=feed.users), models=args.models.split(","), cfg=cfg
    )
    write_result("cold_start", report.to_dict() | {"users": args.users, "items": args.items, "days": args.days})
    cols = sorted({c for m in report.models.values() for c in m})
    print(f"slices (users): {report.slices}")
    print("| model | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, m in report.models.items():
        print(f"| {name} | " + " | ".join(f"{m.get(c, float('nan')):.4f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
