"""``feedrec experiment analyze``: exposures joined with the events that followed, per arm.

Attribution: an event counts for an exposure when it carries the exposure's ``request_id``, the
same user, and a time within ``window_s`` after the exposure (the request's moment). Every
metric is user-level (the unit of randomization), with the delta method for ratio metrics; CUPED
uses each user's engagement in the ``pre_days`` before the experiment's first exposure
(impressions, clicks, likes, hides, dwell) as covariates, and for a ratio metric its own
pre-period value (``covariates``). Looks every ``look_every_s`` of
exposure time give the metric over time and the always-valid sequential p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from scipy import stats as sps

from feedrec.data.store import EventStore
from feedrec.experiments import stats
from feedrec.experiments.definition import METRICS, Experiment
from feedrec.experiments.exposures import read_exposures
from feedrec.experiments.store import ExperimentStore

TYPES = ("impression", "click", "like", "hide", "dwell")
COUNTS = ("impressions", "clicks", "likes", "hides", "dwell")
PRE = tuple(f"pre_{c}" for c in COUNTS)
SRM_ALPHA = 0.001


@dataclass
class ExperimentData:
    experiment: Experiment
    exposures: pl.DataFrame  # request_id, user_id, arm, version, time, latency_ms, items, teams
    events: pl.DataFrame  # the attributed events: request_id, user_id, item_id, type, value, timestamp, exposed_at
    pre: pl.DataFrame  # user_id, pre_impressions, pre_clicks, pre_likes, pre_hides, pre_dwell


def _counts(prefix: str = "") -> list[pl.Expr]:
    def n(kind: str) -> pl.Expr:
        return (pl.col("type") == kind).sum().cast(pl.Float64)

    return [
        n("impression").alias(f"{prefix}impressions"),
        n("click").alias(f"{prefix}clicks"),
        n("like").alias(f"{prefix}likes"),
        n("hide").alias(f"{prefix}hides"),
        pl.col("value").filter(pl.col("type") == "dwell").sum().fill_null(0).cast(pl.Float64).alias(f"{prefix}dwell"),
    ]


def load(
    events: EventStore, store: ExperimentStore, name: str, *, window_s: float = 3600, pre_days: float = 7
) -> ExperimentData:
    experiment = store.get(name)
    exposures = read_exposures(store.exposures_dir, name)
    columns = ["request_id", "user_id", "item_id", "type", "value", "timestamp"]
    if exposures.is_empty():
        empty = pl.DataFrame(schema={"user_id": pl.String, **{p: pl.Float64 for p in PRE}})
        return ExperimentData(experiment, exposures, pl.DataFrame(), empty)
    t0, t1 = exposures["time"].min(), exposures["time"].max()
    assert isinstance(t0, datetime) and isinstance(t1, datetime)
    scanned = events.scan(
        columns=columns, types=TYPES, start=t0 - timedelta(days=pre_days), end=t1 + timedelta(seconds=window_s)
    )
    logged = pl.DataFrame(pl.from_arrow(scanned))
    exposed = exposures.select("user_id").unique()
    pre = logged.filter(pl.col("timestamp") < t0).join(exposed, on="user_id").group_by("user_id").agg(_counts("pre_"))
    served = exposures.select("request_id", pl.col("user_id").alias("exposed_user"), pl.col("time").alias("exposed_at"))
    attributed = (
        logged.filter(pl.col("request_id").is_not_null())
        .join(served, on="request_id")
        .filter(
            (pl.col("user_id") == pl.col("exposed_user"))
            & (pl.col("timestamp") >= pl.col("exposed_at"))
            & (pl.col("timestamp") < pl.col("exposed_at") + timedelta(seconds=window_s))
        )
        .drop("exposed_user")
    )
    return ExperimentData(experiment, exposures, attributed, pre)


def per_user(data: ExperimentData, until: datetime | None = None) -> pl.DataFrame:
    """One row per exposed user: arm, exposures, the attributed counts and the pre-period ones
    (exposures before ``until`` and their events before it, when given)."""
    exposures, events = data.exposures, data.events
    if until is not None:
        exposures = exposures.filter(pl.col("time") < until)
        events = events.filter((pl.col("timestamp") < until) & (pl.col("exposed_at") < until))
    users = exposures.group_by("user_id").agg(pl.col("arm").first(), pl.len().cast(pl.Float64).alias("exposures"))
    if events.height:
        users = users.join(events.group_by("user_id").agg(_counts()), on="user_id", how="left")
    else:
        users = users.with_columns(*(pl.lit(0.0).alias(c) for c in COUNTS))
    return users.join(data.pre, on="user_id", how="left").fill_null(0.0).sort("user_id")


def covariates(users: pl.DataFrame, metric: str) -> pl.DataFrame:
    """CUPED's covariates, one row per user of ``users``: the pre-period counts (``PRE``) and, for
    a ratio metric, its own pre-period value (the metric before the experiment, the covariate that
    predicts it best: Deng et al. 2013), shrunk toward the pooled pre-period ratio with the mean
    pre-period denominator as its weight, so that a user with little history gets about the pooled
    ratio. The counts alone are linear in a user's exposure; a user's rate is not. Pooled over
    every user of both arms: a pre-period quantity, the same whatever the arm."""
    num, den, _ = METRICS[metric]
    columns: list[pl.Expr] = [pl.col(c) for c in PRE]
    if den is not None:
        pre_num, pre_den = users[f"pre_{num}"], users[f"pre_{den}"]
        weight = float(pre_den.to_numpy().mean()) if pre_den.len() else 0.0
        if weight > 0:
            rate = float(pre_num.to_numpy().sum()) / float(pre_den.to_numpy().sum())
            shrunk = (pl.col(f"pre_{num}") + weight * rate) / (pl.col(f"pre_{den}") + weight)
            columns.append(shrunk.alias(f"pre_{metric}"))
    return users.select(columns)


def _arm_values(users: pl.DataFrame, arm: str, metric: str) -> np.ndarray:
    num, den, _ = METRICS[metric]
    rows = users.filter(pl.col("arm") == arm)
    return stats.linearize(rows[num].to_numpy(), rows[den].to_numpy() if den else None)


def compare_metric(
    users: pl.DataFrame, metric: str, control: str, treatment: str, *, alpha: float = 0.05
) -> dict[str, Any]:
    """One metric, treatment against control: the plain comparison, the CUPED one (its variance
    reduction) and the minimum detectable effects at 80 % power."""
    yc, yt = _arm_values(users, control, metric), _arm_values(users, treatment, metric)
    c, t = stats.estimate(yc), stats.estimate(yt)
    out: dict[str, Any] = stats.compare(c, t, alpha=alpha)
    out["mde"] = stats.mde(c, t, alpha=alpha)
    if yc.size > 2 and yt.size > 2 and np.isfinite(yc).all() and np.isfinite(yt).all():
        x, arm = covariates(users, metric).to_numpy(), users["arm"].to_numpy()
        (ac, at), reduction = stats.cuped([yc, yt], [x[arm == control], x[arm == treatment]])
        ca, ta = stats.estimate(ac), stats.estimate(at)
        adjusted = stats.compare(ca, ta, alpha=alpha)
        out["cuped"] = {
            **{k: adjusted[k] for k in ("lift", "ci_low", "ci_high", "p_value", "relative_lift")},
            "variance_reduction": reduction,
            "mde": stats.mde(ca, ta, alpha=alpha),
        }
    return out


def _looks(data: ExperimentData, look_every_s: float) -> list[datetime]:
    t0, t1 = data.exposures["time"].min(), data.exposures["time"].max()
    assert isinstance(t0, datetime) and isinstance(t1, datetime)
    n = max(1, int(np.ceil((t1 - t0).total_seconds() / look_every_s)))
    return [t0 + timedelta(seconds=look_every_s * (h + 1)) for h in range(n)]


def over_time(
    data: ExperimentData,
    metrics: Sequence[str],
    control: str,
    treatment: str,
    *,
    look_every_s: float = 3600,
    alpha: float = 0.05,
) -> dict[str, list[dict[str, Any]]]:
    """Each metric at each look (cumulative: every user exposed up to then), with its fixed-horizon
    confidence interval and p-value; the users' sums are built once per look for all metrics."""
    looks: dict[str, list[dict[str, Any]]] = {m: [] for m in metrics}
    for until in _looks(data, look_every_s):
        users = per_user(data, until)
        for metric in metrics:
            yc, yt = _arm_values(users, control, metric), _arm_values(users, treatment, metric)
            result = stats.compare(stats.estimate(yc), stats.estimate(yt), alpha=alpha)
            looks[metric].append(
                {
                    "time": until.isoformat(),
                    **{k: result[k] for k in ("control", "treatment", "lift", "ci_low", "ci_high", "p_value", "se")},
                }
            )
    return looks


def sequential(
    data: ExperimentData,
    metric: str,
    control: str,
    treatment: str,
    *,
    look_every_s: float = 3600,
    tau_relative: float = stats.TAU_RELATIVE,
    alpha: float = 0.05,
    looks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The metric at each look (cumulative; ``looks`` when computed already by ``over_time``), the
    fixed-horizon p-value there and the mSPRT's always-valid one (mixture variance (tau_relative x
    the control's mean)^2), with the decision."""
    if looks is None:
        looks = over_time(data, [metric], control, treatment, look_every_s=look_every_s, alpha=alpha)[metric]
    lifts = np.asarray([look["lift"] for look in looks], np.float64)
    variances = np.asarray([look["se"] ** 2 for look in looks], np.float64)
    control_mean = looks[-1]["control"] if looks else 0.0
    always = stats.sequential_p(lifts, variances, control_mean, tau_relative) if looks else np.ones(0)
    for look, p in zip(looks, always, strict=True):
        look["always_valid_p"] = float(p)
    p_final = float(always[-1]) if looks else 1.0
    _, _, higher = METRICS[metric]
    decision = stats.sequential_decision(
        p_final, float(lifts[-1]) if looks else 0.0, higher_is_better=higher, alpha=alpha
    )
    tau = float(np.sqrt(stats.mixture_variance(control_mean, tau_relative)))
    return {"decision": decision, "p_value": p_final, "looks": looks, "tau": tau}


def _latency_guardrail(data: ExperimentData, control: str, treatment: str) -> dict[str, Any]:
    def latencies(arm: str) -> np.ndarray:
        return data.exposures.filter(pl.col("arm") == arm)["latency_ms"].drop_nulls().to_numpy()

    c, t = latencies(control), latencies(treatment)
    if c.size < 10 or t.size < 10:
        return {"control": None, "treatment": None, "flagged": False}
    diff = lambda a, b: np.percentile(a, 99) - np.percentile(b, 99)  # noqa: E731
    boot = sps.bootstrap((t, c), diff, vectorized=False, n_resamples=300, method="percentile", random_state=0)
    low, high = boot.confidence_interval
    return {
        "control": float(np.percentile(c, 99)),
        "treatment": float(np.percentile(t, 99)),
        "lift": float(diff(t, c)),
        "ci_low": float(low),
        "ci_high": float(high),
        "flagged": bool(low > 0),  # the treatment's p99 is higher beyond the bootstrap's doubt
    }


def credits(data: ExperimentData) -> pl.DataFrame:
    """Per exposed user (sorted by id): ``a`` and ``b``, the clicks credited to the team that
    placed the clicked item (0 for a user without clicks)."""
    placed = data.exposures.select("request_id", "items", "teams").explode("items", "teams")
    clicks = data.events.filter(pl.col("type") == "click").join(
        placed.rename({"items": "item_id", "teams": "team"}), on=["request_id", "item_id"]
    )
    per = clicks.group_by("user_id").agg(
        (pl.col("team") == "A").sum().cast(pl.Int64).alias("a"), (pl.col("team") == "B").sum().cast(pl.Int64).alias("b")
    )
    users = data.exposures.select("user_id").unique()
    return users.join(per, on="user_id", how="left").fill_null(0).sort("user_id")


def _interleaving(data: ExperimentData) -> dict[str, Any]:
    """Clicks credited to the team that placed the item. The verdict is the paired test of each
    user's credited clicks (``stats.paired_credit``); the sign test over the users who prefer a
    team (the team credited more) is reported beside it."""
    a, b = data.experiment.arms[0].interleave or ("", "")
    per = credits(data)
    clicks_a, clicks_b = per["a"].to_numpy(), per["b"].to_numpy()
    wins_a, wins_b = int((clicks_a > clicks_b).sum()), int((clicks_b > clicks_a).sum())
    users = per.height
    decided = wins_a + wins_b
    credit = stats.paired_credit(clicks_a, clicks_b)
    lean = credit["difference"]
    return {
        "a": a,
        "b": b,
        "users": users,
        "users_with_clicks": int(((clicks_a + clicks_b) > 0).sum()),
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": users - decided,
        "clicks_a": int(clicks_a.sum()),
        "clicks_b": int(clicks_b.sum()),
        "preference_a": wins_a / decided if decided else None,
        "credit_difference": lean,  # mean over users of (clicks credited to A) - (to B)
        "ci_low": credit["ci_low"],
        "ci_high": credit["ci_high"],
        "p_value": credit["p_value"],
        "sign_test_p_value": stats.binomial_preference(wins_a, wins_b),
        "winner": None if lean == 0 else (a if lean > 0 else b),
    }


def _arm_row(rows: pl.DataFrame, exposures: int) -> dict[str, Any]:
    n = max(rows.height, 1)
    s = {c: float(rows[c].sum()) for c in COUNTS}
    return {
        "users": rows.height,
        "exposures": exposures,
        "impressions": int(s["impressions"]),
        "clicks": int(s["clicks"]),
        "ctr": s["clicks"] / s["impressions"] if s["impressions"] else None,
        "clicks_per_user": s["clicks"] / n,
        "likes_per_user": s["likes"] / n,
        "hides_per_user": s["hides"] / n,
        "dwell_per_user": s["dwell"] / n,
    }


def analyze_data(
    data: ExperimentData, *, alpha: float = 0.05, look_every_s: float = 3600, tau_relative: float = stats.TAU_RELATIVE
) -> dict[str, Any]:
    e = data.experiment
    out: dict[str, Any] = {"experiment": e.name, "status": e.status, "layer": e.layer, "metric": e.metric}
    if data.exposures.is_empty():
        return out | {"arms": {}, "metrics": {}, "srm": {"p_value": None, "flagged": False}, "exposures": 0}
    t0, t1 = data.exposures["time"].min(), data.exposures["time"].max()
    out["window"] = {"start": str(t0), "end": str(t1)}
    users = per_user(data)
    by_arm = data.exposures.group_by("arm").len()
    exposed = dict(zip(by_arm["arm"].to_list(), by_arm["len"].to_list(), strict=True))
    out["arms"] = {
        arm.name: _arm_row(users.filter(pl.col("arm") == arm.name), int(exposed.get(arm.name, 0))) for arm in e.arms
    }
    if e.interleaving:
        out["interleaving"] = _interleaving(data)
        return out
    if len(e.arms) < 2:  # a shadow deployment: one arm, nothing to compare it with (see `feedrec loop`)
        none = {"p_value": None, "flagged": False}
        return out | {
            "metrics": {},
            "guardrails": {},
            "srm": none,
            "note": "one arm (a shadow deployment): no comparison",
        }
    counts = [out["arms"][a.name]["users"] for a in e.arms]
    chi2, p = stats.srm(counts, [a.weight for a in e.arms])
    out["srm"] = {
        "chi2": chi2,
        "p_value": p,
        "flagged": p < SRM_ALPHA,
        "users": dict(zip([a.name for a in e.arms], counts, strict=True)),
    }
    if min(counts) < 2:
        return out | {"metrics": {}, "guardrails": {}, "note": "every arm needs at least two exposed users"}
    control = e.control.name
    treatments = [a.name for a in e.arms if a.name != control]
    names = dict.fromkeys([e.metric, "ctr", "clicks_per_user", "likes_per_user", "hides_per_user", "dwell_per_user"])
    comparisons: dict[str, dict[str, Any]] = {}
    for treatment in treatments:
        block = {}
        looks = over_time(data, list(names), control, treatment, look_every_s=look_every_s, alpha=alpha)
        for metric in names:
            block[metric] = compare_metric(users, metric, control, treatment, alpha=alpha)
            block[metric]["looks"] = looks[metric]
            if metric == e.metric:
                seq = sequential(
                    data, metric, control, treatment, tau_relative=tau_relative, alpha=alpha, looks=looks[metric]
                )
                block[metric]["sequential"] = {k: seq[k] for k in ("decision", "p_value", "tau")}
        guard: dict[str, Any] = {}
        for g in e.guardrails:
            if g == "latency_p99":
                guard[g] = _latency_guardrail(data, control, treatment)
                continue
            r = block.get(g) or compare_metric(users, g, control, treatment, alpha=alpha)
            worse = (r["lift"] < 0) == METRICS[g][2]
            guard[g] = {k: r[k] for k in ("control", "treatment", "lift", "ci_low", "ci_high", "p_value")} | {
                "flagged": bool(worse and r["p_value"] < alpha)
            }
        comparisons[treatment] = {"metrics": block, "guardrails": guard}
    first = comparisons[treatments[0]]
    out["metrics"], out["guardrails"] = first["metrics"], first["guardrails"]
    if len(treatments) > 1:
        out["by_treatment"] = comparisons
    return out


def analyze(
    events: EventStore,
    store: ExperimentStore,
    name: str,
    *,
    window_s: float = 3600,
    pre_days: float = 7,
    alpha: float = 0.05,
    look_every_s: float = 3600,
    tau_relative: float = stats.TAU_RELATIVE,
) -> dict[str, Any]:
    """The analysis of experiment ``name`` (the ``--json`` of ``feedrec experiment analyze``)."""
    data = load(events, store, name, window_s=window_s, pre_days=pre_days)
    return analyze_data(data, alpha=alpha, look_every_s=look_every_s, tau_relative=tau_relative)
