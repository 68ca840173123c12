"""Serving under load: the real server, a real catalogue, a sustained request rate.

    python benchmarks/bench_serve.py [--users 100000 --items 1000000 --days 2 --rps 200 --seconds 60]

1. Build (once; cached in --workspace): simulate the catalogue and its users, store the events,
   items and users, fit the full pipeline (two-tower over an HNSW index + trending + fresh ->
   500 candidates -> the real-time ranker on the best 200 of them, features from the online
   store -> re-rank) and promote it.
2. Start ``feedrec serve --workers 2`` (two uvicorn worker processes; each holds the bundle and
   tails the event store) and, from this process, send
   ``GET /v1/feed?k=50`` for random known users at a fixed rate (open loop: a request is sent at
   its scheduled time whether or not earlier ones have answered). Latency is measured from the
   scheduled send time, so a stalled server cannot hide its queue (no coordinated omission).

Target (issue 5): 200 requests/s for 60 s, p99 < 30 ms, no errors, on 2 cores (server and client
on the same machine). Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import polars as pl

from _common import peak_rss_gib, write_result
from feedrec.config import FeedrecConfig
from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.data.simulator import simulate
from feedrec.data.store import LocalEventStore
from feedrec.models import build_model
from feedrec.offline.protocol import dedupe_earliest
from feedrec.offline.realtime import fit_realtime_ranker
from feedrec.registry import LocalRegistry, build_manifest

SERVING_CANDIDATES = {"two_tower": 400, "trending": 50, "fresh": 50}  # 500 candidates per request


def build(workspace: Path, users: int, items: int, days: int) -> dict[str, float]:
    """Simulate, store and train; returns timings. The bundle lands in production."""
    cfg = FeedrecConfig(workspace=workspace)
    cfg.simulator = cfg.simulator.model_copy(update={"n_users": users, "n_items": items, "days": days})
    cfg.models.candidates = cfg.models.candidates.model_copy(update={"quotas": SERVING_CANDIDATES, "weights": {}})
    cfg.models.two_tower = cfg.models.two_tower.model_copy(update={"epochs": 3, "patience": 1})
    cfg.models.feedrec = cfg.models.feedrec.model_copy(update={"n_candidates": 500})
    cfg.models.feedrec.ranker = cfg.models.feedrec.ranker.model_copy(update={"n_estimators": 200})
    timings: dict[str, float] = {}
    start = time.perf_counter()
    feed = simulate(cfg.simulator)
    timings["simulate_s"] = time.perf_counter() - start
    store = LocalEventStore(workspace)
    store.append(feed.events)
    store.put_items(feed.items)
    store.put_users(feed.users)
    events = pl.DataFrame(pl.from_arrow(feed.events))
    positives = events.filter(pl.col("type").is_in([t.value for t in cfg.eval.positive_types]))
    df = dedupe_earliest(positives.select("user_id", "item_id", "timestamp"))
    # The whole catalogue, items nobody has engaged with yet included: every one can be served.
    interactions = Interactions.from_frame(df, catalogue=feed.items.column("item_id").to_numpy())
    print(f"{events.height:,} events, {df.height:,} positives", file=sys.stderr)
    start = time.perf_counter()
    model = build_model("feedrec", cfg).fit(interactions, SideInfo(items=feed.items, users=feed.users))
    timings["fit_s"] = time.perf_counter() - start
    # The served ranker on real-time features (issue 12): it scores each request's best
    # `realtime_top` candidates with the features the online store answers as events arrive.
    start = time.perf_counter()
    fit_realtime_ranker(model, events, pl.DataFrame(pl.from_arrow(feed.items)), threads=2)
    timings["realtime_ranker_fit_s"] = time.perf_counter() - start
    registry = LocalRegistry(workspace / "registry")
    manifest = build_manifest(registry.next_version(), "feedrec", df, cfg, {})
    registry.register(model, manifest)
    registry.promote(manifest.version, reason="bench_serve")
    timings |= {"events": events.height, "positives": df.height}
    return timings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(base: str, user_ids: np.ndarray, *, rps: float, seconds: float, k: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    n = int(rps * seconds)
    picks = user_ids[rng.integers(0, user_ids.size, n)]
    latencies = np.full(n, np.nan)
    statuses = np.zeros(n, np.int64)
    fallbacks = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        t0 = time.perf_counter() + 0.5

        async def one(i: int) -> None:
            nonlocal fallbacks
            scheduled = t0 + i / rps
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                async with session.get(f"{base}/v1/feed", params={"user_id": str(picks[i]), "k": str(k)}) as resp:
                    body = await resp.read()
                    statuses[i] = resp.status
                    if resp.status == 200 and json.loads(body)["fallback"]:
                        fallbacks += 1
            except (aiohttp.ClientError, TimeoutError):
                statuses[i] = -1
            latencies[i] = time.perf_counter() - scheduled

        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    ok = statuses == 200
    ms = latencies * 1e3
    second = (np.arange(n) / rps).astype(int)
    worst = sorted(((float(ms[second == s].max()), int(s)) for s in np.unique(second)), reverse=True)[:3]
    return {
        "requests": n,
        "achieved_rps": round(n / wall, 1),
        "errors": int((~ok).sum()),
        "fallbacks": fallbacks,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "slowest_seconds": [{"second": s, "max_ms": round(m, 1)} for m, s in worst],
    }


def stage_totals(base: str) -> dict[str, tuple[float, int]]:
    """(seconds, count) per pipeline stage, from the server's Prometheus histograms."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    sums = dict(re.findall(r'feedrec_latency_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)', text))
    counts = dict(re.findall(r'feedrec_latency_seconds_count\{stage="(\w+)"\} ([0-9.e+-]+)', text))
    return {stage: (float(sums[stage]), int(float(counts[stage]))) for stage in sums if stage in counts}


def serve_variant(workspace: Path, realtime_top: int | None) -> dict[str, object]:
    """Promote the built bundle, or (``realtime_top``) a copy of it that scores that many candidates
    per request with the real-time ranker; returns what serves."""
    import dataclasses

    registry = LocalRegistry(workspace / "registry")
    first = registry.list()[0]
    model = registry.load_model(first.version)
    if realtime_top is None:
        registry.promote(first.version, reason="bench_serve")
        return {"version": first.version, "realtime_top": model.get_params().get("realtime_top")}
    model.set_params(realtime_top=realtime_top)
    variant = registry.next_version()
    registry.register(model, dataclasses.replace(first, version=variant))
    registry.promote(variant, reason=f"bench_serve --realtime-top {realtime_top}")
    return {"version": variant, "realtime_top": realtime_top}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="Server processes (uvicorn workers).")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/feedrec-bench-serve"))
    parser.add_argument("--rebuild", action="store_true", help="Build the bundle again even if one is cached.")
    parser.add_argument(
        "--realtime-top",
        type=int,
        default=None,
        help="Serve the cached bundle with this many candidates per request scored by the real-time ranker.",
    )
    args = parser.parse_args()
    built: dict[str, float] = {}
    stamp = args.workspace / "bench.json"
    wanted = {"users": args.users, "items": args.items, "days": args.days}
    if args.rebuild or not stamp.exists() or json.loads(stamp.read_text())["wanted"] != wanted:
        shutil.rmtree(args.workspace, ignore_errors=True)
        built = build(args.workspace, args.users, args.items, args.days)
        stamp.write_text(json.dumps({"wanted": wanted, "built": built}))
    built = json.loads(stamp.read_text())["built"]
    model_users = np.load(next((args.workspace / "registry" / "bundles").glob("v*/model/state.npz")))["user_ids_"]
    served = serve_variant(args.workspace, args.realtime_top)

    port = free_port()
    env = os.environ | {
        "FEEDREC_WORKSPACE": str(args.workspace),
        "FEEDREC_PORT": str(port),
        "FEEDREC_WORKERS": str(args.workers),
    }
    server = subprocess.Popen([sys.executable, "-m", "feedrec.cli", "serve"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        ready = 0
        while True:  # loading a million-item bundle takes a while
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                    ready += resp.status == 200
                    if ready >= 10:  # every worker has loaded the bundle (connections spread over them)
                        break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not become ready")
            time.sleep(1)
        gc.collect()
        gc.freeze()  # the client's own heap (torch, polars, ...) must not stall it mid-measurement
        asyncio.run(load(base, model_users, rps=100, seconds=10, k=args.k))  # warm-up (both workers), not measured
        result = asyncio.run(load(base, model_users, rps=args.rps, seconds=args.seconds, k=args.k))
        # Per-stage means from the Prometheus histograms of whichever worker answers the scrape.
        totals = stage_totals(base)
        result["server_mean_ms_by_stage"] = {
            stage: round(total / max(count, 1) * 1e3, 3) for stage, (total, count) in totals.items()
        }
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    payload = {
        "catalogue_items": args.items,
        "users": args.users,
        "k": args.k,
        "candidates": sum(SERVING_CANDIDATES.values()),
        "target_rps": args.rps,
        "server_workers": args.workers,
        "seconds": args.seconds,
        "served": served,
        **result,
        "build": built,
        "client_peak_rss_gib": round(peak_rss_gib(), 2),
    }
    print(json.dumps(payload, indent=2))
    write_result("serve", payload)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
