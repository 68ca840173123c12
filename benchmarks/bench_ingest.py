"""Event ingestion through the real server: POST latency as the store grows, and a mixed load.

    python benchmarks/bench_ingest.py [--levels 100,10000,100000] [--seconds 60]

1. Flat cost: for each level, a workspace whose store already holds that many batches of 10
   events (prefilled with large appends, then compacted to the steady state the server keeps),
   then 300 sequential ``POST /v1/events`` of 10 new events to ``feedrec serve --workers 2``:
   p50 and p99. Target (issue 10): within 2x of the first level.
2. Mixed load: 100 feeds/s and 10 event batches/s of 10 events for ``--seconds`` against
   2 workers, open loop (latency from the scheduled send time). Targets: feed p99 < 50 ms, no
   errors, and every acknowledged event in the store afterwards.

Writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
import pyarrow as pa

from _common import write_result
from feedrec.config import FeedrecConfig
from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.data.simulator import simulate
from feedrec.data.store import LocalEventStore
from feedrec.models import build_model
from feedrec.offline.protocol import dedupe_earliest
from feedrec.registry import LocalRegistry, build_manifest
from feedrec.schemas import EVENT_SCHEMA


def build(workspace: Path) -> np.ndarray:
    """A small world with the full pipeline in production; returns its user ids."""
    cfg = FeedrecConfig(workspace=workspace)
    cfg.simulator = cfg.simulator.model_copy(update={"n_users": 2_000, "n_items": 5_000, "days": 14})
    feed = simulate(cfg.simulator)
    store = LocalEventStore(workspace)
    store.append(feed.events)
    store.put_items(feed.items)
    events = pl.DataFrame(pl.from_arrow(feed.events))
    positives = events.filter(pl.col("type").is_in([t.value for t in cfg.eval.positive_types]))
    df = dedupe_earliest(positives.select("user_id", "item_id", "timestamp"))
    model = build_model("feedrec", cfg).fit(Interactions.from_frame(df), SideInfo(items=feed.items))
    registry = LocalRegistry(workspace / "registry")
    manifest = build_manifest(registry.next_version(), "feedrec", df, cfg, {})
    registry.register(model, manifest)
    registry.promote(manifest.version, reason="bench_ingest")
    return np.asarray(df["user_id"].unique().to_list())


def base_workspace(root: Path) -> tuple[Path, np.ndarray]:
    """``root/base`` built once (``build``; reused while its bundle is in production), and the ids
    of the users who clicked in it (whom the benchmarks' events come from)."""
    base_ws = root / "base"
    if not (base_ws / "registry" / "production.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        build(base_ws)
    clicks = LocalEventStore(base_ws).scan(columns=["user_id"], types=["click"])
    return base_ws, np.asarray(clicks.column("user_id").unique().to_pylist())


def prefill(workspace: Path, batches: int) -> None:
    """``batches`` batches of 10 synthetic events, appended 10,000 events at a time, then compacted."""
    store = LocalEventStore(workspace)
    total = batches * 10
    t0 = 1_704_067_200_000_000  # 2024-01-01 in microseconds
    for start in range(0, total, 10_000):
        n = min(10_000, total - start)
        ids = np.arange(start, start + n)
        table = pa.table(
            {
                "event_id": pa.array([f"pre-{i}" for i in ids]),
                "user_id": pa.array([f"u{i % 2000}" for i in ids]),
                "item_id": pa.array([f"i{i % 5000}" for i in ids]),
                "timestamp": pa.array(t0 + ids * 1_000_000, pa.timestamp("us", tz="UTC")),
                "type": pa.array(["impression"] * n),
                "value": pa.nulls(n, pa.float64()),
                "position": pa.array(ids % 10, pa.int32()),
                "surface": pa.array(["home"] * n),
                "request_id": pa.nulls(n, pa.string()),
            },
            schema=EVENT_SCHEMA,
        )
        store.append(table)
    while store.compact():
        pass


def serve(workspace: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"FEEDREC_WORKSPACE": str(workspace), "FEEDREC_PORT": str(port), "FEEDREC_WORKERS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "feedrec.cli", "serve"], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    ready = 0
    deadline = time.time() + 300
    while ready < 10:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                ready += resp.status == 200
        except OSError:
            time.sleep(0.3)
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError("the server did not become ready")
    return proc, base


def _batch(prefix: str, n: int, users: np.ndarray) -> dict[str, object]:
    return {
        "events": [
            {
                "event_id": f"{prefix}-{n}-{i}",
                "user_id": str(users[(n * 10 + i) % users.size]),
                "item_id": f"i{(n * 7 + i) % 5000}",
                "timestamp": "2024-01-15T12:00:00Z",
                "type": "click" if i % 3 == 0 else "impression",
                "position": i,
            }
            for i in range(10)
        ]
    }


async def sequential_posts(base: str, users: np.ndarray, n: int) -> dict[str, float]:
    ms = []
    async with aiohttp.ClientSession() as session:
        for b in range(n):
            start = time.perf_counter()
            async with session.post(f"{base}/v1/events", json=_batch("seq", b, users)) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            ms.append((time.perf_counter() - start) * 1e3)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


async def mixed(base: str, users: np.ndarray, seconds: float) -> tuple[dict[str, object], list[str]]:
    feeds_n, posts_n = int(100 * seconds), int(10 * seconds)
    feed_ms = np.full(feeds_n, np.nan)
    post_ms = np.full(posts_n, np.nan)
    errors: list[str] = []
    acked: list[str] = []
    rng = np.random.default_rng(0)
    picks = users[rng.integers(0, users.size, feeds_n)]
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        t0 = time.perf_counter() + 0.5

        async def feed(i: int) -> None:
            scheduled = t0 + i / 100
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                async with session.get(f"{base}/v1/feed", params={"user_id": str(picks[i]), "k": "20"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors.append(f"feed {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"feed {type(exc).__name__}")
            feed_ms[i] = (time.perf_counter() - scheduled) * 1e3

        async def post(i: int) -> None:
            scheduled = t0 + i / 10
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            body = _batch("mix", i, users)
            try:
                async with session.post(f"{base}/v1/events", json=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        acked.extend(str(e["event_id"]) for e in body["events"])  # type: ignore[union-attr]
                    else:
                        errors.append(f"events {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"events {type(exc).__name__}")
            post_ms[i] = (time.perf_counter() - scheduled) * 1e3

        await asyncio.gather(*(feed(i) for i in range(feeds_n)), *(post(i) for i in range(posts_n)))
    result = {
        "seconds": seconds,
        "feeds": feeds_n,
        "event_batches": posts_n,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "feed_p50_ms": round(float(np.nanpercentile(feed_ms, 50)), 2),
        "feed_p99_ms": round(float(np.nanpercentile(feed_ms, 99)), 2),
        "events_p50_ms": round(float(np.nanpercentile(post_ms, 50)), 2),
        "events_p99_ms": round(float(np.nanpercentile(post_ms, 99)), 2),
    }
    return result, acked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="100,10000,100000")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--root", type=Path, default=Path("/tmp/feedrec-bench-ingest"))
    args = parser.parse_args()
    base_ws, users = base_workspace(args.root)
    flat: dict[str, object] = {}
    for level in [int(x) for x in args.levels.split(",")]:
        ws = args.root / f"level-{level}"
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(base_ws, ws, ignore=shutil.ignore_patterns("online", "serving"))
        start = time.perf_counter()
        prefill(ws, level)
        store = LocalEventStore(ws)
        info = {"prefill_s": round(time.perf_counter() - start, 1), "stored_events": store.count()}
        proc, base = serve(ws)
        try:
            asyncio.run(sequential_posts(base, users, 20))  # warm-up
            info |= asyncio.run(sequential_posts(base, users, 300))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        info["parts_after"] = len(LocalEventStore(ws).part_names())
        flat[str(level)] = info
        print(level, info, file=sys.stderr)
    ws = args.root / "mixed"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(base_ws, ws, ignore=shutil.ignore_patterns("online", "serving"))
    proc, base = serve(ws)
    try:
        asyncio.run(mixed(base, users, 5))  # warm-up, not measured
        result, acked = asyncio.run(mixed(base, users, args.seconds))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    stored = set(LocalEventStore(ws).scan(columns=["event_id"]).column("event_id").to_pylist())
    result["acknowledged_events"] = len(acked)
    result["acknowledged_missing"] = len(set(acked) - stored)
    first = flat[next(iter(flat))]
    payload = {
        "flat": flat,
        "flat_p99_ratio_last_to_first": round(
            float(flat[next(reversed(flat))]["p99_ms"]) / float(first["p99_ms"]),
            2,  # type: ignore[index]
        ),
        "mixed": result,
    }
    print(json.dumps(payload, indent=2))
    write_result("ingest", payload)
    ok = result["errors"] == 0 and result["acknowledged_missing"] == 0 and result["feed_p99_ms"] < 50
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
