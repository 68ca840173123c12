"""Monitoring in the live loop: does `feedrec monitor` catch a taste shift within 6 simulated hours,
stay quiet over the same span of a world without one, and flag an online counter that stopped
updating? (docs/BENCHMARKS.md, "Monitoring: detection, false alarms and silent breakage")

    python benchmarks/bench_monitor.py [--seeds 10] [--keep] [--rejudge]

1. A world (3,000 users, 6,000 items, 10 logged days) is simulated and ingested, and the feed
   pipeline trained on it (v0001).
2. Warm-up: v0001 serves the world for ``--warmup-days`` simulated days over HTTP, then the
   pipeline is retrained on everything (log + live days) and the retrained bundle promoted: a
   deployment in its steady state, whose 7-day counters reflect its own serving, not the
   simulator's logging policy. It serves one more day (its serving baseline: what drift is
   measured against, monitor.reference=serving).
3. From that moment, for each traffic seed, two runs of 6 simulated hours from the same state:
   the world as it is, and the world whose tastes and topic mix shift as the run starts
   (``--drift-at now``). After each, `feedrec monitor` judges [start, start + h) for h = 1..6:
   the first h with an alert is the detection time (shift) or a false alarm (no shift).
   "The features that moved" is measured against the counterfactual only the benchmark has: the
   features the server logged in the shifted run against those of the same seed's unshifted run
   (PSI or mean shift at least ``MOVED``), next to the features the monitor alerted on by hour 6.
4. Silent breakage: one more 6-hour run, the server started with
   FEEDREC_FAULT_FROZEN_COUNTERS='["item_clicks_1h"]'; one monitor window over it.

Each run's workspace is kept under ``--out``/runs/; ``--rejudge`` only runs the monitor again over
them (what a change to the monitor needs: the traffic is the same).
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from _common import write_result
from bench_loop import free_port, natural_speed, sh
from feedrec.features.definitions import FEATURE_NAMES
from feedrec.loop.demo import serving
from feedrec.loop.traffic import TrafficConfig, run_traffic
from feedrec.metrics.drift import mean_shift, numeric_histogram, psi, quantile_cuts
from feedrec.monitoring.featurelog import read_feature_log

LOG_ALL = {"FEEDREC_FEATURE_LOG_RATE": "1"}
#: The monitor runs with Wasserstein alerts on at Evidently's default; the default verdict (PSI
#: only) is the same run's alerts less the Wasserstein ones, so one pass judges both rules.
WASSERSTEIN = 0.1


def drive(ws: Path, world: Path, cfg: TrafficConfig, *, save: bool, env: dict[str, str] | None = None) -> dict:
    with open(ws.parent / f"{ws.name}.serve.log", "a") as log, serving(ws, free_port(), log=log, env=env) as url:
        result = run_traffic(world, TrafficConfig(**{**cfg.__dict__, "url": url}), save=save)
    return result.summary


def copy(pairs: list[tuple[Path, Path]]) -> None:
    for src, dst in pairs:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def monitor(ws: Path, since: datetime, until: datetime, *settings: str) -> dict | None:
    """`feedrec monitor` over [since, until) (with more ``--set`` ``settings``); None when it has no
    verdict (too few rows yet)."""
    sets = [arg for setting in settings for arg in ("--set", setting)]
    try:
        out = sh(
            "monitor", "-w", str(ws), "--since", since.isoformat(), "--until", until.isoformat(), "--json",
            "--set", f"monitor.wasserstein={WASSERSTEIN}", *sets,
        )  # fmt: skip
    except RuntimeError as exc:
        if "min_rows" in str(exc):
            return None
        raise
    return json.loads(out.strip().splitlines()[-1])


def first_alert(verdicts: dict[int, dict], *, without: str | None = None, kind: str | None = None) -> tuple:
    """The first hour whose verdict raised an alert (of ``kind``; not counting alerts on the
    statistic ``without``), and those alerts; (None, [])."""
    for h, verdict in sorted(verdicts.items()):
        alerts = [a for a in verdict["alerts"] if a["statistic"] != without and kind in (None, a["kind"])]
        if alerts:
            return h, alerts
    return None, []


def named(alerts: list[dict]) -> list[str]:
    return sorted(
        {f"{a['kind']}:{a['feature'] or ''}" + (f"({a['statistic']})" if a["feature"] else "") for a in alerts}
    )


def top(verdict: dict, statistic: str) -> list:
    values = [(n, s[statistic]) for n, s in verdict["features"].items() if statistic in s]
    return sorted(values, key=lambda x: -x[1])[:5]


#: A feature "moved" when the shifted run's values over the judged span are this far from the
#: same seed's unshifted run, by PSI (bins cut at the unshifted run's deciles) or by mean shift
#: (the standardized mean difference: what PSI's deciles miss in a mostly-zero counter): the
#: counterfactual only the benchmark knows (the same sessions in the same world, less the shift).
#: 0.1 for each: PSI's conventional "moderate shift", the standardized mean difference's
#: conventional "negligible" limit.
MOVED = 0.1


def counterfactual(unshifted: Path, shifted: Path, since: datetime, until: datetime) -> dict[str, dict[str, float]]:
    """Per statistic (``psi``, ``mean_shift``) and numeric served feature: the shifted run's logged
    values against the unshifted run's over [since, until) (the ground truth of "the features that
    moved"; one value per row, as the monitor judges row-level features)."""
    a = read_feature_log(unshifted / "serving" / "features", since, until)
    b = read_feature_log(shifted / "serving" / "features", since, until)
    out: dict[str, dict[str, float]] = {"psi": {}, "mean_shift": {}}
    for name in FEATURE_NAMES:
        if name not in a.columns or a.schema[name] != pl.Float64:
            continue
        x, y = (frame[name].fill_null(np.nan).to_numpy() for frame in (a, b))
        cuts = quantile_cuts(x)
        out["psi"][name] = round(psi(numeric_histogram(x, cuts), numeric_histogram(y, cuts)), 4)
        out["mean_shift"][name] = round(mean_shift(x, y), 4)
    return out


def moved(shifts: dict[str, dict[str, float]]) -> list[str]:
    """The features ``counterfactual`` says moved: either statistic at least ``MOVED``."""
    return sorted({name for of in shifts.values() for name, value in of.items() if value >= MOVED})


def prepare(out: Path, args: argparse.Namespace) -> Path:
    """Steps 1-2: the steady-state workspace and world under ``out/start``; returns it."""
    shutil.rmtree(out, ignore_errors=True)
    base, sim = out / "base", out / "sim"
    seed = ["--seed", str(args.world_seed)] if args.world_seed is not None else []
    sh("simulate", "--users", str(args.users), "--items", str(args.items), "--days", "10", "--out", str(sim),
       "--set", f"simulator.live_days={args.warmup_days + 4}", *seed)  # fmt: skip
    for kind in ("events", "items", "users"):
        sh("ingest", str(sim / f"{kind}.parquet"), "--kind", kind, "-w", str(base))
    sh("train", "-w", str(base), "--set", "train.tune=[]", "--json")
    world = sim / "world"
    fast = natural_speed(world, args.warmup_rps)
    print(f"warm-up: {args.warmup_days} days at {args.warmup_rps} sessions/s", flush=True)
    warm = TrafficConfig(
        url="http://127.0.0.1", seconds=args.warmup_days * 24 / fast, rps=args.warmup_rps, speed=fast, seed=99
    )
    drive(base, world, warm, save=True)
    sh("ingest", str(world / "items_published.parquet"), "--kind", "items", "-w", str(base))
    trained = json.loads(sh("train", "-w", str(base), "--set", "train.tune=[]", "--json"))
    sh("models", "promote", trained["version"], "-w", str(base))
    speed = natural_speed(world, args.rps)
    print(f"baseline day of {trained['version']}", flush=True)
    # 36 hours: its first day is the serving baseline, and the judged runs start at noon.
    day = TrafficConfig(url="http://127.0.0.1", seconds=36 / speed, rps=args.rps, speed=speed, seed=98)
    drive(base, world, day, save=True, env=LOG_ALL)
    start = out / "start"
    copy([(base, start / "ws"), (world, start / "world")])
    (start / "version.json").write_text(json.dumps({"version": trained["version"]}))
    return start


def judged_run(
    start: Path, run: Path, cfg: TrafficConfig, env: dict[str, str], *, rejudge: bool
) -> tuple[dict, datetime]:
    """One run from the start state into ``run`` (its summary and start time), or the kept one."""
    if not rejudge:
        copy([(start / "ws", run / "ws"), (start / "world", run / "world")])
        summary = drive(run / "ws", run / "world", cfg, save=False, env=env)
        shutil.rmtree(run / "world")
        (run / "summary.json").write_text(json.dumps(summary))
    return kept(run)


def kept(run: Path) -> tuple[dict, datetime]:
    """A kept run's traffic summary and its simulated start."""
    summary = json.loads((run / "summary.json").read_text())
    return summary, datetime.fromisoformat(summary["sim_start"].replace("Z", "+00:00"))


def hourly(ws: Path, t0: datetime, hours: int, *settings: str) -> dict[int, dict]:
    """`monitor` over [t0, t0 + h) for h = 1..``hours``: the verdicts by h (those it gave)."""
    verdicts = {}
    for h in range(1, hours + 1):
        verdict = monitor(ws, t0, t0 + timedelta(hours=h), *settings)
        if verdict is not None:
            verdicts[h] = verdict
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=6000)
    parser.add_argument("--warmup-days", type=int, default=7)
    parser.add_argument("--warmup-rps", type=float, default=40.0)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--hours", type=int, default=6)
    # Default: the simulator's own seed, one world for every set (sets then differ in what the
    # server's timing made it serve, not in the world or its sessions).
    parser.add_argument("--world-seed", type=int, default=None, help="draw a different world (simulate --seed)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/feedrec-bench-monitor"))
    parser.add_argument("--keep", action="store_true", help="reuse the steady-state start")
    parser.add_argument("--advance", type=float, default=0, help="serve the start this many more hours first")
    parser.add_argument("--rejudge", action="store_true", help="only run the monitor again over the kept runs")
    args = parser.parse_args()
    start = args.out / "start"
    if not ((args.keep or args.rejudge) and (start / "version.json").exists()):
        start = prepare(args.out, args)
    if args.advance and not args.rejudge:
        speed = natural_speed(start / "world", args.rps)
        more = TrafficConfig(url="http://127.0.0.1", seconds=args.advance / speed, rps=args.rps, speed=speed, seed=97)
        drive(start / "ws", start / "world", more, save=True, env=LOG_ALL)
    speed = natural_speed(start / "world", args.rps)
    cfg = TrafficConfig(url="http://127.0.0.1", seconds=args.hours / speed, rps=args.rps, speed=speed)

    runs = []
    for seed in range(1, args.seeds + 1):
        row: dict = {"seed": seed}
        for shift in (False, True):
            run_cfg = TrafficConfig(**{**cfg.__dict__, "seed": seed, "drift_at": "now" if shift else None})
            key = "shift" if shift else "no_shift"
            run = args.out / "runs" / f"{seed}-{key}"
            summary, t0 = judged_run(start, run, run_cfg, LOG_ALL, rejudge=args.rejudge)
            verdicts = hourly(run / "ws", t0, args.hours)
            last = verdicts[max(verdicts)]
            # The default rule (the alerts less the Wasserstein ones), and with Wasserstein alerts on.
            first, alerts = first_alert(verdicts, without="wasserstein")
            w_first, w_alerts = first_alert(verdicts)
            row[key] = {
                "first_alert_hour": first,
                "alerts_at_first": named(alerts),
                "alerts_at_6h": named([a for a in last["alerts"] if a["statistic"] != "wasserstein"]),
                "first_feature_alert_hour": first_alert(verdicts, without="wasserstein", kind="feature_drift")[0],
                # Every feature a drift alert named in any window [start, start + h), h = 1..6.
                "feature_alerts_by_6h": sorted(
                    {
                        a["feature"]
                        for v in verdicts.values()
                        for a in v["alerts"]
                        if a["kind"] == "feature_drift" and a["statistic"] != "wasserstein"
                    }
                ),
                "with_wasserstein": {
                    "first_alert_hour": w_first,
                    "alerts_at_first": named(w_alerts),
                    "alerts_at_6h": named(last["alerts"]),
                    "first_feature_alert_hour": first_alert(verdicts, kind="feature_drift")[0],
                },
                "ctr": last["online"]["ctr"],
                "ece": last["calibration"]["ece"],
                "top_psi": top(last, "psi"),
                "top_wasserstein": top(last, "wasserstein"),
                "skew_max_mismatch": max((s["mismatch_rate"] for s in last["skew"]["features"].values()), default=0),
                "requests": summary["requests"],
                "errors": summary["errors"],
            }
            print(seed, key, row[key]["first_alert_hour"], row[key]["alerts_at_first"], flush=True)
        # The shifted run's start (t0) is the unshifted one's: the same start state.
        shifts = counterfactual(
            args.out / "runs" / f"{seed}-no_shift" / "ws",
            args.out / "runs" / f"{seed}-shift" / "ws",
            t0,
            t0 + timedelta(hours=args.hours),
        )
        features = moved(shifts)
        alerted = row["shift"]["feature_alerts_by_6h"]
        row["moved"] = {
            "features": features,
            **{statistic: {n: of[n] for n in features} for statistic, of in shifts.items()},
            "alerted": alerted,
            "alerted_and_moved": sorted(set(alerted) & set(features)),
        }
        print(seed, "moved", features, "alerted", alerted, flush=True)
        runs.append(row)

    frozen_env = LOG_ALL | {"FEEDREC_FAULT_FROZEN_COUNTERS": '["item_clicks_1h"]'}
    frozen = args.out / "runs" / "frozen"
    _, t0 = judged_run(start, frozen, TrafficConfig(**{**cfg.__dict__, "seed": 1}), frozen_env, rejudge=args.rejudge)
    broken = monitor(frozen / "ws", t0, t0 + timedelta(hours=args.hours))
    skew = broken["skew"]
    detected = [r["shift"]["first_alert_hour"] for r in runs]
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "shift_detected": sum(h is not None for h in detected),
        "shift_detected_within_6h": sum(h is not None and h <= 6 for h in detected),
        "detection_hours": detected,
        "feature_alert_runs": sum(r["shift"]["first_feature_alert_hour"] is not None for r in runs),
        "false_alarm_runs": sum(r["no_shift"]["first_alert_hour"] is not None for r in runs),
        # Against the counterfactual: how often each feature moved, how often it was alerted on.
        "moved_runs": {
            n: sum(n in r["moved"]["features"] for r in runs)
            for n in sorted({n for r in runs for n in r["moved"]["features"]})
        },
        "alerted_runs": {
            n: sum(n in r["moved"]["alerted"] for r in runs)
            for n in sorted({n for r in runs for n in r["moved"]["alerted"]})
        },
        "alerts_on_unmoved_features": sum(len(set(r["moved"]["alerted"]) - set(r["moved"]["features"])) for r in runs),
        f"with_wasserstein_{WASSERSTEIN}": {
            "feature_alert_runs": sum(
                r["shift"]["with_wasserstein"]["first_feature_alert_hour"] is not None for r in runs
            ),
            "false_alarm_runs": sum(r["no_shift"]["with_wasserstein"]["first_alert_hour"] is not None for r in runs),
        },
        "runs": runs,
        "frozen_counter": {
            "flagged": skew["flagged"],
            "mismatch_rate": {n: s["mismatch_rate"] for n, s in skew["features"].items() if s["mismatch_rate"] > 0},
            "alerts": named([a for a in broken["alerts"] if a["statistic"] != "wasserstein"]),
        },
    }
    write_result("monitor", result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
