"""What the serving feature log costs a request (docs/BENCHMARKS.md, "Monitoring").

    python benchmarks/bench_featurelog.py [--hours 6]

1. In process: the time of ``FeatureLog.add`` for one feed (10 items, the real-time ranker's 52
   inputs): the only work a sampled request does for the log (scoring and writing happen on
   the log's thread).
2. End to end: bench_monitor's steady-state workspace served with FEEDREC_FEATURE_LOG_RATE=0 and
   =1 (every feed logged), the same sessions each time; feed latency p50/p99 as the world's
   client sees it, and the log's size per logged feed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_result
from bench_loop import natural_speed
from bench_monitor import copy, drive
from feedrec.loop.traffic import TrafficConfig
from feedrec.models.ranking.realtime import NUMERIC_FEATURES
from feedrec.monitoring.featurelog import FeatureLog


def _first_column(x: np.ndarray) -> np.ndarray:
    return x[:, 0]


def add_cost(n: int = 20_000) -> dict[str, float]:
    names = [*NUMERIC_FEATURES, "surface"]
    matrix = np.random.default_rng(0).random((10, len(names)), dtype=np.float32)
    items = [f"i{j}" for j in range(10)]
    with tempfile.TemporaryDirectory() as folder:
        log = FeatureLog(Path(folder), flush_interval_s=3600, flush_rows=10**9)
        took = []
        for k in range(n):
            t = time.perf_counter()
            log.add(request_id=f"r{k}", time=1.7e9 + k, user_id="u1", version="v1", surface="home", items=items,
                    slots=list(range(10)), names=names, matrix=matrix, predict=_first_column)  # fmt: skip
            took.append(time.perf_counter() - t)
        t = time.perf_counter()
        path = log.flush()
        flush_s = time.perf_counter() - t
        size = path.stat().st_size if path is not None else 0
        log.close()
    us = np.asarray(took) * 1e6
    return {
        "add_p50_us": round(float(np.percentile(us, 50)), 2),
        "add_p99_us": round(float(np.percentile(us, 99)), 2),
        "flush_s_per_1000_feeds_off_the_request_path": round(flush_s / n * 1000, 4),
        "parquet_bytes_per_feed": round(size / n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--start", type=Path, default=Path("/tmp/feedrec-bench-monitor/start"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/feedrec-bench-featurelog"))
    args = parser.parse_args()
    result: dict = {"in_process": add_cost()}
    print(result, flush=True)
    speed = natural_speed(args.start / "world", args.rps)
    cfg = TrafficConfig(url="http://127.0.0.1", seconds=args.hours / speed, rps=args.rps, speed=speed, seed=3)
    for rate in ("0", "1"):
        run = args.out / f"rate{rate}"
        copy([(args.start / "ws", run / "ws"), (args.start / "world", run / "world")])
        summary = drive(run / "ws", run / "world", cfg, save=False, env={"FEEDREC_FEATURE_LOG_RATE": rate})
        files = list((run / "ws" / "serving" / "features").glob("part-*.parquet"))
        new = [f for f in files if f.stat().st_mtime > time.time() - cfg.seconds - 120]
        result[f"rate_{rate}"] = {
            "requests": summary["requests"],
            "errors": summary["errors"],
            "latency_ms": summary["latency_ms"],
            "log_bytes_written": sum(f.stat().st_size for f in new),
        }
        print(rate, result[f"rate_{rate}"], flush=True)
    write_result("featurelog", result)


if __name__ == "__main__":
    main()
