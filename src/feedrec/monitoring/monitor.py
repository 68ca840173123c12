"""``feedrec monitor``: drift, calibration, skew and online engagement over a window of serving.

load the reference (the production bundle's profile) -> the window's logged rows (the feature
log) and events -> per-feature drift (PSI, KL, JS on the reference's bins; the normed
Wasserstein distance and KS for numeric features, chi-square for categorical ones; see
``feedrec.metrics.drift``; the mean shift of numeric features, against the span of equal length
just before the window; a feature drifted when its PSI passes its threshold, or its mean shift
does, or its normed Wasserstein distance does with ``monitor.wasserstein`` set) -> prediction drift ->
calibration (ECE and the reliability curve of logged predictions against the clicks that
followed, attributed by request id within ``attribution_s``; a rise alerts past ``monitor.ece``
and past what calibrated predictions reach by chance at the window's size) -> online CTR and
engagement per bucket -> training-serving skew (``feedrec.monitoring.skew``) -> alerts (thresholds from
``monitor:`` in config). Every time is the events' time (a simulated world's clock), never the wall's.

Alerts go out three ways: a structured log line each, appended to ``<workspace>/monitoring/
alerts.jsonl``, and as Prometheus gauges: the run's result is written to ``monitoring/latest.json``,
which the server's ``/metrics`` exposes (``feedrec.online.telemetry``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from feedrec.config import MonitorConfig
from feedrec.data.store import EventStore
from feedrec.features.definitions import AFFINITIES, COUNTERS, DAY, RATIOS, WINDOWS
from feedrec.logs import get_logger
from feedrec.metrics import expected_calibration_error
from feedrec.metrics.drift import (
    categorical_histogram,
    chi_square_test,
    ece_by_chance,
    js_distance,
    kl_divergence,
    ks_test,
    mean_shift,
    normed_wasserstein,
    numeric_histogram,
    psi,
    reliability_curve,
)
from feedrec.monitoring import FOLDER, alerts_file, latest_file
from feedrec.monitoring.featurelog import read_feature_log
from feedrec.monitoring.profile import PROFILE_FILE, build_profile
from feedrec.monitoring.skew import skew
from feedrec.workspace import Workspace

log = get_logger("monitor")
ENGAGEMENT = ("impression", "click", "like", "share", "hide")
_USER = {c.name for c in COUNTERS if c.entity == "user"}
REQUEST_LEVEL = _USER | {r.name for r in RATIOS if r.numerator in _USER} | {"hour", "weekday", "surface"}
_WEEK = {c.name for c in COUNTERS if WINDOWS[c.window] >= 7 * DAY}
_WEEK |= {a.name for a in AFFINITIES if WINDOWS[a.window] >= 7 * DAY}
#: The features that count a week or more (and the ratios of two such): their PSI null is the whole
#: baseline day's (``_null``), not the window's own hours'.
LONG_WINDOW = _WEEK | {r.name for r in RATIOS if r.numerator in _WEEK and r.denominator in _WEEK}
#: Each drift statistic that can raise an alert, and the key of its threshold in a feature's verdict.
_LIMITS = {"psi": "threshold", "wasserstein": "wasserstein_threshold", "mean_shift": "mean_shift_threshold"}
NOT_FEATURES = {"request_id", "time", "as_of", "user_id", "model_version", "surface", "item_id", "slot", "prediction"}


class MonitorError(ValueError):
    """The monitor cannot judge: no production bundle, no profile, or nothing logged."""


def monitoring_dir(space: Workspace) -> Path:
    return space.root / FOLDER


def load_profile(space: Workspace, version: str) -> dict[str, Any]:
    text = space.registry.artifact(version, PROFILE_FILE)
    if text is None:
        raise MonitorError(
            f"bundle {version} has no reference profile ({PROFILE_FILE}): it has no real-time ranker, or was "
            "trained before monitoring; retrain it with `feedrec train`"
        )
    profile: dict[str, Any] = json.loads(text)
    return profile


def _divergences(reference: dict[str, Any], values: np.ndarray | list[str | None]) -> dict[str, float]:
    """PSI, KL and JS of ``values`` against one feature's reference histogram, and for a numeric
    feature the normed Wasserstein distance from the reference's sample (no test): what the
    statistics over time need, bucket by bucket."""
    cur = _histogram(reference, values)
    if reference["kind"] == "categorical":
        shares = reference["shares"]
        ref = np.append(np.asarray([shares[c] for c in shares]) * reference["rows"], 0.0)
    else:
        ref = np.asarray(reference["counts"], np.float64)
    out = {
        "psi": round(psi(ref, cur), 6),
        "kl": round(kl_divergence(ref, cur), 6),
        "js": round(js_distance(ref, cur), 6),
    }
    if reference["kind"] == "numeric":
        sample = np.asarray(reference["sample"], np.float64)
        out["wasserstein"] = round(normed_wasserstein(sample, np.asarray(values, np.float64)), 6)
    return out


def _stats(reference: dict[str, Any], values: np.ndarray | list[str | None]) -> dict[str, Any]:
    """Drift of ``values`` from one feature's reference profile (numeric or categorical), with its test."""
    if reference["kind"] == "categorical":
        current = ["<missing>" if v is None else str(v) for v in values]
        statistic, p_value = chi_square_test(reference["shares"], current)
        test = "chi_square"
    else:
        statistic, p_value = ks_test(np.asarray(reference["sample"], np.float64), np.asarray(values, np.float64))
        test = "ks"
    out = {
        **_divergences(reference, values),
        "test": test,
        "statistic": round(statistic, 6) if np.isfinite(statistic) else None,
        "p_value": float(p_value) if np.isfinite(p_value) else None,
        "rows": len(values),
    }
    if reference["kind"] == "numeric":
        finite = np.asarray(values, np.float64)
        finite = finite[np.isfinite(finite)]
        out |= {"mean": float(finite.mean()) if finite.size else None, "reference_mean": reference["mean"]}
    return out


def _column(rows: pl.DataFrame, name: str) -> np.ndarray | list[str | None]:
    """The values of ``name`` to judge: one per row, or one per request for what a request shares
    (the user's features and the context: ten rows of one feed are one observation of those)."""
    if name in REQUEST_LEVEL:
        rows = rows.unique("request_id", keep="first", maintain_order=True)
    if name == "surface":
        return rows["surface"].to_list()
    return rows[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def _buckets(start: datetime, end: datetime, hours: float) -> list[tuple[datetime, datetime]]:
    step = timedelta(hours=hours)
    out, t = [], start
    while t < end:
        out.append((t, min(t + step, end)))
        t += step
    return out


def _labels(rows: pl.DataFrame, events: pl.DataFrame, attribution_s: float) -> np.ndarray:
    """1 where the row's (request, item) was clicked within ``attribution_s`` of its feed."""
    clicks = (
        events.filter((pl.col("type") == "click") & pl.col("request_id").is_not_null())
        .select("request_id", "item_id", pl.col("timestamp").alias("clicked_at"))
        .unique(["request_id", "item_id"])
    )
    joined = rows.select("request_id", "item_id", "time").join(
        clicks, on=["request_id", "item_id"], how="left", maintain_order="left"
    )
    ok = pl.col("clicked_at").is_not_null() & (pl.col("clicked_at") < pl.col("time") + timedelta(seconds=attribution_s))
    return joined.select(ok.cast(pl.Float64)).to_series().to_numpy()


def _online(events: pl.DataFrame) -> dict[str, Any]:
    counts = {t: int((events["type"] == t).sum()) for t in ENGAGEMENT}
    impressions = counts["impression"]
    dwell = events.filter(pl.col("type") == "dwell")["value"].sum() if events.height else 0.0
    return {
        "impressions": impressions,
        "clicks": counts["click"],
        "ctr": counts["click"] / impressions if impressions else None,
        "likes_per_impression": counts["like"] / impressions if impressions else None,
        "hides_per_impression": counts["hide"] / impressions if impressions else None,
        "dwell_per_impression": float(dwell or 0.0) / impressions if impressions else None,
    }


def hourly_engagement(events: EventStore, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Online engagement per hour of event time from ``start`` to ``end`` (what the monitor reports
    per bucket: impressions, clicks, CTR, likes, hides and dwell per impression)."""
    scanned = events.scan(columns=["type", "value", "timestamp"], types=[*ENGAGEMENT, "dwell"], start=start, end=end)
    frame = pl.DataFrame(pl.from_arrow(scanned))
    return [
        {"start": lo.isoformat(), "end": hi.isoformat()}
        | _online(frame.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi)))
        for lo, hi in _buckets(start, end, 1.0)
    ]


def run_monitor(
    space: Workspace,
    cfg: MonitorConfig,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    reference: str | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Judge the window ``[since, until)`` (default: the ``cfg.window_hours`` before the latest
    logged feed) against ``reference``'s profile (default: production); the issue's JSON shape."""
    if reference is None:
        production = space.registry.production()
        if production is None:
            raise MonitorError("no production bundle to monitor: train one with `feedrec train`")
        reference = production.version
    training = load_profile(space, reference)
    logged = read_feature_log(space.serving_dir / "features")
    if "model_version" in logged.columns:
        logged = logged.filter(pl.col("model_version") == reference)
    if logged.is_empty():
        raise MonitorError(f"the feature log holds no rows of {reference}: serve it with FEEDREC_FEATURE_LOG_RATE > 0")
    last = logged["time"].max()
    assert isinstance(last, datetime)
    until = until or last + timedelta(microseconds=1)
    since = since or until - timedelta(hours=cfg.window_hours)
    rows = _between(logged, since, until)
    if rows.height < cfg.min_rows:
        raise MonitorError(
            f"{rows.height} logged rows of {reference} in [{since.isoformat()}, {until.isoformat()}); the monitor "
            f"needs monitor.min_rows={cfg.min_rows}: widen the window or raise FEEDREC_FEATURE_LOG_RATE"
        )
    columns = ["event_id", "request_id", "user_id", "item_id", "type", "value", "timestamp"]
    scanned = space.events.scan(columns=columns, start=since, end=until + timedelta(seconds=cfg.attribution_s))
    events = pl.DataFrame(pl.from_arrow(scanned))
    in_window = events.filter((pl.col("timestamp") >= since) & (pl.col("timestamp") < until))
    # The window and, before it, as long a span (what the mean shift is taken against) or a
    # bucket (what the timeline's first bucket is), filtered from the whole log once.
    recent = _between(logged, since - max(until - since, timedelta(hours=cfg.bucket_hours)), until)
    before = _between(recent, since - (until - since), since)

    names = [n for n in training["features"] if n == "surface" or n in rows.columns]
    baseline = serving_baseline(space, logged, cfg, since, until - since) if cfg.reference == "serving" else None
    profile = training if cfg.reference == "training" or baseline is None else baseline
    judged = cfg.reference == "training" or baseline is not None  # no drift alerts before the baseline exists
    null: dict[str, dict[str, float]] = baseline["null"] if baseline is not None else {}

    def threshold(name: str, statistic: str = "psi") -> float:
        """The statistic's floor (cfg.psi, cfg.wasserstein, cfg.mean_shift), or more for a feature
        whose windows stray that far by themselves within the baseline."""
        floor = {"psi": cfg.psi, "wasserstein": cfg.wasserstein, "mean_shift": cfg.mean_shift}[statistic]
        factor = cfg.mean_shift_null_factor if statistic == "mean_shift" else cfg.null_factor
        return round(max(floor or 0.0, factor * null.get(statistic, {}).get(name, 0.0)), 6)

    features = {}
    for name in [*names, "prediction"]:
        of = profile["prediction"] if name == "prediction" else profile["features"][name]
        values = _column(rows, name)
        stats = _stats(of, values)
        stats["threshold"] = threshold(name)
        if "wasserstein" in stats and cfg.wasserstein is not None:
            stats["wasserstein_threshold"] = threshold(name, "wasserstein")
        if "wasserstein" in stats and before.height >= cfg.min_rows:  # numeric, and served just before
            stats["mean_shift"] = round(mean_shift(_values(before, name), np.asarray(values, np.float64)), 6)
            if cfg.mean_shift is not None:
                stats["mean_shift_threshold"] = threshold(name, "mean_shift")
        stats["drifted"] = bool(judged and name not in cfg.ignore and breached(stats))
        if profile is not training and name != "prediction":
            stats["training"] = _divergences(training["features"][name], values)
        features[name] = stats
    prediction = features.pop("prediction")
    labels = _labels(rows, events, cfg.attribution_s)
    p = rows["prediction"].to_numpy()
    calibration = {
        "rows": int(p.size),
        "ece": round(expected_calibration_error(labels, np.clip(p, 0, 1)), 6),
        "mean_prediction": float(p.mean()),
        "ctr": float(labels.mean()),
        "reference_ece": profile["calibration"].get("ece"),
        # What these predictions' ECE reaches by chance at this many rows, were they calibrated: a
        # rise must pass it as well as monitor.ece (an hour of feeds is noisy; ece_by_chance).
        "ece_by_chance": round(ece_by_chance(p, quantile=cfg.ece_chance_quantile), 6),
        "reference_ctr": profile["calibration"].get("ctr"),
        "curve": reliability_curve(labels, p),
    }
    timeline = _timeline(recent, in_window, events, profile, names, cfg, since, until)
    result: dict[str, Any] = {
        "window": {"start": since.isoformat(), "end": until.isoformat()},
        "reference": reference,
        "reference_kind": "training" if profile is training else "serving",
        "baseline": baseline.get("window") if baseline is not None else None,
        "rows": rows.height,
        "requests": rows["request_id"].n_unique(),
        "features": features,
        "prediction": prediction,
        "calibration": calibration,
        "skew": skew(
            rows,
            space.events,
            space.events.items(),
            requests=cfg.skew_requests,
            threshold=cfg.skew_mismatch,
            grace_s=cfg.skew_grace_s,
        ),
        "online": _online(in_window) | {"hourly": timeline["online"]},
        "timeline": timeline["drift"],
    }
    buckets = _buckets(since, until, cfg.bucket_hours)

    def crossing(name: str, statistic: str) -> str | None:
        reference = profile["prediction"] if name == "prediction" else profile["features"][name]
        return _crossing(recent, since, reference, name, statistic, threshold(name, statistic), buckets)

    result["alerts"] = _alerts(result, cfg, until, crossing)
    if write:
        _publish(space, result)
    return result


def serving_baseline(
    space: Workspace, logged: pl.DataFrame, cfg: MonitorConfig, since: datetime, window: timedelta
) -> dict[str, Any] | None:
    """The profile of the reference version's serving in the ``cfg.baseline_hours`` before the
    window (``logged``: its rows): what the window is judged against, so that an abrupt change
    stands out from the slow ones a deployment lives with (its bundle ageing, its own feedback
    on the 7-day counters). None when the version served less than that before ``since`` (or
    logged fewer than ``cfg.min_rows`` rows then)."""
    first = logged["time"].min()
    assert isinstance(first, datetime)
    start = since - timedelta(hours=cfg.baseline_hours)
    rows = _between(logged, start, since)
    if first > start or rows.height < cfg.min_rows:
        return None
    columns = ["request_id", "item_id", "type", "timestamp"]
    scanned = space.events.scan(
        columns=columns, types=["click"], start=start, end=since + timedelta(seconds=cfg.attribution_s)
    )
    names = [n for n in rows.columns if n not in NOT_FEATURES]
    profile = build_profile(
        {n: _column(rows, n) for n in names},  # type: ignore[misc]
        {"surface": rows["surface"].to_list()},
        rows["prediction"].to_numpy(),
        _labels(rows, pl.DataFrame(pl.from_arrow(scanned)), cfg.attribution_s),
    )
    profile["window"] = {"start": start.isoformat(), "end": since.isoformat(), "rows": rows.height}
    profile["null"] = _null(rows, profile, [*names, "surface", "prediction"], start, since, window, cfg)
    return profile


def breached(stats: dict[str, Any]) -> list[str]:
    """The statistics of one feature's verdict that reached their thresholds: ``psi`` and, for a
    numeric feature, ``wasserstein``."""
    return [name for name, limit in _LIMITS.items() if limit in stats and stats[name] >= stats[limit]]


#: The null's local blocks (``_null``): the window's time of day a day earlier, this many buckets
#: either side, and this many blocks just before the window.
_NULL_SPREAD = 2
_NULL_RECENT = 2


def _null(
    rows: pl.DataFrame,
    profile: dict[str, Any],
    names: list[str],
    start: datetime,
    end: datetime,
    window: timedelta,
    cfg: MonitorConfig,
) -> dict[str, dict[str, float]]:
    """Per statistic (``psi``, and ``wasserstein`` when it alerts) and feature, how far a window as
    long as the judged one strays from the rest of the baseline ``[start, end)`` by itself: the
    PSI of a block of the baseline against the remaining rows (both over the baseline's bins), and
    the normed Wasserstein distance of the block's values from the remaining rows' (numeric
    features). A feature that moves that much on an ordinary day needs a larger shift than the
    statistic's floor (``cfg.psi``, ``cfg.wasserstein``) before it alerts: ``cfg.null_factor``
    times this.

    Which blocks: spans of the window's length, one starting every bucket. The largest over all
    of the day's, except that a day of baseline also shows how far the window's own hours stray by
    themselves, and that is the null where it is smaller: the spans at the window's time of day a
    day earlier (and up to ``_NULL_SPREAD`` buckets either side), or the ``_NULL_RECENT`` spans
    just before the window (a trend: the 7-day counters filling with the bundle's own choices),
    whichever strays most. So a counter of the last hour, whose night differs from its afternoon,
    is judged against how much its afternoons differ from the day, not its nights (measured: the
    largest block's null hid the item counters' fall after a taste shift). Seven local spans, not
    three: with three, an hour's window of a feature that a few creators dominate strayed past 1.5
    times their largest by chance (4 false alarms in 10 unshifted runs). The day's spans overlap:
    at a 6-hour window four disjoint blocks understated it (creator_ctr_7d's null 0.11, against
    0.42 over nineteen spans). The features counting a week or more (``LONG_WINDOW``) take the
    day's largest alone: their values have no daily cycle of their own, and the few creators a
    feed concentrates on move them as much at any hour (their local null raised the creator
    counters' false alarms). All measured in docs/BENCHMARKS.md, "Monitoring". A window longer
    than the baseline has no such span: its null is 0, and the floor alone judges it.

    The mean shift's null (``mean_shift``, when ``cfg.mean_shift`` is set) is the largest mean
    shift between two adjacent spans of the window's length anywhere in the baseline (one every
    bucket): what the statistic itself compares, the window against the span just before it; a
    feature's threshold is ``cfg.mean_shift_null_factor`` times it. Not the local blocks: seven such
    pairs understated it (on one steady state, false alarms in 9 of 10 unshifted runs, most at
    hour 1; docs/BENCHMARKS.md)."""
    bucket = timedelta(hours=cfg.bucket_hours)
    length = max(window, bucket)
    blocks = [(lo, lo + length) for lo in _starts(start, end - length, bucket)]
    earlier = [end - timedelta(hours=24) + k * bucket for k in range(-_NULL_SPREAD, _NULL_SPREAD + 1)]
    same_hours = [(lo, lo + length) for lo in earlier if lo >= start and lo + length <= end]
    recent_spans = [(end - length - k * bucket, end - k * bucket) for k in range(_NULL_RECENT)]
    recent_spans = [span for span in recent_spans if span[0] >= start]

    def judged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
        """The spans with at least ``cfg.min_rows`` rows."""
        return [span for span in spans if parts[span].height >= cfg.min_rows]

    def inside(span: tuple[datetime, datetime]) -> pl.Expr:
        return (pl.col("time") >= span[0]) & (pl.col("time") < span[1])

    # Each span's rows (and, for Wasserstein, the baseline's other rows) filtered once, not per feature.
    parts = {span: rows.filter(inside(span)) for span in {*blocks, *same_hours, *recent_spans}}
    day, local, recent = judged(blocks), judged(same_hours), judged(recent_spans)
    spans = {*day, *local, *recent}
    rest = {span: rows.filter(~inside(span)) for span in spans} if cfg.wasserstein is not None else {}
    out: dict[str, dict[str, float]] = {"psi": {}, "wasserstein": {}}
    for name in names:
        reference = profile["prediction"] if name == "prediction" else profile["features"][name]
        whole = _histogram(reference, _column(rows, name))
        strays = {"psi": {span: _psi_stray(whole, reference, name, parts[span]) for span in spans}}
        if rest and reference["kind"] == "numeric":
            strays["wasserstein"] = {
                span: normed_wasserstein(_values(rest[span], name), _values(parts[span], name)) for span in spans
            }
        for statistic, of in strays.items():
            worst = max((of[span] for span in day), default=0.0)
            if local and name not in LONG_WINDOW:
                worst = min(worst, max(of[span] for span in [*local, *recent]))
            out[statistic][name] = round(worst, 6)
    if cfg.mean_shift is not None:
        out["mean_shift"] = _mean_shift_null(rows, profile, names, start, end, length, cfg)
    return out


def _starts(first: datetime, last: datetime, step: timedelta) -> list[datetime]:
    """``first``, ``first + step``, ... up to ``last`` (inclusive)."""
    out = []
    while first <= last:
        out.append(first)
        first += step
    return out


def _mean_shift_null(
    rows: pl.DataFrame,
    profile: dict[str, Any],
    names: list[str],
    start: datetime,
    end: datetime,
    length: timedelta,
    cfg: MonitorConfig,
) -> dict[str, float]:
    """Per numeric feature (and the prediction), the largest mean shift between adjacent spans of
    ``length`` in the baseline ``rows`` over ``[start, end)``, a pair every ``cfg.bucket_hours``
    (spans with fewer than ``cfg.min_rows`` rows are left out)."""
    step = timedelta(hours=cfg.bucket_hours)
    pairs = [((cut - length, cut), (cut, cut + length)) for cut in _starts(start + length, end - length, step)]
    parts = {span: _between(rows, *span) for pair in pairs for span in pair}
    pairs = [pair for pair in pairs if min(parts[span].height for span in pair) >= cfg.min_rows]
    out = {}
    for name in names:
        reference = profile["prediction"] if name == "prediction" else profile["features"][name]
        if reference["kind"] != "numeric":
            continue
        values = {span: _values(part, name) for span, part in parts.items()}
        shifts = [mean_shift(values[a], values[b]) for a, b in pairs]
        out[name] = round(max(shifts, default=0.0), 6)
    return out


def _psi_stray(whole: np.ndarray, reference: dict[str, Any], name: str, part: pl.DataFrame) -> float:
    """The PSI of ``part``'s ``name`` against the rest of ``whole`` (the histogram of all rows)."""
    block = _histogram(reference, _column(part, name))
    return psi(whole - block, block)


def _values(rows: pl.DataFrame, name: str) -> np.ndarray:
    return np.asarray(_column(rows, name), np.float64)


def _histogram(reference: dict[str, Any], values: np.ndarray | list[str | None]) -> np.ndarray:
    """``values`` over ``reference``'s bins (numeric cuts plus missing, or categories plus other)."""
    if reference["kind"] == "categorical":
        return categorical_histogram(["<missing>" if v is None else str(v) for v in values], list(reference["shares"]))
    return numeric_histogram(np.asarray(values, np.float64), np.asarray(reference["cuts"], np.float64))


def _timeline(
    logged: pl.DataFrame,
    in_window: pl.DataFrame,
    events: pl.DataFrame,
    profile: dict[str, Any],
    names: list[str],
    cfg: MonitorConfig,
    since: datetime,
    until: datetime,
) -> dict[str, list[dict[str, Any]]]:
    """Per bucket: each feature's PSI and JS, the prediction's PSI, ECE, and online engagement;
    numeric features' and the prediction's normed Wasserstein distance, and their mean shift from
    the bucket before (``logged``: the version's feature log from a bucket before ``since``)."""
    drift, online = [], []
    for start, end in _buckets(since, until, cfg.bucket_hours):
        part = _between(logged, start, end)
        previous = _between(logged, start - (end - start), start)
        happened = in_window.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
        online.append({"start": start.isoformat(), "end": end.isoformat(), **_online(happened)})
        if part.height < cfg.min_rows:
            continue
        point: dict[str, Any] = {"start": start.isoformat(), "end": end.isoformat(), "rows": part.height}
        for name in [*names, "prediction"]:
            reference = profile["prediction"] if name == "prediction" else profile["features"][name]
            s = _divergences(reference, _column(part, name))
            point[name] = {k: s[k] for k in ("psi", "js", "wasserstein") if k in s}
            if "wasserstein" in s and previous.height >= cfg.min_rows:
                point[name]["mean_shift"] = round(mean_shift(_values(previous, name), _values(part, name)), 6)
        labels = _labels(part, events, cfg.attribution_s)
        point["ece"] = round(expected_calibration_error(labels, np.clip(part["prediction"].to_numpy(), 0, 1)), 6)
        drift.append(point)
    return {"drift": drift, "online": online}


def _crossing(
    logged: pl.DataFrame,
    since: datetime,
    reference: dict[str, Any],
    name: str,
    statistic: str,
    threshold: float,
    buckets: list[tuple[datetime, datetime]],
) -> str | None:
    """The end of the first bucket at which ``statistic`` over the window so far (from ``since``;
    the mean shift against as long a span before it) reached ``threshold``: when an alert on the
    window would first have fired (``logged``: the version's feature log from a window before
    ``since``)."""
    for _, end in buckets:
        so_far = _between(logged, since, end)
        if not so_far.height:
            continue
        if statistic == "mean_shift":
            value = mean_shift(_values(_between(logged, since - (end - since), since), name), _values(so_far, name))
        else:
            value = _divergences(reference, _column(so_far, name))[statistic]
        if value >= threshold:
            return end.isoformat()
    return None


def _between(rows: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    return rows.filter((pl.col("time") >= start) & (pl.col("time") < end))


def _alerts(
    result: dict[str, Any], cfg: MonitorConfig, until: datetime, crossing: Callable[[str, str], str | None]
) -> list[dict[str, Any]]:
    """One alert per breached threshold; a drift alert's ``time`` is ``crossing(name, statistic)``:
    when the window so far first breached it (the window's end otherwise)."""
    end = until.isoformat()
    alerts = []
    for name, s in [*result["features"].items(), ("prediction", result["prediction"])]:
        if s["drifted"]:
            kind = "prediction_drift" if name == "prediction" else "feature_drift"
            for statistic in breached(s):
                when = crossing(name, statistic) or end
                alerts.append(_alert(kind, name, statistic, s[statistic], s[_LIMITS[statistic]], when))
    cal = result["calibration"]
    rise = cal["ece"] - (cal["reference_ece"] or 0.0)
    needed = max(cfg.ece, cal["ece_by_chance"])
    if rise >= needed:
        alerts.append(_alert("calibration", None, "ece_rise", round(rise, 6), needed, end))
    for name, s in result["skew"]["features"].items():
        if s["flagged"]:
            alerts.append(_alert("skew", name, "mismatch_rate", s["mismatch_rate"], cfg.skew_mismatch, end))
    lag = result["skew"]["lag_s"]["p50"]
    if cfg.max_lag_s is not None and lag is not None and lag > cfg.max_lag_s:
        alerts.append(_alert("freshness", None, "lag_p50_s", lag, cfg.max_lag_s, end))
    return alerts


def _alert(kind: str, feature: str | None, statistic: str, value: float, threshold: float, time: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "feature": feature,
        "statistic": statistic,
        "value": value,
        "threshold": threshold,
        "time": time,
    }


def _publish(space: Workspace, result: dict[str, Any]) -> None:
    """Alerts as log lines and to ``alerts.jsonl`` (fsync'ed); the result to ``latest.json``."""
    folder = monitoring_dir(space)
    folder.mkdir(parents=True, exist_ok=True)
    checked = datetime.now(UTC).isoformat()
    with alerts_file(space.root).open("a") as fh:
        for alert in result["alerts"]:
            log.warning("alert", extra={"fields": alert | {"reference": result["reference"]}})
            fh.write(json.dumps(alert | {"reference": result["reference"], "checked_at": checked}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    latest = latest_file(space.root)
    tmp = latest.with_name(".latest.json.tmp")
    tmp.write_text(json.dumps(result | {"checked_at": checked}, default=str))
    os.replace(tmp, latest)


def read_alerts(space: Workspace) -> list[dict[str, Any]]:
    path = alerts_file(space.root)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
