"""Simulator speed: how long ten million events take, and the peak memory.

    python benchmarks/bench_simulator.py [--users 60000 --items 200000 --days 30]

Target (issue 2): 10 million events in under 2 minutes on 2 cores. Writes
benchmarks/results/simulator.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_gib, write_result
from feedrec.config import SimulatorConfig
from feedrec.data.simulator import simulate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    cfg = SimulatorConfig(n_users=args.users, n_items=args.items, days=args.days, seed=args.seed)
    start = time.perf_counter()
    feed = simulate(cfg)
    sim_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        feed.write(Path(tmp))
        write_s = time.perf_counter() - start
    n = feed.events.num_rows
    result = {
        "users": args.users,
        "items": args.items,
        "days": args.days,
        "events": n,
        "simulate_seconds": round(sim_s, 1),
        "write_parquet_seconds": round(write_s, 1),
        "events_per_second": round(n / sim_s),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    write_result("simulator", result)
    print(
        f"{n:,} events ({args.users:,} users, {args.items:,} items, {args.days} days): "
        f"simulate {sim_s:.1f}s + write Parquet {write_s:.1f}s, {n / sim_s:,.0f} events/s, "
        f"peak RSS {result['peak_rss_gib']} GiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
