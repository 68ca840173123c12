"""Warm-started retraining: what continuing production's real-time ranker buys over a cold fit.
(docs/BENCHMARKS.md, "Continuous training: recovery and safe rollout", warm starts)

    python benchmarks/bench_warm_start.py [--start /tmp/feedrec-bench-monitor/start] [--windows 2,3,7]

From the monitoring benchmark's steady state (``bench_monitor.py``'s ``start``: a production
bundle trained on 17 days, then 36 hours of serving), for each sliding window the pipeline is
retrained as ``feedrec loop`` retrains it (no tuning, no ranker comparison) twice on copies of the
same workspace: cold, and with ``train.warm_start=true`` (LightGBM continues production's trees).
Same events, same split, same seed: the real-time ranker stage's time, its trees, and its test
AUC, log loss and ECE side by side.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _common import write_result
from bench_loop import sh

FAST = ["train.tune=[]", "train.evaluate_rankers=false"]


def retrain(ws: Path, window: float, warm: bool) -> dict:
    sets = [*FAST, f"train.window_days={window}", f"train.warm_start={str(warm).lower()}"]
    out = json.loads(sh("train", "-w", str(ws), *(a for s in sets for a in ("--set", s)), "--json"))
    stage = next(k for k in out["seconds"] if k.startswith("real-time ranker"))
    return {
        "seconds_ranker": out["seconds"][stage],
        "seconds_total": round(sum(out["seconds"].values()), 1),
        "ranker": out["metrics"]["realtime_ranker"],
        "warm_start": out.get("warm_start"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=Path, default=Path("/tmp/feedrec-bench-monitor/start"))
    parser.add_argument("--windows", default="2,3,7")
    parser.add_argument("--out", type=Path, default=Path("/tmp/feedrec-bench-warm"))
    args = parser.parse_args()
    rows = []
    for window in [float(w) for w in args.windows.split(",")]:
        row: dict = {"window_days": window}
        for warm in (False, True):
            ws = args.out / ("warm" if warm else "cold")
            shutil.rmtree(ws, ignore_errors=True)
            shutil.copytree(args.start / "ws", ws)
            row["warm" if warm else "cold"] = retrain(ws, window, warm)
            print(window, "warm" if warm else "cold", json.dumps(row["warm" if warm else "cold"]), flush=True)
        rows.append(row)
    write_result("warm_start", {"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows})


if __name__ == "__main__":
    main()
