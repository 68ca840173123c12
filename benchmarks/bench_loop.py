"""The live loop benchmark: each policy serves the same simulated users over HTTP, against the oracle.

1. Simulate a world (default 20,000 users, 50,000 items, 14 logged days) and ingest its log.
2. Train, with `feedrec train --model M`, popularity, implicit ALS, the candidate fusion and the
   full pipeline; register the pipeline a second time with `serve_ranker=retrieval` (the pipeline
   as served before the real-time ranker).
3. For each policy, from a copy of the same workspace and the same world state: promote it, start
   `feedrec serve`, drive `--days` simulated days of traffic through it (`feedrec.loop.traffic`,
   the same seed: the same sessions and dice), stop it. The table: every online metric, per policy.
4. Retrain: the real-time pipeline serves two live days at the world's own session rate
   (`--retrain-rps` sessions/s, the speed set to match), tastes shifting as they begin
   (`--retrain-drift now`); `feedrec train --set train.refit_on_all=true` on the 14 + 2 days (and
   the items published meanwhile); the next `--live-days` days are served by the 14-day bundle and
   by the retrained one (the same sessions and dice).
5. What limits the oracle fraction, measured offline on a sample of the run's sessions: the share of
   the oracle's items that exist in the bundle's catalogue (cold items published after training),
   the share retrieved as candidates (retrieval recall), and the expected CTR of the best slate
   among the candidates (what a perfect ranker of those candidates would reach).

    python benchmarks/bench_loop.py --rps 30 --speed 2          # the issue's sizes (about an hour on 2 cores)
    python benchmarks/bench_loop.py --rps 30 --speed 2 --keep   # reuse the simulated, trained workspace
    python benchmarks/bench_loop.py --users 2000 --items 5000 --speed 4 --out /tmp/loop-small
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result
from feedrec.data.world import World, examine
from feedrec.loop.demo import serving
from feedrec.loop.oracle import oracle_slate
from feedrec.loop.traffic import TrafficConfig, run_traffic, schedule
from feedrec.registry import LocalRegistry

FEEDREC = [sys.executable, "-m", "feedrec.cli"]
POLICIES = ("popularity", "als", "candidates", "feedrec_retrieval_ranker", "feedrec_realtime_ranker")
MODELS = ("popularity", "als", "candidates", "feedrec")  # what `feedrec train --model` fits for POLICIES


def sh(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([*FEEDREC, *args], capture_output=True, text=True, env=(os.environ | (env or {})))
    if done.returncode:
        raise RuntimeError(f"feedrec {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def train(ws: Path, model: str, *, refit_on_all: bool = False) -> str:
    # Tuning (the candidate fusion's weights) is what `feedrec train` does by default; a single-source
    # policy has nothing it would use.
    tune = ["--set", "train.tune=[]"] if model in ("popularity", "als") else ["--set", "train.tune=[candidates]"]
    refit = ["--set", "train.refit_on_all=true"] if refit_on_all else []
    out = json.loads(sh("train", "-w", str(ws), "--model", model, "--json", *tune, *refit))
    print(f"  trained {model}: {out['version']} in {sum(out['seconds'].values()):.0f} s", flush=True)
    return str(out["version"])


def register_retrieval_variant(ws: Path, version: str) -> str:
    """The same fitted pipeline, served with its retrieval-feature ranker: a second version."""
    import dataclasses

    registry = LocalRegistry(ws / "registry")
    model = registry.load_model(version)
    model.set_params(serve_ranker="retrieval")
    variant = registry.next_version()
    registry.register(model, dataclasses.replace(registry.get(version), version=variant))
    return variant


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_drive(ws: Path, world: Path, version: str, cfg: TrafficConfig, workers: int, save: bool) -> dict:
    LocalRegistry(ws / "registry").promote(version, reason="bench_loop")
    with open(ws / "serve.log", "w") as log, serving(ws, free_port(), workers=workers, log=log) as url:
        result = run_traffic(world, TrafficConfig(**{**cfg.__dict__, "url": url}), save=save)
    summary = result.summary
    served = summary["by_version"].get(version)
    if served is None:
        raise RuntimeError(f"{version} served nothing: {summary}")
    return summary | {"policy_version": version, "hourly": result.hourly}


def limits(ws: Path, world_dir: Path, version: str, cfg: TrafficConfig, n: int = 300) -> dict[str, float]:
    """Where the oracle's clicks are lost, on ``n`` of the run's sessions (offline, from the start state)."""
    world = World.load(world_dir)
    model = LocalRegistry(ws / "registry").load_model(version)
    sessions = schedule(world, cfg, world.clock)
    rng = np.random.default_rng(0)
    picked = [sessions[i] for i in rng.choice(len(sessions), min(n, len(sessions)), replace=False)]
    catalogue = set(model.item_ids_.tolist())
    in_catalogue = retrieved = 0
    oracle_sum = best_candidates_sum = blind_sum = 0.0
    for s in picked:
        items, p = oracle_slate(world, s.user, s.t, cfg.k)
        ids = [f"i{i}" for i in items]
        in_catalogue += sum(i in catalogue for i in ids)
        pipeline = model.serving()
        c = pipeline.retrieve(np.asarray([f"u{s.user}"]), cfg.k)
        candidate_ids = set(model.item_ids_[c.item].tolist())
        retrieved += sum(i in candidate_ids for i in ids)
        oracle_sum += float(p.sum())
        # The best slate among the candidates: the oracle restricted to what retrieval proposed.
        cand = np.asarray([int(i[1:]) for i in candidate_ids], np.int64)
        seen = world.exposures.get(s.user, cand)
        logit = world.logit(np.full(cand.size, s.user), cand, np.full(cand.size, s.t, np.int64), seen)
        rel = 1 / (1 + np.exp(-logit))
        top = np.sort(rel)[::-1][: cfg.k]
        weights = examine(np.arange(top.size))
        best_candidates_sum += float((weights * top).sum())
        # The same, ranked by everything but the user-item latent match: the best a ranker can do
        # from what the log shows of tastes, quality, age and fatigue (the latent term has no feature).
        latent = world.latent_match(np.full(cand.size, s.user), cand)
        blind = np.argsort(-(logit - latent), kind="stable")[: cfg.k]
        blind_sum += float((weights[: blind.size] * rel[blind]).sum())
    slots = len(picked) * cfg.k
    return {
        "sessions": len(picked),
        "oracle_items_in_catalogue": round(in_catalogue / slots, 4),
        "oracle_items_retrieved": round(retrieved / slots, 4),
        "oracle_ctr": round(oracle_sum / slots, 4),
        "best_slate_of_candidates_ctr": round(best_candidates_sum / slots, 4),
        "best_slate_of_candidates_without_latent_match_ctr": round(blind_sum / slots, 4),
    }


def prepare_base(
    out: Path,
    users: int,
    items: int,
    days: int,
    *,
    sim_days: int,
    sim_settings: tuple[str, ...] = (),
    models: tuple[str, ...] = MODELS,
) -> dict[str, str]:
    """Simulate a world (``sim_days`` of it kept for live traffic; ``sim_settings``: more
    ``simulator.*`` settings), ingest its log into ``out/base`` and train ``models`` there;
    ``out/base/versions.json`` names their bundles (the pipeline twice: its real-time ranker and
    its retrieval-feature ranker)."""
    base, sim = out / "base", out / "sim"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print("simulate + ingest", flush=True)
    settings = [arg for setting in (f"simulator.live_days={sim_days}", *sim_settings) for arg in ("--set", setting)]
    sh("simulate", "--users", str(users), "--items", str(items), "--days", str(days), "--out", str(sim), *settings)
    for kind in ("events", "items", "users"):
        sh("ingest", str(sim / f"{kind}.parquet"), "--kind", kind, "-w", str(base))
    versions = {name: train(base, name) for name in models if name != "feedrec"}
    if "feedrec" in models:
        full = train(base, "feedrec")
        versions["feedrec_retrieval_ranker"] = register_retrieval_variant(base, full)
        versions["feedrec_realtime_ranker"] = full
    (base / "versions.json").write_text(json.dumps(versions))
    (out / "sim_settings.json").write_text(json.dumps(list(sim_settings)))
    return versions


def base_of(
    out: Path,
    sim_settings: tuple[str, ...] = (),
    models: tuple[str, ...] = MODELS,
) -> tuple[Path, Path, dict[str, str]]:
    """The base workspace, the world's folder and the trained versions under bench_loop's
    ``out`` (made with the issue's sizes when missing, from a world with ``sim_settings``), for
    the benchmarks that build on it."""
    base, world = out / "base", out / "sim" / "world"
    settings_file = out / "sim_settings.json"
    if not (base / "versions.json").exists():
        prepare_base(out, 20_000, 50_000, 14, sim_days=6, sim_settings=sim_settings, models=models)
    made_with = json.loads(settings_file.read_text()) if settings_file.exists() else []
    if made_with != list(sim_settings):
        raise SystemExit(
            f"{out} holds a world simulated with {made_with}, not {list(sim_settings)}: use another --loop"
        )
    return base, world, json.loads((base / "versions.json").read_text())


def natural_speed(world: Path, rps: float) -> float:
    """Simulated hours per wall second at which ``rps`` sessions per second is the world's own
    session rate (its users' activity: sessions per simulated day)."""
    return rps / (float(World.load(world).activity.sum()) / 24)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=14, help="logged days to train on")
    parser.add_argument("--live-days", type=float, default=2.0, help="simulated days of traffic per policy")
    parser.add_argument("--rps", type=float, default=25.0)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated hours per wall second")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--retrain-rps", type=float, default=60.0, help="sessions/s of the live days retrained on")
    parser.add_argument("--retrain-drift", default="now", help="drift_at for those days ('now', ISO, or 'none')")
    parser.add_argument("--out", type=Path, default=Path("/tmp/feedrec-bench-loop"))
    parser.add_argument("--keep", action="store_true", help="reuse the simulated, trained base workspace")
    args = parser.parse_args()
    out: Path = args.out
    base, sim = out / "base", out / "sim"
    seconds = args.live_days * 24 / args.speed
    cfg = TrafficConfig(url="http://127.0.0.1", seconds=seconds, rps=args.rps, speed=args.speed, seed=7)

    if not (args.keep and (base / "versions.json").exists()):
        prepare_base(out, args.users, args.items, args.days, sim_days=int(2 * args.live_days) + 2)
    versions = json.loads((base / "versions.json").read_text())

    runs: dict[str, dict] = {}
    for policy in POLICIES:
        ws, world = out / f"ws-{policy}", out / f"world-{policy}"
        for src, dst in ((base, ws), (sim / "world", world)):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        print(f"serving {policy} ({versions[policy]})", flush=True)
        runs[policy] = serve_and_drive(ws, world, versions[policy], cfg, args.workers, save=True)
        row = runs[policy]["by_version"][versions[policy]]
        print(f"  ctr {row['ctr']:.4f} expected {row['expected_ctr']:.4f} oracle {row['oracle_ctr']:.4f}", flush=True)

    # What limits the full pipeline against the oracle.
    diagnosis = limits(base, sim / "world", versions["feedrec_realtime_ranker"], cfg)

    # Retraining: the real-time pipeline serves two live days at the world's own session rate (so
    # that they weigh in training as logged days do), tastes shifting as they begin; then
    # `feedrec train` on the 14 + 2 days (and the items published meanwhile), and the next days
    # are served by the 14-day bundle and by the retrained one: the same sessions, the same dice.
    live_ws, live_world = out / "ws-live", out / "world-live"
    for src, dst in ((base, live_ws), (sim / "world", live_world)):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    live_speed = natural_speed(sim / "world", args.retrain_rps)
    live_cfg = TrafficConfig(
        url="http://127.0.0.1",
        seconds=args.live_days * 24 / live_speed,
        rps=args.retrain_rps,
        speed=live_speed,
        seed=8,
        drift_at=None if args.retrain_drift == "none" else args.retrain_drift,
    )
    print(f"live days for retraining: {live_cfg.seconds:.0f} s at {args.retrain_rps} sessions/s", flush=True)
    live_run = serve_and_drive(live_ws, live_world, versions["feedrec_realtime_ranker"], live_cfg, args.workers, True)
    sh("ingest", str(live_world / "items_published.parquet"), "--kind", "items", "-w", str(live_ws))
    retrained = train(live_ws, "feedrec", refit_on_all=True)
    after: dict[str, dict] = {}
    next_cfg = TrafficConfig(**{**cfg.__dict__, "seed": 9})
    for name, version in (("14-day bundle", versions["feedrec_realtime_ranker"]), ("retrained", retrained)):
        ws, world = out / f"ws-after-{version}", out / f"world-after-{version}"
        for src, dst in ((live_ws, ws), (live_world, world)):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        print(f"next days: {name} ({version})", flush=True)
        after[name] = serve_and_drive(ws, world, version, next_cfg, args.workers, save=False)

    def table(results: dict[str, dict]) -> dict[str, dict]:
        return {
            name: {"version": r["policy_version"], **r["by_version"][r["policy_version"]], "errors_total": r["errors"]}
            for name, r in results.items()
        }

    simple = ("popularity", "als", "candidates")
    policies = table(runs)
    best_simple = max(policies[p]["ctr"] for p in simple)
    full = policies["feedrec_realtime_ranker"]
    payload = {
        "command": "python benchmarks/bench_loop.py " + " ".join(sys.argv[1:]),
        "world": {"users": args.users, "items": args.items, "logged_days": args.days},
        "traffic": {
            "seconds": seconds,
            "rps": args.rps,
            "speed": args.speed,
            "seed": cfg.seed,
            "workers": args.workers,
        },
        "policies": policies,
        "targets": {
            "full_over_best_simple_ctr": round(full["ctr"] / best_simple, 3),
            "full_over_oracle_expected": round(full["expected_ctr"] / full["oracle_ctr"], 3),
            "realtime_over_retrieval_ranker_ctr": round(full["ctr"] / policies["feedrec_retrieval_ranker"]["ctr"], 3),
        },
        "limits": diagnosis,
        "retraining": {
            "live_days": {
                "sessions": live_run["sessions"],
                "rps": args.retrain_rps,
                "speed": round(live_speed, 4),
                "drift_at": live_run["drift_at"],
                "served": live_run["by_version"][versions["feedrec_realtime_ranker"]],
            },
            "retrained_version": retrained,
            "next_days": table(after),
        },
        "hourly": {name: r["hourly"] for name, r in runs.items()},
    }
    path = write_result("loop", payload)
    print(json.dumps({k: v for k, v in payload.items() if k != "hourly"}, indent=1))
    print(f"wrote {path} ({machine()})")


if __name__ == "__main__":
    main()
