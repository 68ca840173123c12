"""Continuous training in the live loop: recovery after a taste shift, and a safe rollout of a
broken candidate. (docs/BENCHMARKS.md, "Continuous training: recovery and safe rollout")

    python benchmarks/bench_continuous.py [--days 2] [--after 12]

Starts from bench_monitor's steady state (a deployment serving its world for a week, retrained,
then a day and a half more; ``python benchmarks/bench_monitor.py`` makes it).

Recovery. Tastes and the topic mix shift as the run starts. For ``--days`` simulated days:
  frozen   the production bundle serves throughout;
  loop     `feedrec loop` runs beside the server (retrain on a monitor alert or every 12 h, on the
           last 3 days; shadow 1 h; canary 10 % of users; deploy: auto).
Then ``--after`` hours more, the same sessions for three policies: the frozen bundle, whatever
the loop has promoted by then (the loop goes on), and the full-knowledge model: trained on the
frozen run's post-shift days alone (everything the world did after the shift), as a reference of
what a bundle can reach there. Recovery = loop CTR / full-knowledge CTR over those hours.

Safe rollout. From the same start, no shift: `feedrec loop` with a drill (the candidate's
ranker's scores shuffled, train.drill_shuffled_ranker), forced through the offline gate, a 4 %
canary. Reported: whether the canary stopped it, the share of users who ever saw it, failed
requests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

from _common import write_result
from bench_loop import FEEDREC, free_port, natural_speed, sh
from bench_monitor import copy
from feedrec.loop.demo import serving
from feedrec.loop.traffic import TrafficConfig, run_traffic
from feedrec.registry import LocalRegistry

SERVE_ENV = {"FEEDREC_FEATURE_LOG_RATE": "0.5", "FEEDREC_WATCH_INTERVAL_S": "1"}


def policy_file(path: Path, **changes: dict) -> Path:
    policy = {
        "trigger": {"every_hours": 12, "on_drift": True},
        "retrain": {"window_days": 3},
        "shadow": {"hours": 1, "share": 0.2},
        "canary": {"share": 0.1, "min_hours": 1, "max_hours": 4},
        "poll_s": 1,
    }
    for key, value in changes.items():
        policy[key] = policy.get(key, {}) | value
    path.write_text(yaml.safe_dump(policy))
    return path


def serve_traffic(ws: Path, world: Path, cfg: TrafficConfig, *, loop: list[str] | None = None) -> dict:
    """Serve ``ws`` (its watcher picks promotions up) and drive ``cfg``; with ``loop``, a
    `feedrec loop` process runs beside them for the run. Returns the traffic summary and hourly."""
    with open(ws.parent / f"{ws.name}.serve.log", "a") as log, serving(ws, free_port(), log=log, env=SERVE_ENV) as url:
        proc = None
        if loop is not None:
            proc = subprocess.Popen([*FEEDREC, "loop", "-w", str(ws), *loop], stdout=log, stderr=subprocess.STDOUT)
        try:
            result = run_traffic(world, TrafficConfig(**{**cfg.__dict__, "url": url}), save=True)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(60)
    return {"summary": result.summary, "hourly": result.hourly}


def ctr_of(run: dict) -> float:
    s = run["summary"]
    rows = s["by_version"].values()
    clicks, impressions = sum(r["clicks"] for r in rows), sum(r["impressions"] for r in rows)
    return clicks / impressions if impressions else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--after", type=float, default=12.0)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--start", type=Path, default=Path("/tmp/feedrec-bench-monitor/start"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/feedrec-bench-continuous"))
    parser.add_argument("--skip-recovery", action="store_true")
    args = parser.parse_args()
    if not (args.start / "version.json").exists():
        raise SystemExit(f"{args.start} is missing: run benchmarks/bench_monitor.py first")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    speed = natural_speed(args.start / "world", args.rps)
    hours = TrafficConfig(url="http://127.0.0.1", seconds=args.days * 24 / speed, rps=args.rps, speed=speed)
    after = TrafficConfig(url="http://127.0.0.1", seconds=args.after / speed, rps=args.rps, speed=speed, seed=5)
    result: dict = {
        "args": {k: str(v) for k, v in vars(args).items()},
    }

    if not args.skip_recovery:
        runs: dict[str, dict] = {}
        for name in ("frozen", "loop"):
            copy([(args.start / "ws", out / name / "ws"), (args.start / "world", out / name / "world")])
            shifted = TrafficConfig(**{**hours.__dict__, "seed": 4, "drift_at": "now"})
            loop = ["--policy", str(policy_file(out / "policy.yaml"))] if name == "loop" else None
            print(f"{name}: {args.days} shifted days", flush=True)
            runs[name] = serve_traffic(out / name / "ws", out / name / "world", shifted, loop=loop)
        # The full-knowledge model: the frozen run's post-shift days, and nothing before them.
        ws_full, world_full = out / "full" / "ws", out / "full" / "world"
        copy([(out / "frozen" / "ws", ws_full), (out / "frozen" / "world", world_full)])
        sh("ingest", str(world_full / "items_published.parquet"), "--kind", "items", "-w", str(ws_full))
        full = json.loads(sh("train", "-w", str(ws_full), "--json", "--set", "train.tune=[]",
                             "--set", f"train.window_days={args.days}"))  # fmt: skip
        sh("models", "promote", full["version"], "-w", str(ws_full))
        print(f"after: {args.after} h for frozen, loop, full knowledge ({full['version']})", flush=True)
        later = {
            "frozen": serve_traffic(out / "frozen" / "ws", out / "frozen" / "world", after),
            "loop": serve_traffic(
                out / "loop" / "ws", out / "loop" / "world", after, loop=["--policy", str(out / "policy.yaml")]
            ),
            "full_knowledge": serve_traffic(ws_full, world_full, after),
        }
        history = LocalRegistry(out / "loop" / "ws" / "registry").history()
        ctr = {name: round(ctr_of(run), 5) for name, run in later.items()}
        result["recovery"] = {
            "ctr_after": ctr,
            "loop_vs_full_knowledge": round(ctr["loop"] / ctr["full_knowledge"], 4) if ctr["full_knowledge"] else None,
            "frozen_vs_full_knowledge": round(ctr["frozen"] / ctr["full_knowledge"], 4)
            if ctr["full_knowledge"]
            else None,
            "ctr_shifted_days": {name: round(ctr_of(run), 5) for name, run in runs.items()},
            "hourly": {name: runs[name]["hourly"] for name in runs} | {f"{n}_after": later[n]["hourly"] for n in later},
            "retrainings": [
                {k: e.get(k) for k in ("version", "action", "reason", "events_time", "time")}
                for e in history
                if e["action"] in ("trigger", "promote", "rejected", "canary_failed", "canary_passed")
            ],
            "errors": {name: run["summary"]["errors"] for name, run in {**runs, **later}.items()},
        }
        print(json.dumps({k: v for k, v in result["recovery"].items() if k != "hourly"}, indent=2), flush=True)

    # Safe rollout of a broken candidate.
    ws, world = out / "drill" / "ws", out / "drill" / "world"
    copy([(args.start / "ws", ws), (args.start / "world", world)])
    drill = policy_file(
        out / "drill.yaml",
        trigger={"every_hours": 1, "on_drift": False},
        gate={"force": True},
        canary={"share": 0.04, "max_hours": 24, "promote_on_timeout": False},
    )
    loop = ["--policy", str(drill), "--cycles", "1", "--set", "train.drill_shuffled_ranker=true"]
    print("drill: a shuffled-ranker candidate through the loop", flush=True)
    run = serve_traffic(ws, world, TrafficConfig(**{**hours.__dict__, "seed": 6}), loop=loop)
    history = LocalRegistry(ws / "registry").history()
    candidate = next((e["version"] for e in history if e["action"] == "trigger"), None)
    mine = [e for e in history if e["version"] == candidate]
    failed = next((e for e in mine if e["action"] in ("canary_failed", "canary_inconclusive")), {})
    result["safe_rollout"] = {
        "candidate": candidate,
        "actions": [e["action"] for e in mine],
        "gate": next((e["reason"] for e in mine if e["action"] == "gate"), None),
        "stopped_at_canary": any(e["action"] == "canary_failed" for e in mine),
        "rolled_back": any(e["action"] == "rolled_back" for e in mine),
        "promoted": any(e["action"] == "promote" for e in mine),
        "share_of_users_who_saw_it": failed.get("share_exposed"),
        "users_who_saw_it": failed.get("users_exposed"),
        "canary_hours": None,
        "lift": failed.get("lift"),
        "p_value": failed.get("p_value"),
        "failed_requests": run["summary"]["errors"],
        "requests": run["summary"]["requests"],
    }
    started = next((e for e in mine if e["action"] == "canary_started"), None)
    if started and failed:
        from datetime import datetime

        span = datetime.fromisoformat(failed["events_time"]) - datetime.fromisoformat(started["events_time"])
        result["safe_rollout"]["canary_hours"] = round(span.total_seconds() / 3600, 2)
    print(json.dumps(result["safe_rollout"], indent=2), flush=True)
    write_result("continuous", result)


if __name__ == "__main__":
    main()
