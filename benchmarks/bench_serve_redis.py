"""The serving load benchmark on Redis: two server processes sharing one ``redis-server``, and the
faults a deployment meets (a server killed, Redis restarted) under that load.

    python benchmarks/bench_serve_redis.py [--users 100000 --items 1000000 --days 2 --rps 200
                                            --seconds 60 --realtime-top 50]

The catalogue, users and bundle are the serving benchmark's (``bench_serve.py``: built once, cached
in ``--workspace``). A real ``redis-server`` (append-only file, fsync every second) and two
``feedrec serve`` processes (one worker each, two ports) with ``FEEDREC_REDIS_URL``: the first
folds the stored log into Redis at start, the second finds it folded. The client spreads requests
over the two like a load balancer (round-robin; a request whose connection fails goes to the other
server once), open loop, latency from each request's scheduled time. Phases, in order:

1. **Steady**: ``GET /v1/feed?k=50`` at ``--rps`` for ``--seconds`` (after a 10 s warm-up at half
   the rate). Beside it, once a second, a **propagation probe**: a feed from server B, a ``hide``
   of its first item posted to server A, then B's next feed for that user: is the item gone, and
   how long after the POST was sent did B answer without it.
2. **kill -9 of server A** 10 s into a 60 s run at ``--rps`` feeds plus 10 event batches/s (10
   events each, both servers); A is started again at once (what a supervisor does): how many
   requests had to go to B, errors, fallbacks, and when A serves again.
3. **Redis restart**: kill -9 of ``redis-server`` 10 s into a 40 s run, started again 3 s later
   (it reloads its append-only file): fallbacks while it is away, errors, and how long after the
   restart feeds are personalized again.

At the end every acknowledged event must be in the event store exactly once, and Redis's fold
position must reach the store's. Writes benchmarks/results/serve_redis.json.
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import numpy as np
import polars as pl

from _common import free_port, write_result
from bench_serve import (
    SERVING_CANDIDATES,
    ensure_built,
    known_users,
    load_arguments,
    run_load,
    serve_variant,
    stage_totals,
    start_server,
    summarize,
    wait_ready,
)
from feedrec.data.store import LocalEventStore
from feedrec.redis.local import LocalRedis

FAST_TAIL = {"FEEDREC_TAIL_INTERVAL_S": "0.5"}
RUN = f"bench{time.time_ns()}"  # event ids unique to this run: the cached store keeps earlier runs' events


def per_second(trace: Any) -> list[dict[str, object]]:
    """The run second by second: feeds, not answered, fallbacks, p99 (where recovery shows)."""
    second = trace.sent_at.astype(int)
    rows = []
    for s in np.unique(second):
        at = second == s
        rows.append(
            {
                "second": int(s),
                "errors": int((trace.status[at] != 200).sum()),
                "to_other_server": int(trace.retried[at].sum()),
                "fallbacks": int(trace.fallback[at].sum()),
                "p99_ms": round(float(np.percentile(trace.latency_ms[at], 99)), 1),
            }
        )
    return rows


def recovered_after(rows: list[dict[str, object]], since_s: float, key: str) -> float | None:
    """Seconds from ``since_s`` to the first second from which ``key`` stays 0 to the end."""
    last_bad = max((int(r["second"]) for r in rows if int(r[key]) > 0), default=None)  # type: ignore[call-overload]
    if last_bad is None or last_bad < since_s:
        return 0.0
    return None if last_bad == rows[-1]["second"] else float(last_bad + 1 - since_s)


async def probes(a: str, b: str, users: np.ndarray, at: str, *, seconds: float, k: int) -> list[dict[str, object]]:
    """Once a second: B's feed, a hide of its first item posted to A, B's next feed."""
    rng = np.random.default_rng(1)
    out: list[dict[str, object]] = []

    async def probe(http: aiohttp.ClientSession, event_id: str, user: str) -> dict[str, object]:
        async with http.get(f"{b}/v1/feed", params={"user_id": user, "k": str(k)}) as resp:
            shown = [i["item_id"] for i in (await resp.json())["items"]]
        event = {"event_id": event_id, "user_id": user, "item_id": shown[0], "timestamp": at, "type": "hide"}
        sent = time.perf_counter()
        async with http.post(f"{a}/v1/events", json={"events": [event]}) as resp:
            stored = resp.status == 200 and (await resp.json())["stored"] == 1
        acked = time.perf_counter()
        async with http.get(f"{b}/v1/feed", params={"user_id": user, "k": str(k)}) as resp:
            after = [i["item_id"] for i in (await resp.json())["items"]]
        answered = time.perf_counter()
        return {
            "stored": stored,
            "gone_on_next_feed": shown[0] not in after,
            "post_ms": (acked - sent) * 1e3,
            "post_to_next_feed_ms": (answered - sent) * 1e3,
        }

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await asyncio.sleep(1.0)
        for n in range(int(seconds) - 2):
            started = time.perf_counter()
            try:
                out.append(await probe(http, f"{RUN}-probe-{n}", str(users[rng.integers(users.size)])))
            except (aiohttp.ClientError, TimeoutError, KeyError, IndexError) as exc:
                out.append({"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(max(0.0, started + 1.0 - time.perf_counter()))
    return out


def event_batches(users: np.ndarray, items: np.ndarray, at: str, prefix: str):  # type: ignore[no-untyped-def]
    """``post_batch`` for ``run_load``: 10 events (5 impressions, 5 clicks) of known users and items."""
    rng = np.random.default_rng(2)

    def batch(j: int) -> list[dict[str, object]]:
        us, its = users[rng.integers(users.size, size=5)], items[rng.integers(items.size, size=5)]
        return [
            {"event_id": f"{prefix}-{j}-{i}-{t}", "user_id": str(u), "item_id": str(it), "timestamp": at, "type": t}
            for i, (u, it) in enumerate(zip(us, its, strict=True))
            for t in ("impression", "click")
        ]

    return batch


def main() -> int:
    parser = load_arguments(__doc__)
    parser.add_argument("--realtime-top", type=int, default=50)
    parser.add_argument("--phases", default="steady,kill,redis")
    parser.add_argument(
        "--reuse-redis",
        action="store_true",
        help="Start on the last run's Redis data (else an empty Redis folds the log).",
    )
    parser.add_argument("--result", default="serve_redis", help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    phases = args.phases.split(",")
    built = ensure_built(args.workspace, args.users, args.items, args.days)
    served = serve_variant(args.workspace, args.realtime_top)
    users = known_users(args.workspace)
    store = LocalEventStore(args.workspace)
    items = np.asarray(store.items().column("item_id").to_pylist())
    at = store.scan(columns=["timestamp"]).column("timestamp").to_pylist()[-1].isoformat()

    redis_dir = args.workspace / "redis"
    if not args.reuse_redis:
        shutil.rmtree(redis_dir, ignore_errors=True)  # the first server folds the log into an empty Redis
    # fsync every second: Redis's production setting (what it holds is derived from the event store)
    redis_server = LocalRedis(redis_dir, fsync="everysec", start_timeout_s=120)
    url = redis_server.url
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    env = {"FEEDREC_REDIS_URL": url, **FAST_TAIL}
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {
        "catalogue_items": args.items,
        "users": args.users,
        "k": args.k,
        "candidates": sum(SERVING_CANDIDATES.values()),
        "served": served,
        "target_rps": args.rps,
        "server_processes": 2,
        "build": built,
    }
    try:
        for port, base in zip(ports, bases, strict=True):  # the first folds the log into Redis
            procs.append(start_server(args.workspace, port, workers=1, **env))
            result.setdefault("ready_s", []).append(round(wait_ready(base, procs[-1], timeout_s=900), 1))
        print(f"both servers ready: {result['ready_s']} s", file=sys.stderr)
        gc.collect()
        gc.freeze()
        asyncio.run(run_load(bases, users, rps=args.rps / 2, seconds=10, k=args.k))  # warm-up, not measured

        if "steady" in phases:

            async def steady() -> tuple[Any, list[dict[str, object]]]:
                load = run_load(bases, users, rps=args.rps, seconds=args.seconds, k=args.k)
                probe = probes(bases[0], bases[1], users, at, seconds=args.seconds, k=args.k)
                return await asyncio.gather(load, probe)  # type: ignore[return-value]

            trace, probed = asyncio.run(steady())
            result["steady"] = summarize(trace) | {"seconds": args.seconds}
            answered = [p for p in probed if "error" not in p]
            to_next = np.array([p["post_to_next_feed_ms"] for p in answered] or [np.nan])
            result["steady"]["server_mean_ms_by_stage"] = {
                stage: round(total / max(count, 1) * 1e3, 3) for stage, (total, count) in stage_totals(bases[1]).items()
            }
            result["propagation"] = {
                "probes": len(probed),
                "probe_errors": [p["error"] for p in probed if "error" in p],
                "stored": sum(bool(p["stored"]) for p in answered),
                "gone_on_next_feed_from_the_other": sum(bool(p["gone_on_next_feed"]) for p in answered),
                "post_p50_ms": round(float(np.median([p["post_ms"] for p in answered] or [np.nan])), 1),
                "post_to_next_feed_p50_ms": round(float(np.median(to_next)), 1),
                "post_to_next_feed_max_ms": round(float(to_next.max()), 1),
                "ack_to_next_feed_p50_ms": round(
                    float(np.median([p["post_to_next_feed_ms"] - p["post_ms"] for p in answered] or [np.nan])), 1
                ),
                "within_100ms": int((to_next < 100).sum()),
                # Where the probes' POSTs spent their time on server A (means, ms).
                "post_mean_ms_by_stage": {
                    stage: round(total / max(count, 1) * 1e3, 3)
                    for stage, (total, count) in stage_totals(bases[0]).items()
                    if stage.startswith("events")
                },
            }
            print(json.dumps({"steady": result["steady"], "propagation": result["propagation"]}), file=sys.stderr)

        acked: list[str] = []

        def faulted(seconds: float, name: str, fault: tuple[float, str, Any]) -> tuple[Any, list[dict[str, object]]]:
            """A run of feeds at --rps and 10 event batches/s with ``fault`` at its time."""
            batches = event_batches(users, items, at, f"{RUN}-{name}")
            load = run_load(
                bases,
                users,
                rps=args.rps,
                seconds=seconds,
                k=args.k,
                posts_per_s=10,
                post_batch=batches,
                faults=[fault],
            )
            trace = asyncio.run(load)
            acked.extend(trace.acked)
            return trace, per_second(trace)

        if "kill" in phases:

            def kill_and_restart() -> dict[str, float]:
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait()
                procs[0] = start_server(args.workspace, ports[0], workers=1, **env)  # the supervisor's restart
                return {"restarted_server_ready_s": round(wait_ready(bases[0], procs[0], timeout_s=600), 1)}

            trace, rows = faulted(60.0, "kill", (10.0, "kill -9 of server A, then restarted", kill_and_restart))
            result["kill"] = summarize(trace) | {
                "faults": trace.fault_log,
                "seconds_until_no_request_needs_the_other_server": recovered_after(rows, 10, "to_other_server"),
                "per_second": rows,
            }
            print(json.dumps({k: v for k, v in result["kill"].items() if k != "per_second"}), file=sys.stderr)

        if "redis" in phases:

            def restart_redis() -> dict[str, float]:
                redis_server.kill()
                time.sleep(3.0)  # the outage
                started = time.perf_counter()
                redis_server.start()  # the same port and folder: it reloads its append-only file
                return {"outage_s": 3.0, "redis_reloaded_s": round(time.perf_counter() - started, 2)}

            fault = (10.0, "kill -9 of redis-server, started again 3 s later", restart_redis)
            trace, rows = faulted(40.0, "redis", fault)
            back_at = 10.0 + 3.0 + float(trace.fault_log[0]["detail"]["redis_reloaded_s"])  # type: ignore[index]
            result["redis_restart"] = summarize(trace) | {
                "faults": trace.fault_log,
                "seconds_after_restart_until_no_fallbacks": recovered_after(rows, back_at, "fallbacks"),
                "per_second": rows,
            }
            print(json.dumps({k: v for k, v in result["redis_restart"].items() if k != "per_second"}), file=sys.stderr)

        ids = store.scan(columns=["event_id"]).column("event_id").to_pylist()
        stored = pl.Series(ids)
        result["acknowledged_events"] = len(acked)
        result["acknowledged_missing_from_the_store"] = len(set(acked) - set(ids))
        result["duplicate_ids_in_the_store"] = int(stored.len() - stored.n_unique())
        from feedrec.redis import namespace_for
        from feedrec.redis.online import RedisOnlineStore

        shared = RedisOnlineStore(
            pl.DataFrame(pl.from_arrow(store.items())), url=url, namespace=namespace_for(args.workspace)
        )
        deadline = time.monotonic() + 60
        while shared.meta["position"] < store.position() and time.monotonic() < deadline:
            time.sleep(0.2)
        result["redis_caught_up_with_the_store"] = shared.meta["position"] >= store.position()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
        redis_server.stop()
    print(json.dumps(result, indent=2))
    write_result(args.result, result)
    ok = result["acknowledged_missing_from_the_store"] == 0 and result["redis_caught_up_with_the_store"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
