"""The noise floor of bench_monitor.py's counterfactual: how far two unshifted runs of one seed,
from the same kept start state, differ (the PSI "the features that moved" is judged by, at least
``MOVED``, by PSI or by mean shift). docs/BENCHMARKS.md, "Monitoring".

    python benchmarks/monitor_counterfactual_noise.py --out /tmp/feedrec-bench-monitor-fresh4 --seeds 1 2 3

Runs each seed's unshifted 6 hours once more (into ``runs/SEED-no_shift-again``) and prints the
largest per-feature PSI and mean shift against the kept run. About a minute a seed.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

from bench_loop import natural_speed
from bench_monitor import LOG_ALL, counterfactual, judged_run, moved
from feedrec.loop.traffic import TrafficConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a bench_monitor.py --out with its runs kept")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--hours", type=int, default=6)
    args = parser.parse_args()
    start = args.out / "start"
    speed = natural_speed(start / "world", args.rps)
    for seed in args.seeds:
        cfg = TrafficConfig(url="http://127.0.0.1", seconds=args.hours / speed, rps=args.rps, speed=speed, seed=seed)
        again = args.out / "runs" / f"{seed}-no_shift-again"
        _, t0 = judged_run(start, again, cfg, LOG_ALL, rejudge=False)
        kept = args.out / "runs" / f"{seed}-no_shift" / "ws"
        shifts = counterfactual(kept, again / "ws", t0, t0 + timedelta(hours=args.hours))
        largest = {f"largest_{k}": sorted(of.items(), key=lambda x: -x[1])[:3] for k, of in shifts.items()}
        print(json.dumps({"seed": seed, **largest, "moved": moved(shifts)}))


if __name__ == "__main__":
    main()
