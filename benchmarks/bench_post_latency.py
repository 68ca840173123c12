"""``POST /v1/events`` latency as the store grows, embedded and with Redis, in one table.

    python benchmarks/bench_post_latency.py [--events 100,10000,1000000] [--posts 300]

For each size, a copy of a small world's workspace (2,000 users, 5,000 items, 14 days, the full
pipeline in production: ``bench_ingest.build``) whose store also holds that many synthetic events
(appended 10,000 at a time, then compacted), served by ``feedrec serve --workers 2``; then
``--posts`` sequential POSTs of 10 new events, after 20 unmeasured ones: p50 and p99.

- **embedded**: the event-id index in the store's catalog (SQLite), the online features in each
  worker, workers sharing new events by reading the store past their position.
- **redis**: the same store, and ``FEEDREC_REDIS_URL`` pointing at a real ``redis-server``
  (append-only file, fsync every second): a POST's events are folded into the shared Redis
  store before it is answered. A server's start folds the whole store into Redis first (not
  measured; its time is reported).

Writes benchmarks/results/post_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from _common import write_result
from bench_ingest import base_workspace, prefill, sequential_posts, serve
from feedrec.data.store import LocalEventStore
from feedrec.redis.local import LocalRedis


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", default="100,10000,1000000")
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--root", type=Path, default=Path("/tmp/feedrec-bench-post"))
    args = parser.parse_args()
    base_ws, users = base_workspace(args.root)
    rows: list[dict[str, object]] = []
    for size in [int(x) for x in args.events.split(",")]:
        ws = args.root / f"store-{size}"
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(base_ws, ws, ignore=shutil.ignore_patterns("online", "serving"))
        prefill(ws, max(1, size // 10))
        stored = LocalEventStore(ws).count()
        for backend in ("embedded", "redis"):
            redis_server = None
            if backend == "redis":
                redis_server = LocalRedis(args.root / f"redis-{size}", fsync="everysec", start_timeout_s=120)
                os.environ["FEEDREC_REDIS_URL"] = redis_server.url
            started = time.perf_counter()
            proc, base = serve(ws)
            ready_s = time.perf_counter() - started
            try:
                asyncio.run(sequential_posts(base, users, 20))  # warm-up
                timing = asyncio.run(sequential_posts(base, users, args.posts))
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
                os.environ.pop("FEEDREC_REDIS_URL", None)
                if redis_server is not None:
                    redis_server.stop()
            row = {"backend": backend, "added_events": size, "stored_events": stored, "ready_s": round(ready_s, 1)}
            rows.append(row | timing)
            print(rows[-1], file=sys.stderr)
            if backend == "redis":
                break
            # The next backend posts the same ids: a new store copy keeps the two runs alike.
            shutil.rmtree(ws)
            shutil.copytree(base_ws, ws, ignore=shutil.ignore_patterns("online", "serving"))
            prefill(ws, max(1, size // 10))
    payload = {"posts": args.posts, "rows": rows}
    print(json.dumps(payload, indent=2))
    write_result("post_latency", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
