"""The analysis of a hand-made exposure and event log, against counts made by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from scipy import stats

from feedrec.data.store import LocalEventStore
from feedrec.experiments import stats as xs
from feedrec.experiments.analysis import PRE, analyze, compare_metric, covariates
from feedrec.experiments.exposures import ExposureLog, read_exposures
from feedrec.experiments.report import render_experiment_report
from feedrec.experiments.store import ExperimentStore
from feedrec.schemas import EVENT_SCHEMA

T0 = datetime(2024, 2, 1, tzinfo=UTC)
ARMS = [{"name": "control", "version": "v1"}, {"name": "treatment", "version": "v2"}]


def _event(n: int, user: str, item: str, t: datetime, kind: str, request: str | None, value: float | None = None):
    return {"event_id": f"e{n}", "user_id": user, "item_id": item, "timestamp": t, "type": kind, "value": value,
            "position": None, "surface": None, "request_id": request}  # fmt: skip


def _setup(tmp_path: Path, exposures: list[dict[str, Any]], events: list[dict[str, Any]]):
    store = ExperimentStore(tmp_path / "experiments")
    store.create({"name": "e", "arms": ARMS, "guardrails": ["hides_per_impression", "latency_p99"]})
    store.start("e")
    log = ExposureLog(store.exposures_dir)
    for x in exposures:
        log.write({"experiment": "e", "version": "v", "teams": None, "latency_ms": 5.0, **x})
    log.close()
    events_store = LocalEventStore(tmp_path)
    events_store.append(pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
    return events_store, store


def test_attribution_counts_and_the_ctr_comparison_by_hand(tmp_path: Path):
    t = T0.isoformat()
    exposures = [
        {"request_id": "r1", "user_id": "u1", "arm": "control", "items": ["a", "b"], "time": t},
        {"request_id": "r2", "user_id": "u2", "arm": "control", "items": ["a", "b"], "time": t},
        {"request_id": "r3", "user_id": "u3", "arm": "treatment", "items": ["a", "b"], "time": t},
        {"request_id": "r4", "user_id": "u4", "arm": "treatment", "items": ["a", "b"], "time": t},
        {"request_id": "r5", "user_id": "u4", "arm": "treatment", "items": ["c"], "time": (T0 + timedelta(hours=2)).isoformat()},
    ]  # fmt: skip
    s = timedelta(seconds=1)
    events = [
        _event(0, "u1", "a", T0 - timedelta(days=1), "click", None),  # pre-period: CUPED's covariate
        _event(1, "u1", "a", T0 + s, "impression", "r1"),
        _event(2, "u1", "b", T0 + s, "impression", "r1"),
        _event(3, "u1", "a", T0 + 3 * s, "click", "r1"),
        _event(4, "u2", "a", T0 + s, "impression", "r2"),
        _event(5, "u2", "b", T0 + s, "impression", "r2"),
        _event(6, "u3", "a", T0 + s, "impression", "r3"),
        _event(7, "u3", "b", T0 + s, "impression", "r3"),
        _event(8, "u3", "a", T0 + 2 * s, "click", "r3"),
        _event(9, "u3", "b", T0 + 2 * s, "click", "r3"),
        _event(10, "u3", "b", T0 + 9 * s, "dwell", "r3", 30.0),
        _event(11, "u4", "a", T0 + s, "impression", "r4"),
        _event(12, "u4", "b", T0 + s, "impression", "r4"),
        _event(13, "u4", "b", T0 + s, "hide", "r4"),
        _event(14, "u4", "a", T0 + timedelta(hours=1, seconds=1), "click", "r4"),  # after the window: not counted
        _event(15, "u4", "a", T0 + 3 * s, "click", "r1"),  # another user's request id: not counted
        _event(16, "u4", "c", T0 + timedelta(hours=2, seconds=1), "impression", "r5"),
        _event(17, "u4", "c", T0 + timedelta(hours=2, seconds=3), "click", "r5"),
        _event(18, "u2", "b", T0 + 5 * s, "click", None),  # no request id: not attributed
    ]
    events_store, store = _setup(tmp_path, exposures, events)
    result = analyze(events_store, store, "e")
    c, tr = result["arms"]["control"], result["arms"]["treatment"]
    assert (c["users"], c["exposures"], c["impressions"], c["clicks"]) == (2, 2, 4, 1)
    assert (tr["users"], tr["exposures"], tr["impressions"], tr["clicks"]) == (2, 3, 5, 3)
    assert tr["dwell_per_user"] == 15.0 and tr["hides_per_user"] == 0.5
    ctr = result["metrics"]["ctr"]
    assert ctr["control"] == pytest.approx(1 / 4) and ctr["treatment"] == pytest.approx(3 / 5)
    assert ctr["lift"] == pytest.approx(3 / 5 - 1 / 4)

    # The delta method by hand: per user (clicks, impressions) control (1,2), (0,2); treatment (2,2), (1,3).
    def var(clicks: list[float], imps: list[float]) -> float:
        r = sum(clicks) / sum(imps)
        lin = (np.asarray(clicks) - r * np.asarray(imps)) / np.mean(imps)
        return float(lin.var(ddof=1) / len(clicks))

    se = np.sqrt(var([1, 0], [2, 2]) + var([2, 1], [2, 3]))
    assert ctr["ci_high"] - ctr["lift"] == pytest.approx(1.959964 * se, rel=1e-5)
    assert ctr["p_value"] == pytest.approx(2 * stats.norm.sf(ctr["lift"] / se), rel=1e-6)
    assert result["srm"]["p_value"] == pytest.approx(1.0) and not result["srm"]["flagged"]
    assert result["metrics"]["clicks_per_user"]["treatment"] == 1.5
    assert result["metrics"]["ctr"]["sequential"]["decision"] in ("continue", "ship", "stop")
    assert len(result["metrics"]["ctr"]["looks"]) == 2  # exposures span two hours
    assert set(result["guardrails"]) == {"hides_per_impression", "latency_p99"}
    assert "<img src='data:image/png;base64," in render_experiment_report(result)


def test_a_synthetic_experiment_finds_its_effect_and_cuped_cuts_the_variance(tmp_path: Path):
    """400 users with a propensity to click that shows in the week before: a +30 % CTR effect."""
    rng = np.random.default_rng(0)
    exposures, events = [], []
    n = 0
    for u in range(400):
        arm = "treatment" if u % 2 else "control"
        p = rng.beta(2, 12) * (1.3 if arm == "treatment" else 1.0)
        for j in range(20):  # the pre-period
            t = T0 - timedelta(days=3, minutes=j)
            events.append(_event(n := n + 1, f"u{u}", f"i{j}", t, "impression", None))
            if rng.random() < p / (1.3 if arm == "treatment" else 1.0):
                events.append(_event(n := n + 1, f"u{u}", f"i{j}", t, "click", None))
        for r in range(3):
            t = T0 + timedelta(hours=int(rng.integers(0, 12)), minutes=r)
            exposures.append({"request_id": f"r{u}-{r}", "user_id": f"u{u}", "arm": arm, "items": ["x"] * 5,
                              "time": t.isoformat()})  # fmt: skip
            for j in range(5):
                events.append(_event(n := n + 1, f"u{u}", f"x{j}", t + timedelta(seconds=1), "impression", f"r{u}-{r}"))
                if rng.random() < p:
                    events.append(_event(n := n + 1, f"u{u}", f"x{j}", t + timedelta(seconds=2), "click", f"r{u}-{r}"))
    events_store, store = _setup(tmp_path, exposures, events)
    assert read_exposures(store.exposures_dir, "e").height == 1200
    ctr = analyze(events_store, store, "e")["metrics"]["ctr"]
    assert ctr["relative_ci_low"] < 0.3 < ctr["relative_ci_high"]
    assert ctr["cuped"]["variance_reduction"] > 0.05
    assert ctr["cuped"]["ci_high"] - ctr["cuped"]["ci_low"] < ctr["ci_high"] - ctr["ci_low"]
    assert len(ctr["looks"]) == 12 and ctr["looks"][-1]["lift"] == pytest.approx(ctr["lift"])


def test_an_experiment_without_exposures_analyzes_to_empty_arms(tmp_path: Path):
    events_store, store = _setup(tmp_path, [], [_event(0, "u1", "a", T0, "click", None)])
    result = analyze(events_store, store, "e")
    assert result["arms"] == {} and result["exposures"] == 0


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path):
    log = ExposureLog(tmp_path)
    log.write({"request_id": "r1", "user_id": "u1", "experiment": "e", "arm": "a", "time": T0.isoformat()})
    log.close()
    with log.path.open("a") as fh:
        fh.write('{"request_id": "r2", "us')
    assert read_exposures(tmp_path)["request_id"].to_list() == ["r1"]


def test_an_arm_without_users_yet_gets_no_comparison_rather_than_nans(tmp_path: Path):
    t = T0.isoformat()
    exposures = [
        {"request_id": f"r{n}", "user_id": f"u{n}", "arm": "control", "items": ["a"], "time": t} for n in range(3)
    ]
    events_store, store = _setup(tmp_path, exposures, [_event(0, "u1", "a", T0, "impression", "r1")])
    result = analyze(events_store, store, "e")
    assert (
        result["arms"]["treatment"]["users"] == 0 and result["metrics"] == {} and "two exposed users" in result["note"]
    )


def test_a_one_arm_shadow_experiment_analyzes_without_a_comparison(tmp_path: Path):
    store = ExperimentStore(tmp_path / "experiments")
    store.create({"name": "s", "arms": [{"name": "production", "version": "v1", "shadow": ["v2"]}]})
    store.start("s")
    log = ExposureLog(store.exposures_dir)
    log.write({"experiment": "s", "version": "v1", "teams": None, "latency_ms": 5.0, "request_id": "r1",
               "user_id": "u1", "arm": "production", "items": ["a"], "time": T0.isoformat()})  # fmt: skip
    log.close()
    events_store = LocalEventStore(tmp_path)
    events_store.append(pa.Table.from_pylist([_event(0, "u1", "a", T0, "impression", "r1")], schema=EVENT_SCHEMA))
    result = analyze(events_store, store, "s")
    assert result["arms"]["production"]["users"] == 1 and result["metrics"] == {} and "shadow" in result["note"]


def _users(rng: np.random.Generator, n: int, lift: float = 0.0) -> pl.DataFrame:
    """Per-user rows as ``per_user`` makes them: users who differ in their propensity to click
    (it shows in their pre-period) and in how much they are exposed; arms at random."""
    p = rng.beta(2, 10, n)
    arm = np.where(rng.random(n) < 0.5, "treatment", "control")
    pre_imps = rng.poisson(rng.gamma(2.0, 15.0, n))
    imps = rng.poisson(rng.gamma(2.0, 8.0, n)) + 1
    clicks = rng.binomial(imps, np.clip(p * np.where(arm == "treatment", 1 + lift, 1.0), 0, 1))
    pre_clicks = rng.binomial(pre_imps, p)
    zeros = np.zeros(n)
    return pl.DataFrame({
        "user_id": [f"u{i}" for i in range(n)], "arm": arm, "impressions": imps.astype(float),
        "clicks": clicks.astype(float), "pre_impressions": pre_imps.astype(float),
        "pre_clicks": pre_clicks.astype(float), "pre_likes": zeros, "pre_hides": zeros, "pre_dwell": zeros,
    })  # fmt: skip


def test_a_ratio_metric_gets_its_own_pre_period_value_as_a_covariate():
    users = _users(np.random.default_rng(1), 6)
    x = covariates(users, "ctr")
    assert x.columns == [*PRE, "pre_ctr"]
    weight = users["pre_impressions"].mean()
    rate = users["pre_clicks"].sum() / users["pre_impressions"].sum()
    for row, value in zip(users.iter_rows(named=True), x["pre_ctr"].to_list(), strict=True):
        assert value == pytest.approx((row["pre_clicks"] + weight * rate) / (row["pre_impressions"] + weight))
    assert covariates(users, "clicks_per_user").columns == list(PRE)  # a per-user mean: the counts


def test_the_pre_period_ratio_cuts_ctr_variance_beyond_the_counts_and_stays_calibrated():
    rng = np.random.default_rng(2)
    users = _users(rng, 4000, lift=0.1)
    ys, counts_only = [], []
    for arm in ("control", "treatment"):
        rows = users.filter(pl.col("arm") == arm)
        ys.append(xs.linearize(rows["clicks"].to_numpy(), rows["impressions"].to_numpy()))
        counts_only.append(rows.select(PRE).to_numpy())
    _, by_counts = xs.cuped(ys, counts_only)
    result = compare_metric(users, "ctr", "control", "treatment")
    assert result["cuped"]["variance_reduction"] > by_counts + 0.03
    # A/A: no effect, fresh users each time; CUPED's test rejects at about its alpha.
    rejected = sum(
        compare_metric(_users(rng, 1000), "ctr", "control", "treatment")["cuped"]["p_value"] < 0.05 for _ in range(400)
    )
    assert 0.025 <= rejected / 400 <= 0.08


def test_an_interleaving_credits_each_click_to_the_team_that_placed_it_by_hand(tmp_path: Path):
    store = ExperimentStore(tmp_path / "experiments")
    store.create({"name": "il", "arms": [{"name": "mix", "interleave": ["v1", "v2"]}]})
    store.start("il")
    log = ExposureLog(store.exposures_dir)
    t = T0.isoformat()
    teams = {
        "u1": ["A", "B", "B", "A"],
        "u2": ["B", "A", "A", "B"],
        "u3": ["A", "B", "A", "B"],
        "u4": ["B", "A", "B", "A"],
    }
    for n, (user, placed) in enumerate(teams.items()):
        log.write({"experiment": "il", "version": "v1+v2", "latency_ms": 5.0, "request_id": f"r{n}", "user_id": user,
                   "arm": "mix", "items": ["a", "b", "c", "d"], "teams": placed, "time": t})  # fmt: skip
    log.close()
    s = timedelta(seconds=1)
    clicked = {"u1": ["a", "d"], "u2": ["a"], "u3": ["b"], "u4": []}
    events = [
        _event(n, user, item, T0 + s, "click", f"r{list(teams).index(user)}")
        for n, (user, item) in enumerate((u, i) for u, items in clicked.items() for i in items)
    ]
    events.append(_event(99, "u4", "a", T0 + s, "click", "elsewhere"))  # another request's click: not credited
    events_store = LocalEventStore(tmp_path)
    events_store.append(pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
    il = analyze(events_store, store, "il")["interleaving"]
    # Credited by hand: u1 a->A, d->A (2, 0); u2 a->B (0, 1); u3 b->B (0, 1); u4 nothing (0, 0).
    a, b = np.array([2, 0, 0, 0]), np.array([0, 1, 1, 0])
    assert (il["clicks_a"], il["clicks_b"], il["users"], il["users_with_clicks"]) == (2, 2, 4, 3)
    assert (il["wins_a"], il["wins_b"], il["ties"]) == (1, 2, 1)
    assert il["credit_difference"] == pytest.approx(0.0) and il["winner"] is None
    assert il["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert il["sign_test_p_value"] == pytest.approx(stats.binomtest(1, 3).pvalue)
    assert il["ci_low"] < 0 < il["ci_high"]
