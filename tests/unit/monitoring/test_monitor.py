"""``run_monitor`` on a hand-built workspace: a simulated log in the event store, a bundle with a
reference profile, and a feature log of the last day's impressions whose features are the
point-in-time ones (what a correct server logs). Each statistic is checked against its direct
computation; one feature is then broken (tripled) and must drift and show as skew, alone."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from scipy import stats

from feedrec.config import MonitorConfig, SimulatorConfig
from feedrec.data.interactions import Interactions
from feedrec.data.simulator import simulate
from feedrec.data.store import LocalEventStore
from feedrec.features.definitions import FEATURE_NAMES
from feedrec.features.offline import build_features
from feedrec.metrics import expected_calibration_error
from feedrec.metrics.drift import ece_by_chance, mean_shift, numeric_histogram, psi
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.monitoring import alerts_file, latest_file
from feedrec.monitoring.featurelog import FeatureLog, read_feature_log
from feedrec.monitoring.monitor import MonitorError, hourly_engagement, run_monitor
from feedrec.monitoring.profile import PROFILE_FILE, build_profile
from feedrec.online.telemetry import MonitorGauges
from feedrec.registry import LocalRegistry
from feedrec.schemas import EVENT_SCHEMA
from feedrec.workspace import Workspace
from tests.integration.servers import _manifest

pytestmark = pytest.mark.unit
NAMES = [n for n in FEATURE_NAMES if n != "surface"]
BROKEN = "item_ctr_7d"


def _predict(x: np.ndarray) -> np.ndarray:
    """A stand-in ranker: P(click) from the item's 7-day CTR."""
    return np.clip(x[:, NAMES.index("item_ctr_7d")] * 1.1, 0, 1)


def _features(impressions: pl.DataFrame, events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Each impression's point-in-time features at its request's moment, at the slot it was shown."""
    first = impressions.group_by("request_id").agg(pl.col("timestamp").min().alias("at"))
    rows = impressions.join(first, on="request_id").sort("at", "request_id", "position")
    queries = rows.select("user_id", "item_id", pl.col("at").alias("timestamp"), "surface", "position")
    built = build_features(queries, events, items)
    context = rows.select("request_id", "at", "user_id", "surface", "item_id", pl.col("position").alias("slot"))
    return context.hstack(built.select(NAMES))


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    ws = tmp_path_factory.mktemp("monitor")
    feed = simulate(SimulatorConfig(n_users=200, n_items=300, days=4, seed=5, sessions_per_user_day=2.0))
    store = LocalEventStore(ws)
    store.append(feed.events)
    store.put_items(feed.items)
    events = pl.DataFrame(pl.from_arrow(feed.events))
    items = pl.DataFrame(pl.from_arrow(feed.items))
    impressions = events.filter(pl.col("type") == "impression")
    cut = impressions["timestamp"].max() - timedelta(days=1)
    train = _features(impressions.filter(pl.col("timestamp") < cut), events, items)
    served = _features(impressions.filter(pl.col("timestamp") >= cut), events, items)
    clicks = events.filter(pl.col("type") == "click").select("request_id", "item_id").unique()
    labels = train.join(clicks.with_columns(pl.lit(1.0).alias("y")), on=["request_id", "item_id"], how="left")
    x_train = train.select(NAMES).to_numpy().astype(np.float64)
    profile = build_profile(
        {n: x_train[:, j] for j, n in enumerate(NAMES)},
        {"surface": train["surface"].to_list()},
        _predict(x_train),
        labels["y"].fill_null(0.0).to_numpy(),
    )
    registry = LocalRegistry(ws / "registry")
    model = PopularityRecommender().fit(Interactions.from_frame(events.filter(pl.col("type") == "click")))
    registry.register(model, _manifest("v0001", "feedrec"), artifacts={PROFILE_FILE: json.dumps(profile)})
    registry.promote("v0001")
    registry.register(model, _manifest("v0002", "feedrec"))  # no profile

    log = FeatureLog(ws / "serving" / "features", flush_interval_s=3600)
    for (request_id,), part in served.group_by("request_id", maintain_order=True):
        x = part.select(NAMES).to_numpy().astype(np.float32)
        x[:, NAMES.index(BROKEN)] *= 3  # what a broken pipeline would have served
        log.add(
            request_id=str(request_id),
            time=part["at"][0].timestamp(),
            user_id=part["user_id"][0],
            version="v0001",
            surface=part["surface"][0],
            items=part["item_id"].to_list(),
            slots=part["slot"].to_list(),
            names=NAMES,
            matrix=x,
            predict=_predict,
        )
    log.close()
    return {"ws": ws, "profile": profile, "served": served, "events": events, "cut": cut}


def _cfg(**kw: object) -> MonitorConfig:
    return MonitorConfig(**({"reference": "training", "window_hours": 24, "skew_requests": 60, "min_rows": 50} | kw))


def test_feature_log_round_trips_rows_with_slots_and_predictions(space):
    logged = read_feature_log(space["ws"] / "serving" / "features")
    served = space["served"]
    assert logged.height == served.height
    assert logged["slot"].to_list() == served["slot"].to_list()
    np.testing.assert_allclose(logged["user_ctr_30d"].to_numpy(), served["user_ctr_30d"].to_numpy(), rtol=1e-6)
    # position is the slot; the prediction is the ranker's at that slot, made by the log's thread
    assert logged["position"].to_list() == served["slot"].to_list()
    x = logged.select(NAMES).to_numpy()
    np.testing.assert_allclose(logged["prediction"].to_numpy(), _predict(x), rtol=1e-6)


def test_drift_statistics_equal_their_direct_computation(space):
    result = run_monitor(Workspace(space["ws"]), _cfg(), write=False)
    ref = space["profile"]["features"][BROKEN]
    logged = read_feature_log(space["ws"] / "serving" / "features")
    values = logged[BROKEN].to_numpy()
    want = psi(np.asarray(ref["counts"]), numeric_histogram(values, np.asarray(ref["cuts"])))
    assert result["features"][BROKEN]["psi"] == pytest.approx(want, abs=1e-6)
    assert result["features"][BROKEN]["drifted"] and result["features"][BROKEN]["psi"] > 1
    # The normed Wasserstein distance: scipy's, over the reference sample's standard deviation.
    sample = np.asarray(ref["sample"])
    wanted = stats.wasserstein_distance(sample, values[np.isfinite(values)]) / sample.std()
    assert result["features"][BROKEN]["wasserstein"] == pytest.approx(wanted, abs=1e-6)
    assert "wasserstein" not in result["features"]["surface"]
    # Context features are reported but never alerted on; surface is categorical (chi-square).
    assert not result["features"]["hour"]["drifted"]
    assert result["features"]["surface"]["test"] == "chi_square"
    assert result["features"]["user_ctr_30d"]["test"] == "ks"
    assert set(result) >= {"window", "reference", "features", "prediction", "calibration", "skew", "online", "alerts"}


def test_calibration_is_the_ece_of_logged_predictions_against_the_clicks(space):
    result = run_monitor(Workspace(space["ws"]), _cfg(), write=False)
    logged = read_feature_log(space["ws"] / "serving" / "features")
    clicks = space["events"].filter(pl.col("type") == "click").select("request_id", "item_id").unique()
    joined = logged.join(clicks.with_columns(pl.lit(1.0).alias("y")), on=["request_id", "item_id"], how="left")
    y = joined["y"].fill_null(0.0).to_numpy()
    assert result["calibration"]["ctr"] == pytest.approx(y.mean())
    assert result["calibration"]["ece"] == pytest.approx(
        expected_calibration_error(y, joined["prediction"].to_numpy()), abs=1e-6
    )
    impressions = space["events"].filter((pl.col("type") == "impression") & (pl.col("timestamp") >= space["cut"]))
    assert result["online"]["impressions"] <= impressions.height
    # A calibration alert needs a rise past monitor.ece and past the window's chance level.
    cal = result["calibration"]
    assert cal["ece_by_chance"] == pytest.approx(ece_by_chance(joined["prediction"].to_numpy()), abs=1e-6)
    rise = cal["ece"] - (cal["reference_ece"] or 0.0)
    for ece in (rise / 2, rise * 2):
        alerts = run_monitor(Workspace(space["ws"]), _cfg(ece=ece), write=False)["alerts"]
        expected = rise >= max(ece, cal["ece_by_chance"])
        assert any(a["kind"] == "calibration" for a in alerts) == expected


def test_skew_flags_the_broken_feature_alone(space):
    result = run_monitor(Workspace(space["ws"]), _cfg(), write=False)
    skew = result["skew"]
    assert skew["flagged"] == [BROKEN]
    assert skew["features"][BROKEN]["mismatch_rate"] > 0.9
    others = [s["mismatch_rate"] for n, s in skew["features"].items() if n != BROKEN]
    assert len(others) > 40 and max(others) == 0.0  # the point-in-time values, exactly
    kinds = {(a["kind"], a["feature"]) for a in result["alerts"]}
    assert ("skew", BROKEN) in kinds and ("feature_drift", BROKEN) in kinds


def test_alerts_go_to_the_file_latest_json_and_the_gauges(space):
    ws = Workspace(space["ws"])
    result = run_monitor(ws, _cfg())
    lines = [json.loads(line) for line in alerts_file(space["ws"]).read_text().splitlines()]
    assert [(a["kind"], a["feature"]) for a in lines[-len(result["alerts"]) :]] == [
        (a["kind"], a["feature"]) for a in result["alerts"]
    ]
    assert json.loads(latest_file(space["ws"]).read_text())["reference"] == "v0001"
    families = {f.name: f for f in MonitorGauges(space["ws"]).collect()}
    psi_samples = {s.labels["feature"]: s.value for s in families["feedrec_drift_psi"].samples}
    assert psi_samples[BROKEN] == pytest.approx(result["features"][BROKEN]["psi"])
    alert_samples = {s.labels["kind"]: s.value for s in families["feedrec_monitor_alerts"].samples}
    assert alert_samples["skew"] == 1 and alert_samples["feature_drift"] >= 1


def test_thresholds_come_from_config(space):
    quiet = run_monitor(
        Workspace(space["ws"]), _cfg(psi=100.0, wasserstein=100.0, skew_mismatch=1.0, ece=1.0), write=False
    )
    assert quiet["alerts"] == [] and not any(s["drifted"] for s in quiet["features"].values())
    # Wasserstein alerts only when monitor.wasserstein is set (it is reported either way); then
    # either statistic alone raises a feature's alert, named by the statistic that breached.
    plain = run_monitor(Workspace(space["ws"]), _cfg(psi=100.0), write=False)
    assert "wasserstein_threshold" not in plain["features"][BROKEN] and plain["features"][BROKEN]["wasserstein"] > 0
    assert not [a for a in plain["alerts"] if a["kind"] == "feature_drift"]
    for psi_floor, w_floor, statistic in ((100.0, 0.1, "wasserstein"), (0.25, 100.0, "psi")):
        loud = run_monitor(Workspace(space["ws"]), _cfg(psi=psi_floor, wasserstein=w_floor), write=False)
        drift = [a for a in loud["alerts"] if a["kind"] == "feature_drift"]
        assert drift and {a["statistic"] for a in drift} == {statistic}
        assert BROKEN in {a["feature"] for a in drift}


def test_the_serving_baseline_waits_for_its_hours_then_becomes_the_reference(space):
    ws = Workspace(space["ws"])
    long = MonitorConfig(reference="serving", baseline_hours=48, window_hours=24, skew_requests=10, min_rows=50)
    pending = run_monitor(ws, long, write=False)
    assert pending["reference_kind"] == "training" and pending["baseline"] is None
    assert not any(s["drifted"] for s in pending["features"].values())  # no drift alerts before the baseline
    short = MonitorConfig(
        reference="serving", baseline_hours=6, window_hours=3, skew_requests=10, min_rows=50, wasserstein=0.1
    )
    judged = run_monitor(ws, short, write=False)
    assert judged["reference_kind"] == "serving" and judged["baseline"]["rows"] > 0
    assert "training" in judged["features"][BROKEN]  # the training comparison is still reported
    # The baseline is the serving just before the window; each feature's threshold is at least
    # monitor.psi, more where the baseline's own windows stray further (null_factor x their PSI).
    assert judged["baseline"]["end"] == judged["window"]["start"]
    assert all(s["threshold"] >= short.psi for s in judged["features"].values())
    assert any(s["threshold"] > short.psi for s in judged["features"].values())
    numeric = [s for s in judged["features"].values() if "wasserstein" in s]
    assert numeric and all(s["wasserstein_threshold"] >= short.wasserstein for s in numeric)
    # Against its own serving, the tripled feature is no longer a shift.
    assert judged["features"][BROKEN]["psi"] < judged["features"][BROKEN]["training"]["psi"]


def _between(rows: pl.DataFrame, start: datetime, end: datetime, name: str) -> np.ndarray:
    """``name``'s values in [start, end): one per row, or one per request for a user feature."""
    part = rows.filter((pl.col("time") >= start) & (pl.col("time") < end))
    if name.startswith("user_"):
        part = part.unique("request_id", keep="first", maintain_order=True)
    return part[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def test_the_mean_shift_is_against_the_span_just_before_the_window(space):
    ws = Workspace(space["ws"])
    logged = read_feature_log(space["ws"] / "serving" / "features")
    until = logged["time"].max() + timedelta(microseconds=1)
    since, length = until - timedelta(hours=10), timedelta(hours=10)
    result = run_monitor(ws, _cfg(window_hours=10), since=since, until=until, write=False)
    for name in ("item_ctr_7d", "item_clicks_1h", "user_clicks_30d"):
        want = mean_shift(_between(logged, since - length, since, name), _between(logged, since, until, name))
        got = result["features"][name]
        assert got["mean_shift"] == pytest.approx(want, abs=1e-6)
        assert got["mean_shift_threshold"] == 0.15  # the training reference has no null: the floor
    assert "mean_shift" not in result["features"]["surface"] and "mean_shift" in result["prediction"]
    # Alerts name the statistic that breached; None reports it and never alerts.
    loud = run_monitor(ws, _cfg(window_hours=10, psi=100.0, mean_shift=1e-6), since=since, until=until)
    drift = [a for a in loud["alerts"] if a["kind"] == "feature_drift"]
    assert drift and {a["statistic"] for a in drift} == {"mean_shift"}
    gauges = {f.name: f for f in MonitorGauges(space["ws"]).collect()}["feedrec_drift_mean_shift"].samples
    assert {s.labels["feature"]: s.value for s in gauges}["item_ctr_7d"] == loud["features"]["item_ctr_7d"][
        "mean_shift"
    ]
    assert all(since.isoformat() < a["time"] <= until.isoformat() for a in drift)
    off = run_monitor(ws, _cfg(window_hours=10, psi=100.0, mean_shift=None), since=since, until=until, write=False)
    assert not [a for a in off["alerts"] if a["kind"] == "feature_drift"]
    assert (
        "mean_shift_threshold" not in off["features"]["item_ctr_7d"] and "mean_shift" in off["features"]["item_ctr_7d"]
    )
    # With nothing served just before the window (its first hours), there is no mean shift to judge.
    first = logged["time"].min()
    early = run_monitor(ws, _cfg(window_hours=2), since=first, until=first + timedelta(hours=2), write=False)
    assert "mean_shift" not in early["features"]["item_ctr_7d"]


def test_the_mean_shift_null_is_the_baselines_largest_adjacent_spans(space):
    ws = Workspace(space["ws"])
    logged = read_feature_log(space["ws"] / "serving" / "features")
    until = logged["time"].max() + timedelta(microseconds=1)
    since, length = until - timedelta(hours=2), timedelta(hours=2)
    cfg = MonitorConfig(
        reference="serving", baseline_hours=8, window_hours=2, skew_requests=10, min_rows=50, mean_shift=1e-6
    )
    result = run_monitor(ws, cfg, since=since, until=until, write=False)
    start = since - timedelta(hours=8)
    for name in ("item_ctr_7d", "item_clicks_1d", "user_impressions_7d"):
        shifts = []
        for k in range(5):  # cuts at start + 2 h, ..., since - 2 h, an hour apart
            cut = start + length + timedelta(hours=k)
            spans = [(cut - length, cut), (cut, cut + length)]
            if all(_between(logged, lo, hi, "slot").size >= 50 for lo, hi in spans):  # rows, not requests
                shifts.append(mean_shift(*(_between(logged, lo, hi, name) for lo, hi in spans)))
        assert len(shifts) >= 3
        want = 2.0 * max(shifts)  # monitor.mean_shift_null_factor
        assert result["features"][name]["mean_shift_threshold"] == pytest.approx(want, abs=1e-5)


def test_clear_errors(space):
    ws = Workspace(space["ws"])
    with pytest.raises(MonitorError, match="no reference profile"):
        run_monitor(ws, _cfg(), reference="v0002")
    with pytest.raises(MonitorError, match="min_rows"):
        run_monitor(ws, _cfg(min_rows=10**7), write=False)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "feedrec.cli", *args], capture_output=True, text=True)


def test_the_cli_prints_json_writes_the_report_and_watches(space, tmp_path):
    ws = str(space["ws"])
    sets = [
        "--set",
        "monitor.reference=training",
        "--set",
        "monitor.window_hours=24",
        "--set",
        "monitor.skew_requests=20",
    ]
    done = _cli("monitor", "-w", ws, *sets, "--json", "--report", str(tmp_path / "m.html"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["features"][BROKEN]["drifted"] and result["window"]["end"] > result["window"]["start"]
    html = (tmp_path / "m.html").read_text()
    assert html.count("<img src='data:image/png;base64,") == 2  # drift over time, online
    assert '"alert"' in done.stderr  # the alerts as structured log lines
    before = len(alerts_file(space["ws"]).read_text().splitlines())
    watched = _cli("monitor", "-w", ws, *sets, "--set", "monitor.watch_interval_s=0.1", "--watch", "--runs", "2")
    assert watched.returncode == 0, watched.stderr
    assert len(alerts_file(space["ws"]).read_text().splitlines()) == before + 2 * len(result["alerts"])
    bad = _cli("monitor", "-w", ws, "--since", "yesterday")
    assert bad.returncode != 0 and "ISO time" in bad.stderr


def test_hourly_engagement_counts_each_hour_as_a_naive_loop_does(tmp_path):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(0)
    offsets = np.sort(rng.uniform(0, 3 * 3600, 400))
    types = rng.choice(["impression", "impression", "impression", "click", "hide", "dwell"], 400)
    rows = [
        {"event_id": f"e{i}", "user_id": "u", "item_id": "i", "timestamp": t0 + timedelta(seconds=float(o)),
         "type": str(t), "value": 2.0 if t == "dwell" else None, "position": 0, "surface": "home", "request_id": "r"}
        for i, (o, t) in enumerate(zip(offsets, types, strict=True))
    ]  # fmt: skip
    store = LocalEventStore(tmp_path)
    store.append(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))
    hours = hourly_engagement(store, t0, t0 + timedelta(hours=4))
    assert len(hours) == 4
    for h, got in enumerate(hours):
        inside = [r for r in rows if t0 + timedelta(hours=h) <= r["timestamp"] < t0 + timedelta(hours=h + 1)]
        imp = sum(r["type"] == "impression" for r in inside)
        clicks = sum(r["type"] == "click" for r in inside)
        assert (got["impressions"], got["clicks"]) == (imp, clicks)
        assert got["ctr"] == (clicks / imp if imp else None)
        dwell = sum(r["value"] for r in inside if r["type"] == "dwell")
        assert got["dwell_per_impression"] == (pytest.approx(dwell / imp) if imp else None)


def _lagging(space, behind: timedelta, frozen: str | None = None) -> pl.DataFrame:
    """Feature-log rows of a server whose store had folded the events up to ``behind`` before each
    request (``as_of``), its ``frozen`` counter stuck at the values of a day earlier than that."""
    served = space["served"].filter(
        pl.col("request_id").is_in(space["served"]["request_id"].unique().sort()[:60].implode())
    )
    queries = served.select(
        "user_id", "item_id", pl.col("at").alias("timestamp"), "surface", pl.col("slot").alias("position")
    )
    items = pl.DataFrame(pl.from_arrow(LocalEventStore(space["ws"]).items()))
    lagged = build_features(queries, space["events"], items, known_before=served["at"] - behind)
    if frozen is not None:
        stuck = build_features(queries, space["events"], items, known_before=served["at"] - behind - timedelta(days=1))
        lagged = lagged.with_columns(stuck[frozen])
    return served.select("request_id", "user_id", "item_id", pl.col("at").alias("time"), "surface", "slot").with_columns(
        (pl.col("time") - behind).alias("as_of")
    ).hstack(lagged.select(NAMES))  # fmt: skip


def test_skew_bounds_a_lagging_server_by_what_its_store_had_folded(space):
    from feedrec.monitoring.skew import skew

    store = LocalEventStore(space["ws"])
    rows = _lagging(space, timedelta(hours=2))
    judged = skew(rows, store, store.items(), requests=60, grace_s=0)
    assert judged["flagged"] == [] and max(f["mismatch_rate"] for f in judged["features"].values()) == 0.0
    assert judged["lag_s"] == {"requests": 60, "p50": 7200.0, "p99": 7200.0, "max": 7200.0}
    # Without as_of (a log from before it was recorded), two hours behind looks like skew.
    blind = skew(rows.drop("as_of"), store, store.items(), requests=60, grace_s=0)
    assert len(blind["flagged"]) > 5 and blind["lag_s"]["requests"] == 0
    # A counter stuck while the rest of the store moves on is still skew.
    stuck = skew(_lagging(space, timedelta(minutes=5), frozen="user_impressions_7d"), store, store.items(), requests=60)
    assert stuck["flagged"] == ["user_impressions_7d"], stuck["flagged"]


def _freshness_alerts(space, behind: timedelta, cfg: MonitorConfig) -> list[dict[str, object]]:
    """The freshness alerts of a window whose only evidence is the skew check of a store ``behind``."""
    from feedrec.monitoring.monitor import _alerts
    from feedrec.monitoring.skew import skew

    store = LocalEventStore(space["ws"])
    calibrated = {"ece": 0.0, "reference_ece": 0.0, "ece_by_chance": 0.0}
    judged = skew(_lagging(space, behind), store, store.items(), requests=60)
    result = {"features": {}, "prediction": {"drifted": False}, "calibration": calibrated, "skew": judged}
    return [a for a in _alerts(result, cfg, datetime.now(UTC), lambda *_: None) if a["kind"] == "freshness"]


def test_a_store_far_behind_raises_the_freshness_alert(space):
    alerts = _freshness_alerts(space, timedelta(hours=2), _cfg())
    assert [(a["statistic"], a["value"], a["threshold"]) for a in alerts] == [("lag_p50_s", 7200.0, 3600.0)]
    assert _freshness_alerts(space, timedelta(minutes=30), _cfg()) == []
    assert _freshness_alerts(space, timedelta(hours=2), _cfg(max_lag_s=None)) == []  # reported, not alerted
