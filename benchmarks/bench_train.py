"""The whole training pipeline at scale: `feedrec train` on about 20 million simulated events.

    python benchmarks/bench_train.py [--users 120000 --items 200000 --days 30] [--workspace DIR]

1. Simulate a feed log (``feedrec simulate``) and ingest it (``feedrec ingest``: validation,
   quarantine, the event store), each in its own process; not part of the measurement.
2. Run ``feedrec train`` in a fresh process: load -> split -> tune the candidate fusion (budgeted,
   validation only) -> fit the whole pipeline on train and score it on validation -> refit on
   train + validation and score it on test -> the impression ranker on point-in-time features ->
   register the bundle -> the promotion gate. Wall time and the peak resident memory of that
   process are the figures.

Target (issue 4): under 30 minutes on 2 cores, peak memory under 12 GB. Writes
benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import simulated_store, write_result

# Training settings for this scale (each is a documented config key; see configs/default.yaml).
SCALE = {
    "eval.max_test_users": "20000",  # metrics on a fixed sample of test users
    "train.tune_trials": "8",
    "train.tune_timeout_s": "240",
    "models.two_tower.epochs": "1",  # one pass (about a minute): the sources are fitted four times
    "models.two_tower.batch_size": "1024",
    "train.ranker_max_impressions": "2000000",
}

# Runs the command in argv[2:], then writes "exit code, wall seconds, peak RSS in KiB" to argv[1].
MEASURE = """
import pathlib, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
pathlib.Path(sys.argv[1]).write_text(f"{code} {time.perf_counter() - start:.1f} {peak}")
sys.exit(code)
"""


def feedrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "feedrec.cli", *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=120_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/feedrec-bench-train"))
    parser.add_argument("--keep-data", action="store_true", help="Reuse the simulated, ingested store if present.")
    args = parser.parse_args()
    ws = args.workspace
    start = time.perf_counter()
    store = simulated_store(ws, args.users, args.items, args.days, keep=args.keep_data)
    print(f"the simulated store is ready after {time.perf_counter() - start:.0f} s", file=sys.stderr)
    stats = json.loads(
        subprocess.run(feedrec("stats", "-w", str(store), "--json"), capture_output=True, text=True, check=True).stdout
    )
    shutil.rmtree(store / "registry", ignore_errors=True)
    shutil.rmtree(store / "tuning", ignore_errors=True)
    overrides = [arg for key, value in SCALE.items() for arg in ("--set", f"{key}={value}")]
    measured, train_log = ws / "measured.txt", ws / "train.log"
    print(f"feedrec train: its log (a line per stage) goes to {train_log}", file=sys.stderr)
    with train_log.open("w") as log:
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                MEASURE,
                str(measured),
                *feedrec("--log-level", "info", "train", "-w", str(store), *overrides, "--json"),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    code, seconds, peak_kib = measured.read_text().split()
    if int(code) != 0:
        print(train_log.read_text()[-5000:], file=sys.stderr)
        return 1
    trained = json.loads(run.stdout)
    result = {
        "events": stats["events"],
        "users": stats["users"],
        "items": stats["items"],
        "by_type": stats["by_type"],
        "train_seconds": float(seconds),
        "peak_rss_gib": round(int(peak_kib) / 2**20, 2),
        "settings": SCALE,
        "stage_seconds": trained["seconds"],
        "metrics": trained["metrics"],
        "version": trained["version"],
    }
    print(json.dumps(result, indent=2))
    write_result("train", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
