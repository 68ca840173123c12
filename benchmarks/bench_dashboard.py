"""How long each dashboard page takes the server to render, with a registry of 50 versions, a week
of serving logs and 10 experiments (docs/BENCHMARKS.md, "The dashboard: page render times").

    python benchmarks/bench_dashboard.py [--users 2000] [--items 4000] [--repeat 30] [--keep]

1. A world (2,000 users, 4,000 items, 7 logged days) is simulated and ingested, and the feed
   pipeline trained (v0001). 49 more bundles are registered through the registry (v0002-v0050,
   the same model under new versions, each with its report and reference profile), with a history
   of 40 promotions and rollbacks.
2. Ten experiments are started in one layer (v0001 against v0002-v0011, a tenth of the users
   each), and the world's users use the server for a simulated week (feature log at 10 %): a week
   of served feeds, exposures, feature-log rows and events. `feedrec monitor` judges the last
   day (at this traffic, 6 hours of v0001 hold fewer rows than its minimum).
3. A fresh `feedrec serve` on that workspace: each page is fetched ``--repeat`` times after a warm-up
   (the experiment analyses and the explorer's compared bundle are computed or loaded by the first
   look, in the background or once); the server's own time (``Server-Timing``: arrival to rendered)
   and the client's round trip are recorded. The experiment analyses' own compute times are
   reported beside. A screenshot of the overview under traffic goes to docs/images/.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx

from _common import ROOT, write_result
from bench_loop import free_port, sh
from feedrec.data.store import LocalEventStore
from feedrec.experiments.exposures import read_records
from feedrec.experiments.store import ExperimentStore
from feedrec.loop.demo import serving
from feedrec.loop.traffic import TrafficConfig, run_traffic
from feedrec.monitoring.featurelog import read_feature_log
from feedrec.registry import LocalRegistry

TOKEN = "bench"


def prepare(out: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    shutil.rmtree(out, ignore_errors=True)
    ws, sim = out / "ws", out / "sim"
    sh("simulate", "--users", str(args.users), "--items", str(args.items), "--days", "7", "--out", str(sim),
       "--set", "simulator.live_days=9")  # fmt: skip
    for kind in ("events", "items", "users"):
        sh("ingest", str(sim / f"{kind}.parquet"), "--kind", kind, "-w", str(ws))
    sh("train", "-w", str(ws), "--set", "train.tune=[]", "--json")
    registry = LocalRegistry(ws / "registry")
    first = registry.get("v0001")
    model = registry.load_model("v0001")
    report = registry.artifact("v0001", "report.html")
    profile = registry.artifact("v0001", "profile.json")
    t = time.perf_counter()
    for n in range(2, 51):
        registry.register(
            model, replace(first, version=f"v{n:04d}"), report, artifacts={"profile.json": profile or "{}"}
        )
    print(f"registered 49 more bundles in {time.perf_counter() - t:.0f} s", flush=True)
    for n in range(20):  # a history: promotions and rollbacks among the first versions, v0001 last
        registry.promote(f"v{2 + n % 9:04d}", reason="bench history")
        registry.rollback()
    registry.promote("v0001", reason="bench: production")
    experiments = ExperimentStore(ws / "experiments")
    for n in range(10):
        name = f"exp{n:02d}"
        experiments.create(
            {
                "name": name,
                "arms": [{"name": "control", "version": "v0001"}, {"name": "treatment", "version": f"v{n + 2:04d}"}],
                "traffic": 0.1,
                "guardrails": ["hides_per_user", "latency_p99"],
            }
        )
        experiments.start(name)
    world = sim / "world"
    week = TrafficConfig(url="http://127.0.0.1", seconds=168 / args.speed, rps=args.rps, speed=args.speed, seed=1)
    print(f"a simulated week of traffic: {week.seconds:.0f} s at {args.rps} sessions/s", flush=True)
    env = {"FEEDREC_FEATURE_LOG_RATE": "0.1"}
    with open(out / "serve-week.log", "w") as log, serving(ws, free_port(), log=log, env=env) as url:
        summary = run_traffic(world, replace(week, url=url), save=True).summary
    print(f"  {summary['sessions']} sessions, errors {summary['errors']}", flush=True)
    (out / "prepared").write_text(json.dumps(summary, default=str))
    return ws, world


def _timing(response: httpx.Response) -> float:
    match = re.search(r"dur=([0-9.]+)", response.headers.get("server-timing", ""))
    return float(match.group(1)) if match else float("nan")


def measure(url: str, path: str, repeat: int) -> dict[str, float]:
    server, client = [], []
    with httpx.Client(timeout=60) as http:
        for _ in range(repeat):
            t = time.perf_counter()
            response = http.get(url + path)
            client.append((time.perf_counter() - t) * 1e3)
            response.raise_for_status()
            server.append(_timing(response))
    server.sort()
    return {
        "server_p50_ms": round(statistics.median(server), 1) if server[0] == server[0] else None,
        "server_p95_ms": round(server[int(0.95 * (len(server) - 1))], 1) if server[0] == server[0] else None,
        "server_max_ms": round(server[-1], 1) if server[0] == server[0] else None,
        "client_p50_ms": round(statistics.median(client), 1),
        "bytes": len(response.content),
    }


def warm_analyses(url: str, names: list[str], timeout_s: float = 600) -> dict[str, float]:
    """Look at each experiment until its analysis is there; its compute time, as the page says."""
    seconds = {}
    with httpx.Client(timeout=60) as http:
        for name in names:
            deadline = time.monotonic() + timeout_s
            while True:
                page = http.get(f"{url}/dashboard/experiments/{name}").text
                found = re.search(r"Analysis computed .*? in ([0-9.]+) s", page)
                if found:
                    seconds[name] = float(found.group(1))
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the analysis of {name} did not finish in {timeout_s} s")
                time.sleep(0.5)
    return seconds


def screenshot(url: str, world: Path, path: Path) -> None:
    """The overview while the world's users use the server (for the README)."""
    from playwright.sync_api import sync_playwright

    stop = threading.Event()
    cfg = TrafficConfig(url=url, seconds=120, rps=20, speed=0.5, seed=7, concurrency=8)
    traffic = threading.Thread(target=lambda: run_traffic(world, cfg, save=False, stop=stop.is_set))
    traffic.start()
    try:
        time.sleep(40)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url + "/dashboard", wait_until="networkidle")
            page.wait_for_timeout(6000)  # one refresh
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=False)
            browser.close()
    finally:
        stop.set()
        traffic.join()


def setup(ws: Path, registry: LocalRegistry, names: list[str]) -> dict[str, object]:
    """What the pages were rendered over."""
    served = [json.loads(line) for f in sorted((ws / "serving").glob("impressions.jsonl*")) for line in f.open()]
    times = sorted(r["time"] for r in served if r.get("time"))
    return {
        "versions": len(registry.list()),
        "history_entries": len(registry.history()),
        "experiments": len(names),
        "events": LocalEventStore(ws).count(),
        "served_feeds": len(served),
        "served_span": [times[0], times[-1]] if times else None,
        "exposures": len(read_records(ExperimentStore(ws / "experiments").exposures_dir)),
        "feature_log_rows": read_feature_log(ws / "serving" / "features").height,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--rps", type=float, default=30.0)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated hours per wall second")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("/tmp/feedrec-bench-dashboard"))
    parser.add_argument("--keep", action="store_true", help="reuse the workspace prepared by an earlier run")
    args = parser.parse_args()
    ws, world = (args.out / "ws", args.out / "sim" / "world") if args.keep else prepare(args.out, args)
    sh("monitor", "-w", str(ws), "--json", "--set", "monitor.window_hours=24")  # the last day of the week
    registry = LocalRegistry(ws / "registry")
    names = sorted(ExperimentStore(ws / "experiments").load().experiments)
    env = {"FEEDREC_ADMIN_TOKEN": TOKEN, "FEEDREC_FEATURE_LOG_RATE": "0.1"}
    with open(args.out / "serve-pages.log", "w") as log, serving(ws, free_port(), log=log, env=env) as url:
        analyses = warm_analyses(url, names)
        user = "u7"
        httpx.get(f"{url}/dashboard/explorer", params={"user_id": user, "compare": "v0030"}, timeout=120)
        pages = {
            "overview": "/dashboard",
            "overview (refresh JSON)": "/dashboard/api/overview",
            "models": "/dashboard/models",
            "model": "/dashboard/models/v0025",
            "experiments": "/dashboard/experiments",
            "experiment": f"/dashboard/experiments/{names[0]}",
            "monitoring": "/dashboard/monitoring",
            "explorer": f"/dashboard/explorer?user_id={user}&compare=v0030",
        }
        results = {name: measure(url, path, args.repeat) for name, path in pages.items()}
        screenshot(url, world, ROOT / "docs" / "images" / "dashboard_overview.png")
    for name, r in results.items():
        print(
            f"{name:26s} server p50 {r['server_p50_ms']} ms, p95 {r['server_p95_ms']} ms, max {r['server_max_ms']} ms"
        )
    payload = {
        "setup": setup(ws, registry, names),
        "pages": results,
        "analysis_seconds": analyses,
        "target_ms": 300,
        "met": all((r["server_p95_ms"] or 0) < 300 for r in results.values()),
    }
    write_result("dashboard", payload)


if __name__ == "__main__":
    main()
