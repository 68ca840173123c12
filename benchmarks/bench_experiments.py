"""Experiments in the live loop: calibration (A/A), power (A/B), SRM, interleaving against A/B.

The world and the trained bundles come from the live-loop benchmark's base workspace
(`bench_loop.py --keep` leaves it; it is made here when missing). Each run starts from a copy of
the same workspace and world state and drives one simulated day at the world's own session rate
(about 10,900 sessions over its 20,000 users) through `feedrec serve`, with an experiment
started before the server (read at its startup); the same seed everywhere: the same sessions and
dice. Then `feedrec.experiments.analysis` on each run's exposure log and event store.

1. A/B power: popularity (control) against the full pipeline (treatment), 50/50. The right winner,
   p < 0.001, the CTR lift's 95 % interval against the true lift (the world's expected CTR of each
   arm's actual feeds, from the traffic harness), CUPED's variance reduction and the minimum
   detectable effect at 80 % power with and without CUPED.
2. A/A calibration: the full pipeline in both arms; then `--salts` re-randomizations of that one
   log (new salts through the same hash): the false-positive rate of the CTR test at alpha 0.05
   with and without CUPED, the SRM flag rate, and with 24 hourly looks the mSPRT's false-positive
   rate against the fixed-horizon test peeked at every look.
3. SRM: the same users re-randomized 51/49 (a routing bug) and analyzed as 50/50: how often the
   check flags it (p < 0.001), against 50/50 routing.
4. Interleaving against A/B on a close pair (the full pipeline against itself served with the
   retrieval-feature ranker): an A/B run and a team-draft interleaving run; users needed for 80 %
   power at alpha 0.05 (subsamples of each run's users).

    python benchmarks/bench_experiments.py                 # about 40 minutes on 2 cores
    python benchmarks/bench_experiments.py --keep          # reuse the runs' logs, redo the analysis
    python benchmarks/bench_experiments.py --propensity-sd 1.0 --result experiments_propensity1
                                    # a world whose users differ in how much they click (own base)
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import kstest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result
from bench_loop import MODELS, base_of, free_port, natural_speed
from feedrec.data.store import LocalEventStore
from feedrec.experiments import stats
from feedrec.experiments.analysis import ExperimentData, _looks, analyze, compare_metric, credits, load, per_user
from feedrec.experiments.assignment import buckets
from feedrec.experiments.definition import BUCKETS
from feedrec.experiments.store import ExperimentStore
from feedrec.loop.demo import serving
from feedrec.loop.traffic import TrafficConfig, run_traffic


def run(
    out: Path, base: Path, world_src: Path, name: str, arms: list[dict[str, Any]], cfg: TrafficConfig, keep: bool
) -> dict[str, Any]:
    """One simulated day with experiment ``name`` running: the traffic summary (cached with --keep)."""
    ws, world = out / f"ws-{name}", out / f"world-{name}"
    cached = ws / "traffic.json"
    if keep and cached.exists():
        return json.loads(cached.read_text())
    for src, dst in ((base, ws), (world_src, world)):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    store = ExperimentStore(ws / "experiments")
    store.create({"name": name, "arms": arms, "guardrails": ["hides_per_impression", "latency_p99"]})
    store.start(name)
    print(f"run {name}: {cfg.seconds:.0f} s at {cfg.rps} sessions/s", flush=True)
    began = time.perf_counter()
    with open(ws / "serve.log", "w") as log, serving(ws, free_port(), log=log) as url:
        summary = run_traffic(world, TrafficConfig(**{**cfg.__dict__, "url": url}), save=False).summary
    print(
        f"  {summary['requests']} feeds, {summary['errors']} errors in {time.perf_counter() - began:.0f} s", flush=True
    )
    cached.write_text(json.dumps(summary))
    return summary


def data_of(out: Path, name: str) -> ExperimentData:
    ws = out / f"ws-{name}"
    return load(LocalEventStore(ws), ExperimentStore(ws / "experiments"), name)


def analysis_of(out: Path, name: str) -> dict[str, Any]:
    ws = out / f"ws-{name}"
    return analyze(LocalEventStore(ws), ExperimentStore(ws / "experiments"), name)


def true_lift(summary: dict[str, Any], name: str, control: str, treatment: str) -> float:
    arms = summary["by_arm"][name]
    return float(arms[treatment]["expected_ctr"] - arms[control]["expected_ctr"])


def binomial_share(out: Path, name: str) -> float:
    """The share of the per-user variance of (linearized) CTR that is the clicks' own binomial
    noise, given each user's impressions: what no pre-period covariate can predict, so 1 minus
    it bounds CUPED's variance reduction for CTR."""
    users = per_user(data_of(out, name))
    shares = []
    for arm in users["arm"].unique().to_list():
        rows = users.filter(pl.col("arm") == arm)
        n, c = rows["impressions"].to_numpy(), rows["clicks"].to_numpy()
        r = c.sum() / n.sum()
        y = stats.linearize(c, n)
        shares.append(float((n * r * (1 - r)).mean() / n.mean() ** 2 / y.var()))
    return float(np.mean(shares))


def ab_power(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    result = analysis_of(out, "ab_power")
    ctr = result["metrics"]["ctr"]
    truth = true_lift(summary, "ab_power", "control", "treatment")
    return {
        "arms": result["arms"],
        "true": {arm: summary["by_arm"]["ab_power"][arm]["expected_ctr"] for arm in ("control", "treatment")},
        "true_lift": truth,
        "ctr": {k: v for k, v in ctr.items() if k != "looks"},
        "right_winner": bool(ctr["lift"] > 0) == bool(truth > 0),
        "p_below_0.001": ctr["p_value"] < 0.001,
        "ci_contains_true_lift": bool(ctr["ci_low"] <= truth <= ctr["ci_high"]),
        "cuped_ci_contains_true_lift": bool(ctr["cuped"]["ci_low"] <= truth <= ctr["cuped"]["ci_high"]),
        "variance_reduction_ctr": ctr["cuped"]["variance_reduction"],
        "binomial_share_of_ctr_variance": binomial_share(out, "ab_power"),
        "mde_ctr": ctr["mde"],
        "mde_ctr_cuped": ctr["cuped"]["mde"],
        "srm": result["srm"],
        "sequential": ctr["sequential"],
        "guardrails": result["guardrails"],
        "other_metrics": {
            m: {k: r[k] for k in ("control", "treatment", "lift", "ci_low", "ci_high", "p_value")}
            | {"variance_reduction": r.get("cuped", {}).get("variance_reduction")}
            for m, r in result["metrics"].items()
            if m != "ctr"
        },
    }


def _arrays(users: pl.DataFrame, ids: list[str]) -> dict[str, np.ndarray]:
    """Per-user clicks, impressions and pre-period covariates aligned on ``ids`` (0 where absent)."""
    frame = pl.DataFrame({"user_id": ids}).join(users, on="user_id", how="left").fill_null(0.0)
    return {
        "clicks": frame["clicks"].to_numpy(),
        "impressions": frame["impressions"].to_numpy(),
        "exposed": frame["exposures"].to_numpy() > 0,
        "pre": frame.select([c for c in frame.columns if c.startswith("pre_")]).to_numpy(),
    }


def rerandomized(data: ExperimentData, salts: int, alpha: float = 0.05) -> dict[str, Any]:
    """The A/A log analyzed under ``salts`` new assignments (50/50, and 51/49 for the SRM check)."""
    final = per_user(data)
    ids = final["user_id"].to_list()
    looks = [_arrays(per_user(data, until), ids) for until in _looks(data, 3600)]
    rejected = {"ctr": 0, "ctr_cuped": 0, "srm_flagged_50_50": 0, "srm_flagged_51_49": 0, "msprt_any_look": 0, "fixed_any_look": 0, "fixed_last_look": 0}  # fmt: skip
    p_values: list[float] = []
    reductions: list[float] = []
    started = time.perf_counter()
    for s in range(salts):
        b = buckets(f"aa-{s}", ids)
        treat = b >= BUCKETS // 2
        frame = final.with_columns(arm=pl.Series(np.where(treat, "treatment", "control")))
        r = compare_metric(frame, "ctr", "control", "treatment", alpha=alpha)
        p_values.append(r["p_value"])
        rejected["ctr"] += r["p_value"] < alpha
        rejected["ctr_cuped"] += r["cuped"]["p_value"] < alpha
        reductions.append(r["cuped"]["variance_reduction"])
        rejected["srm_flagged_50_50"] += stats.srm([int((~treat).sum()), int(treat.sum())], [1, 1])[1] < 0.001
        buggy = b >= int(0.51 * BUCKETS)  # a routing bug: 51 % to control, analyzed as 50/50
        rejected["srm_flagged_51_49"] += stats.srm([int((~buggy).sum()), int(buggy.sum())], [1, 1])[1] < 0.001
        lifts, variances, fixed = [], [], []
        for look in looks:
            c = stats.ratio_estimate(
                look["clicks"][~treat & look["exposed"]], look["impressions"][~treat & look["exposed"]]
            )
            t = stats.ratio_estimate(
                look["clicks"][treat & look["exposed"]], look["impressions"][treat & look["exposed"]]
            )
            cmp = stats.compare(c, t, alpha=alpha)
            lifts.append(cmp["lift"])
            variances.append(cmp["se"] ** 2)
            fixed.append(cmp["p_value"])
        always = stats.sequential_p(np.asarray(lifts), np.asarray(variances), c.mean)
        rejected["msprt_any_look"] += bool((always < alpha).any())
        rejected["fixed_any_look"] += bool((np.nan_to_num(fixed, nan=1.0) < alpha).any())
        rejected["fixed_last_look"] += fixed[-1] < alpha
    n_users = len(ids)
    rates = {k: v / salts for k, v in rejected.items()}
    return {
        "salts": salts,
        "users": n_users,
        "looks": len(looks),
        "rates": rates,
        "binomial_se_at_0.05": float(np.sqrt(0.05 * 0.95 / salts)),
        "ks_uniform_p_value": float(kstest(p_values, "uniform").pvalue),
        "cuped_variance_reduction_mean": float(np.mean(reductions)),
        "seconds": round(time.perf_counter() - started, 1),
    }


def srm_at(n_users: int, salts: int) -> dict[str, Any]:
    """The SRM check at ``n_users`` (the world's user ids), routed 50/50 and with a 51/49 bug,
    over ``salts`` assignments; with the chi-square's power for the bug (noncentral, df 1)."""
    from scipy.optimize import brentq
    from scipy.stats import chi2, ncx2

    ids = [f"u{n}" for n in range(n_users)]
    flagged = {"50_50": 0, "51_49": 0}
    for s in range(salts):
        b = buckets(f"srm-{s}", ids)
        for key, cut in (("50_50", BUCKETS // 2), ("51_49", int(0.51 * BUCKETS))):
            control = int((b < cut).sum())
            flagged[key] += stats.srm([control, n_users - control], [1, 1])[1] < 0.001
    noncentrality = n_users * 2 * 0.01**2 / 0.5
    critical = chi2.isf(0.001, 1)
    needed = brentq(lambda lam: ncx2.sf(critical, 1, lam) - 0.8, 1e-6, 1e3)  # the noncentrality for 80 %
    return {
        "users": n_users,
        "salts": salts,
        "flag_rate": {k: v / salts for k, v in flagged.items()},
        "power_51_49_at_0.001": float(ncx2.sf(chi2.isf(0.001, 1), 1, noncentrality)),
        "users_for_80pct_power_51_49": int(np.ceil(needed / (2 * 0.01**2 / 0.5))),
    }


def _power(draw, n_users: int, n: int, reps: int, rng: np.random.Generator) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([draw(rng.choice(n_users, n, replace=False)) for _ in range(reps)]))


def users_needed(out: Path, ab_summary: dict[str, Any], reps: int = 200, alpha: float = 0.05) -> dict[str, Any]:
    """Users for 80 % power (significant at ``alpha`` and in the true direction), by subsampling
    each run's users: the A/B run's CTR test; the interleaving run's paired test of each user's
    credited clicks (the product's verdict) and its sign test over users who prefer a team."""
    rng = np.random.default_rng(0)
    better_is_treatment = true_lift(ab_summary, "ab_close", "control", "treatment") > 0
    ab = per_user(data_of(out, "ab_close"))
    arm = ab["arm"].to_numpy()
    clicks, imps = ab["clicks"].to_numpy(), ab["impressions"].to_numpy()

    def ab_draw(idx: np.ndarray) -> bool:
        c, t = idx[arm[idx] == "control"], idx[arm[idx] == "treatment"]
        r = stats.compare(
            stats.ratio_estimate(clicks[c], imps[c]), stats.ratio_estimate(clicks[t], imps[t]), alpha=alpha
        )
        return bool(r["p_value"] < alpha and (r["lift"] > 0) == better_is_treatment)

    per = credits(data_of(out, "interleave_close"))
    a, b = per["a"].to_numpy(), per["b"].to_numpy()

    # Team A is the interleaving's first version: the full pipeline (the A/B's treatment).
    def il_draw(idx: np.ndarray) -> bool:  # the product's test: paired, on each user's credited clicks
        r = stats.paired_credit(a[idx], b[idx], alpha=alpha)
        return bool(r["p_value"] < alpha and (r["difference"] > 0) == better_is_treatment)

    def il_sign_draw(idx: np.ndarray) -> bool:  # the sign test over users who prefer a team
        wa, wb = int((a[idx] > b[idx]).sum()), int((b[idx] > a[idx]).sum())
        return bool(stats.binomial_preference(wa, wb) < alpha and (wa > wb) == better_is_treatment)

    curves: dict[str, list[tuple[int, float]]] = {"ab": [], "interleaving": [], "interleaving_sign_test": []}
    draws = (
        ("ab", ab_draw, ab.height),
        ("interleaving", il_draw, per.height),
        ("interleaving_sign_test", il_sign_draw, per.height),
    )
    for key, draw, n_all in draws:
        n = 25
        while n <= n_all:
            power = _power(draw, n_all, n, reps, rng)
            curves[key].append((n, power))
            if power >= 0.95:
                break
            n = int(n * 1.4) + 1

    def needed(curve: list[tuple[int, float]]) -> int | None:
        for (n0, p0), (n1, p1) in itertools.pairwise(curve):
            if p0 < 0.8 <= p1:
                return round(n0 + (0.8 - p0) / (p1 - p0) * (n1 - n0))
        return curve[0][0] if curve and curve[0][1] >= 0.8 else None

    n_ab, n_il, n_sign = needed(curves["ab"]), needed(curves["interleaving"]), needed(curves["interleaving_sign_test"])
    # When the A/B run's users are not enough for 80 %, its need is extrapolated from its MDE:
    # users scale with (MDE / effect)^2.
    full = analysis_of(out, "ab_close")["metrics"]["ctr"]
    effect = abs(true_lift(ab_summary, "ab_close", "control", "treatment"))
    extrapolated = int(ab.height * (full["mde"] / effect) ** 2) if effect > 0 else None
    return {
        "alpha": alpha,
        "true_lift": true_lift(ab_summary, "ab_close", "control", "treatment"),
        "ab_users": ab.height,
        "interleaving_users": per.height,
        "interleaving_preference_a": float((a > b).sum() / max(((a > b) | (b > a)).sum(), 1)),
        "curves": curves,
        "ab_users_for_80pct_power": n_ab,
        "ab_users_for_80pct_power_from_mde": extrapolated,
        "interleaving_users_for_80pct_power": n_il,
        "ratio": (n_ab or extrapolated or 0) / n_il if n_il else None,
        "interleaving_sign_test_users_for_80pct_power": n_sign,
        "ratio_sign_test": (n_ab or extrapolated or 0) / n_sign if n_sign else None,
        "ab_analysis": {k: full[k] for k in ("control", "treatment", "lift", "ci_low", "ci_high", "p_value", "mde")},
    }


def interleaving_null(data: ExperimentData, redraws: int, alpha: float = 0.05) -> dict[str, Any]:
    """The interleaving tests' false-positive rate: each served feed's teams drawn again as team
    draft draws them for two identical rankings (each pair of slots (A, B) or (B, A) by a coin),
    with the clicks the world really gave. No team is better, so a test at ``alpha`` should reject
    ``alpha`` of the redraws."""
    slots = data.exposures.select("request_id", "user_id", "items").explode("items")
    slots = slots.with_columns(pl.int_range(pl.len()).over("request_id").alias("slot"))
    clicked = data.events.filter(pl.col("type") == "click").select("request_id", "item_id")
    clicked = clicked.join(slots.rename({"items": "item_id"}), on=["request_id", "item_id"])
    users = data.exposures.select("user_id").unique().sort("user_id").with_row_index("u")
    clicked = clicked.join(users, on="user_id")
    request = clicked["request_id"].cast(pl.Categorical).to_physical().to_numpy()
    user, slot = clicked["u"].to_numpy(), clicked["slot"].to_numpy()
    pair, second = slot // 2, (slot % 2).astype(bool)
    rng = np.random.default_rng(7)
    rejected = {"paired": 0, "sign_test": 0}
    p_values = []
    for _ in range(redraws):
        a_first = rng.random((int(request.max()) + 1, int(pair.max()) + 1)) < 0.5
        team_a = a_first[request, pair] != second
        a = np.bincount(user[team_a], minlength=users.height)
        b = np.bincount(user[~team_a], minlength=users.height)
        p = stats.paired_credit(a, b, alpha=alpha)["p_value"]
        p_values.append(p)
        rejected["paired"] += p < alpha
        rejected["sign_test"] += stats.binomial_preference(int((a > b).sum()), int((b > a).sum())) < alpha
    return {
        "redraws": redraws,
        "users": users.height,
        "clicks": clicked.height,
        "false_positive_rate": {k: v / redraws for k, v in rejected.items()},
        "paired_p_values_ks_uniform": float(kstest(p_values, "uniform").pvalue),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", type=Path, default=Path("/tmp/feedrec-bench-loop"), help="bench_loop's --out")
    parser.add_argument("--out", type=Path, default=Path("/tmp/feedrec-bench-experiments"))
    parser.add_argument("--rps", type=float, default=30.0, help="sessions per wall second")
    parser.add_argument("--days", type=float, default=1.0, help="simulated days per run")
    parser.add_argument("--salts", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="reuse the runs' logs (traffic.json in each)")
    parser.add_argument(
        "--propensity-sd",
        type=float,
        default=None,
        help="a world whose users differ in how much they click (simulator.user_propensity_sd); its own "
        "base workspace under --loop (default /tmp/feedrec-bench-loop-propensity<SD>), runs under --out",
    )
    parser.add_argument("--result", default="experiments", help="benchmarks/results/<RESULT>.json")
    args = parser.parse_args()
    sim_settings: tuple[str, ...] = ()
    if args.propensity_sd is not None:
        sim_settings = (f"simulator.user_propensity_sd={args.propensity_sd}",)
        if args.loop == parser.get_default("loop"):
            args.loop = Path(f"{args.loop}-propensity{args.propensity_sd:g}")
        if args.out == parser.get_default("out"):
            args.out = Path(f"{args.out}-propensity{args.propensity_sd:g}")
    # The experiments serve popularity and the pipeline (both of its rankers) only; the default
    # world's base is bench_loop's own, with every policy.
    only = ("popularity", "feedrec") if sim_settings else MODELS
    base, world, versions = base_of(args.loop, sim_settings, models=only)
    speed = natural_speed(world, args.rps)
    cfg = TrafficConfig(url="http://127.0.0.1", seconds=args.days * 24 / speed, rps=args.rps, speed=speed, seed=21)
    args.out.mkdir(parents=True, exist_ok=True)
    full, retrieval, popularity = (
        versions[k] for k in ("feedrec_realtime_ranker", "feedrec_retrieval_ranker", "popularity")
    )

    def ab(control: str, treatment: str) -> list[dict[str, Any]]:
        return [{"name": "control", "version": control}, {"name": "treatment", "version": treatment}]

    summaries = {
        "ab_power": run(args.out, base, world, "ab_power", ab(popularity, full), cfg, args.keep),
        "aa": run(args.out, base, world, "aa", ab(full, full), cfg, args.keep),
        "ab_close": run(args.out, base, world, "ab_close", ab(retrieval, full), cfg, args.keep),
        "interleave_close": run(args.out, base, world, "interleave_close", [{"name": "mix", "interleave": [full, retrieval]}], cfg, args.keep),
    }  # fmt: skip
    print("analysis", flush=True)
    aa_result = analysis_of(args.out, "aa")
    payload = {
        "command": "python benchmarks/bench_experiments.py " + " ".join(sys.argv[1:]),
        "traffic": {
            "rps": args.rps,
            "speed": round(speed, 4),
            "seconds": round(cfg.seconds, 1),
            "simulated_days": args.days,
            "sessions": {k: s["sessions"] for k, s in summaries.items()},
            "errors": {k: s["errors"] for k, s in summaries.items()},
        },
        "world": {"user_propensity_sd": args.propensity_sd or 0.0, "base": str(base)},
        "versions": {"popularity": popularity, "full": full, "retrieval_ranker": retrieval},
        "ab_power": ab_power(args.out, summaries["ab_power"]),
        "aa_live": {
            "ctr": {k: v for k, v in aa_result["metrics"]["ctr"].items() if k != "looks"},
            "srm": aa_result["srm"],
        },
        "aa_rerandomized": rerandomized(data_of(args.out, "aa"), args.salts),
        "interleaving_vs_ab": users_needed(args.out, summaries["ab_close"]),
        "interleaving_null": interleaving_null(data_of(args.out, "interleave_close"), args.salts),
        "srm_at_20000_users": srm_at(20_000, args.salts),
    }
    path = write_result(args.result, payload)
    print(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path} ({machine()})")


if __name__ == "__main__":
    main()
