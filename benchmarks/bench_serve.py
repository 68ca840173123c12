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
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import polars as pl

from _common import free_port, peak_rss_gib, write_result
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


@dataclass
class Trace:
    """What an open-loop run saw: per feed request its scheduled time (s from the start), latency
    (ms, from the scheduled time), HTTP status (-1: no answer from any server), whether it was a
    fallback and whether its first server failed to answer (sent on to the next); per event batch
    the same, and the ids of every event a server acknowledged."""

    wall_s: float
    sent_at: np.ndarray
    latency_ms: np.ndarray
    status: np.ndarray
    fallback: np.ndarray
    retried: np.ndarray
    post_status: list[int] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    fault_log: list[dict[str, object]] = field(default_factory=list)


async def run_load(
    bases: list[str],
    user_ids: np.ndarray,
    *,
    rps: float,
    seconds: float,
    k: int,
    posts_per_s: float = 0.0,
    post_batch: Callable[[int], list[dict[str, object]]] | None = None,
    faults: Sequence[tuple[float, str, Callable[[], object]]] = (),
) -> Trace:
    """Open loop: ``GET /v1/feed`` for random known users at ``rps`` for ``seconds``, each request
    sent at its scheduled time whether or not earlier ones have answered, spread round-robin over
    ``bases`` like a load balancer (a request whose connection fails goes once to the next server);
    beside it ``posts_per_s`` event batches (``post_batch(n)``); each fault ``(at_s, name, fn)``
    runs in a thread at its time."""
    rng = np.random.default_rng(0)
    n = int(rps * seconds)
    picks = user_ids[rng.integers(0, user_ids.size, n)]
    trace = Trace(
        0.0, np.arange(n) / rps, np.full(n, np.nan), np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool)
    )
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter() + 0.5

        async def send(i: int, method: str, path: str, **kw: Any) -> tuple[int, bytes, bool]:
            for attempt in range(min(2, len(bases))):
                try:
                    async with session.request(method, f"{bases[(i + attempt) % len(bases)]}{path}", **kw) as resp:
                        return resp.status, await resp.read(), attempt > 0
                except (aiohttp.ClientError, TimeoutError):
                    continue
            return -1, b"", True

        async def feed(i: int) -> None:
            scheduled = t0 + i / rps
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            params = {"user_id": str(picks[i]), "k": str(k)}
            status, body, retried = await send(i, "GET", "/v1/feed", params=params)
            trace.latency_ms[i] = (time.perf_counter() - scheduled) * 1e3
            trace.status[i], trace.retried[i] = status, retried
            trace.fallback[i] = status == 200 and bool(json.loads(body)["fallback"])

        async def post(j: int) -> None:
            scheduled = t0 + j / posts_per_s
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            assert post_batch is not None
            batch = post_batch(j)
            status, _, _ = await send(j, "POST", "/v1/events", json={"events": batch})
            trace.post_ms.append((time.perf_counter() - scheduled) * 1e3)
            trace.post_status.append(status)
            if status == 200:
                trace.acked.extend(str(e["event_id"]) for e in batch)

        async def fault(at_s: float, name: str, fn: Callable[[], object]) -> None:
            await asyncio.sleep(max(0.0, t0 + at_s - time.perf_counter()))
            started = time.perf_counter()
            detail = await asyncio.to_thread(fn)
            trace.fault_log.append(
                {"fault": name, "at_s": at_s, "took_s": round(time.perf_counter() - started, 2), "detail": detail}
            )

        tasks = [feed(i) for i in range(n)]
        tasks += [post(j) for j in range(int(posts_per_s * seconds))]
        tasks += [fault(*f) for f in faults]
        await asyncio.gather(*tasks)
        trace.wall_s = time.perf_counter() - t0
    return trace


def summarize(trace: Trace) -> dict[str, object]:
    """The figures of a run: achieved rate, errors (HTTP >= 500 or no answer, counted apart from
    other statuses), fallbacks and latency percentiles of the feeds; the event batches' likewise."""
    n = trace.status.size
    ok = trace.status == 200
    ms = trace.latency_ms
    second = trace.sent_at.astype(int)
    worst = sorted(((float(ms[second == s].max()), int(s)) for s in np.unique(second)), reverse=True)[:3]
    out: dict[str, object] = {
        "requests": n,
        "achieved_rps": round(n / trace.wall_s, 1),
        "errors": int((~ok).sum()),
        "server_errors_5xx": int((trace.status >= 500).sum()),
        "no_answer": int((trace.status == -1).sum()),
        "sent_to_the_other_server": int(trace.retried.sum()),
        "fallbacks": int(trace.fallback.sum()),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "slowest_seconds": [{"second": s, "max_ms": round(m, 1)} for m, s in worst],
    }
    if trace.post_status:
        posts = np.array(trace.post_status)
        out["event_batches"] = {
            "sent": int(posts.size),
            "acknowledged": int((posts == 200).sum()),
            "refused_503": int((posts == 503).sum()),
            "server_errors_5xx_other": int(((posts >= 500) & (posts != 503)).sum()),
            "no_answer": int((posts == -1).sum()),
            "p50_ms": round(float(np.percentile(trace.post_ms, 50)), 2),
            "p99_ms": round(float(np.percentile(trace.post_ms, 99)), 2),
        }
    return out


async def load(base: str, user_ids: np.ndarray, *, rps: float, seconds: float, k: int) -> dict[str, object]:
    return summarize(await run_load([base], user_ids, rps=rps, seconds=seconds, k=k))


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


def ensure_built(workspace: Path, users: int, items: int, days: int, *, rebuild: bool = False) -> dict[str, float]:
    """The cached build in ``workspace`` (built first when missing, of other sizes, or ``rebuild``);
    returns its timings."""
    stamp = workspace / "bench.json"
    wanted = {"users": users, "items": items, "days": days}
    if rebuild or not stamp.exists() or json.loads(stamp.read_text())["wanted"] != wanted:
        shutil.rmtree(workspace, ignore_errors=True)
        built = build(workspace, users, items, days)
        stamp.write_text(json.dumps({"wanted": wanted, "built": built}))
    return dict(json.loads(stamp.read_text())["built"])


def known_users(workspace: Path) -> np.ndarray:
    return np.load(next((workspace / "registry" / "bundles").glob("v*/model/state.npz")))["user_ids_"]


def start_server(workspace: Path, port: int, *, workers: int, **env: str) -> subprocess.Popen[bytes]:
    """``feedrec serve`` on ``port`` with ``workers`` uvicorn worker processes."""
    env = (
        os.environ
        | env
        | {"FEEDREC_WORKSPACE": str(workspace), "FEEDREC_PORT": str(port), "FEEDREC_WORKERS": str(workers)}
    )
    return subprocess.Popen([sys.executable, "-m", "feedrec.cli", "serve"], env=env)


def wait_ready(base: str, server: subprocess.Popen[bytes], *, hits: int = 1, timeout_s: float = 300) -> float:
    """Seconds until ``base`` answered ``/readyz`` with 200 ``hits`` times (loading a million-item
    bundle takes a while); raises if the server dies or the time runs out."""
    start = time.monotonic()
    ready = 0
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                ready += resp.status == 200
                if ready >= hits:
                    return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout_s or server.poll() is not None:
            raise RuntimeError(f"the server at {base} did not become ready")
        time.sleep(1 if hits > 1 else 0.05)


def load_arguments(description: str | None) -> argparse.ArgumentParser:
    """The options every serving load benchmark shares: the world's size, the load, the cache."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/feedrec-bench-serve"))
    return parser


def main() -> int:
    parser = load_arguments(__doc__)
    parser.add_argument("--workers", type=int, default=2, help="Server processes (uvicorn workers).")
    parser.add_argument("--rebuild", action="store_true", help="Build the bundle again even if one is cached.")
    parser.add_argument(
        "--realtime-top",
        type=int,
        default=None,
        help="Serve the cached bundle with this many candidates per request scored by the real-time ranker.",
    )
    args = parser.parse_args()
    built = ensure_built(args.workspace, args.users, args.items, args.days, rebuild=args.rebuild)
    model_users = known_users(args.workspace)
    served = serve_variant(args.workspace, args.realtime_top)

    port = free_port()
    server = start_server(args.workspace, port, workers=args.workers)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, hits=10)  # 10 answers: every worker has loaded the bundle
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
