"""What each dashboard page shows, read through the services the API uses: the server's
``FeedService`` (its registry, event store, experiment store, held bundles and feed pipeline),
its ``MetricsHistory`` (what ``/metrics`` counts), the experiment analysis of ``feedrec experiment
analyze`` and the monitor's results. Each function returns plain data for a template, with the
Chart.js specs of its charts (``feedrec.dashboard.charts``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from feedrec.dashboard import charts
from feedrec.dashboard.cache import Entry, Refreshing
from feedrec.experiments.analysis import analyze
from feedrec.experiments.definition import METRICS
from feedrec.logs import get_logger
from feedrec.monitoring import read_latest
from feedrec.monitoring.monitor import hourly_engagement, read_alerts
from feedrec.online.service import Feed, FeedService, NoModelError
from feedrec.online.telemetry import MetricsHistory
from feedrec.registry import Manifest, RegistryError

log = get_logger("dashboard")
STAGES = ("feed", "features", "retrieve", "rank", "rerank")


def _now(service: FeedService) -> datetime:
    """The server's clock (the latest event time in a simulated world; the wall otherwise)."""
    at = service.now()
    return datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)


def _promotion(history: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    """The history entry that made ``version`` production (its latest promote or rollback to it)."""
    return next(
        (e for e in reversed(history) if e["version"] == version and e["action"] in ("promote", "rollback")), None
    )


# -- overview --------------------------------------------------------------------------------------
def overview(
    service: FeedService, history: MetricsHistory, cache: Refreshing, *, window_s: float = 60
) -> dict[str, Any]:
    production = service.registry.production()
    promoted = _promotion(service.registry.history(), production.version) if production else None
    live = history.window(window_s)
    now = _now(service)
    hours = 12
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    # The CTR of the last hours from the event store, recomputed at most every few seconds.
    ctr = cache.get(("ctr", start.isoformat()), lambda: hourly_engagement(service.store, start, end), wait_first=True)
    hourly = ctr.value if ctr is not None and ctr.value is not None else []
    latest = read_latest(service.workspace)
    stages = [
        {"stage": s, **live["stages"][s]}
        for s in (*STAGES, *sorted(set(live["stages"]) - set(STAGES)))
        if s in live["stages"]
    ]
    return {
        "now": now.isoformat(),
        "production": None
        if production is None
        else {
            "version": production.version,
            "model": production.model,
            "promoted_at": promoted["time"] if promoted else None,
            "reason": promoted.get("reason") if promoted else None,
        },
        "held": sorted(v for v in service.bundles if production is None or v != production.version),
        "experiments": sorted(e.name for e in service.assigner.state.running()),
        "live": live | {"stages": stages},
        "ctr": hourly,
        "ctr_chart": charts.line(
            [charts.clock(h["start"]) for h in hourly],
            [charts.series("CTR", [h["ctr"] for h in hourly], 0)],
            y="clicks per impression",
            zero=True,
        ),
        "latency_chart": charts.bars(
            [s["stage"] for s in stages],
            [
                charts.bar_series("p50 (ms)", [s["p50_ms"] for s in stages], 0),
                charts.bar_series("p99 (ms)", [s["p99_ms"] for s in stages], 1),
            ],
            y="milliseconds",
        ),
        "monitor": None
        if latest is None
        else {
            "checked_at": latest.get("checked_at"),
            "reference": latest.get("reference"),
            "window": latest.get("window"),
        },
        "alerts": [] if latest is None else latest.get("alerts", []),
    }


# -- models ------------------------------------------------------------------------------------------
def _size(service: FeedService, version: str, sizes: dict[str, int]) -> int:
    """A bundle's model size on disk (bundles never change: measured once)."""
    if version not in sizes:
        folder = service.registry.model_dir(version)
        sizes[version] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return sizes[version]


def _headline(m: Manifest) -> dict[str, float | None]:
    """The figures a list of versions compares: validation (else test) NDCG@10 and recall@10,
    and the served ranker's AUC and calibration error."""
    split = m.metrics.get("valid") or m.metrics.get("test") or {}
    ranker = m.metrics.get("realtime_ranker") or m.metrics.get("ranker") or {}
    return {
        "ndcg@10": split.get("ndcg@10"),
        "recall@10": split.get("recall@10"),
        "auc": ranker.get("auc"),
        "ece": ranker.get("ece"),
    }


def models(service: FeedService, sizes: dict[str, int]) -> dict[str, Any]:
    manifests = service.registry.list()
    history = service.registry.history()
    rows = []
    for m in reversed(manifests):
        rows.append(
            {
                "version": m.version,
                "model": m.model,
                "created_at": m.created_at,
                "window": m.data_window,
                "headline": _headline(m),
                "gate": m.gate,
                "size_mb": _size(service, m.version, sizes) / 2**20,
                "production": m.promoted,
                "held": m.version in service.bundles,
            }
        )
    ordered = list(manifests)
    heads = [_headline(m) for m in ordered]
    return {
        "rows": rows,
        "history": list(reversed(history)),
        "chart": charts.line(
            [m.version for m in ordered],
            [
                charts.series("NDCG@10 (validation)", [h["ndcg@10"] for h in heads], 0),
                charts.series("recall@10 (validation)", [h["recall@10"] for h in heads], 2),
                charts.series("ranker AUC", [h["auc"] for h in heads], 3, dashed=True),
            ],
            y="metric",
        ),
    }


def model(service: FeedService, version: str, sizes: dict[str, int]) -> dict[str, Any]:
    """One version's manifest, gate decision and history (raises RegistryError when unknown)."""
    m = service.registry.get(version)
    production = service.registry.production()
    history = [e for e in service.registry.history() if e["version"] == version]
    return {
        "manifest": m,
        "production": production is not None and production.version == version,
        "size_mb": _size(service, version, sizes) / 2**20,
        "history": list(reversed(history)),
        "has_report": service.registry.artifact(version, "report.html") is not None,
        "headline": _headline(m),
    }


# -- experiments -------------------------------------------------------------------------------------
def _analysis(service: FeedService, name: str, cache: Refreshing) -> Entry | None:
    """The experiment's latest analysis (``feedrec experiment analyze``), computed off the request
    path (with the CLI's defaults: an hour's attribution window, a week before for CUPED, a look
    per hour); the page says when it was computed and refreshes while it is being computed."""
    return cache.get(("analysis", name), lambda: analyze(service.store, service.experiments, name))


def experiments(service: FeedService, cache: Refreshing) -> dict[str, Any]:
    state = service.experiments.load()
    rows = []
    for e in sorted(state.experiments.values(), key=lambda e: (e.status != "running", e.created_at)):
        entry = _analysis(service, e.name, cache)
        result = entry.value if entry is not None and entry.value is not None else None
        primary = (result or {}).get("metrics", {}).get(e.metric, {})
        rows.append(
            {
                "experiment": e,
                "exposures": {a: r.get("exposures") for a, r in (result or {}).get("arms", {}).items()},
                "primary": primary,
                "srm": (result or {}).get("srm"),
                "decision": primary.get("sequential", {}).get("decision"),
                "computed_at": entry.computed_at if entry is not None else None,
            }
        )
    return {"rows": rows, "holdout": state.holdout}


def experiment(service: FeedService, name: str, cache: Refreshing) -> dict[str, Any]:
    e = service.experiments.get(name)  # ExperimentError (naming the experiments there are) when unknown
    entry = _analysis(service, name, cache)
    result = entry.value if entry is not None else None
    metric_charts = []
    for metric, m in ((result or {}).get("metrics") or {}).items():
        looks = m.get("looks") or []
        if not looks:
            continue
        labels = [charts.clock(lk["time"]) for lk in looks]
        metric_charts.append(
            {
                "metric": metric,
                "description": METRICS.get(metric, ("", None, True))[0],
                "chart": charts.line(
                    labels,
                    [
                        *charts.band("95 % CI", [lk["ci_low"] for lk in looks], [lk["ci_high"] for lk in looks], 0),
                        charts.series("lift (treatment - control)", [lk["lift"] for lk in looks], 0),
                        charts.series("no effect", [0.0] * len(looks), 8, dashed=True, points=False),
                    ],
                    y=f"{metric} lift",
                ),
            }
        )
    return {
        "experiment": e,
        "result": result,
        "entry": entry,
        "pending": cache.pending(("analysis", name)),
        "charts": metric_charts,
    }


# -- monitoring --------------------------------------------------------------------------------------
def monitoring(service: FeedService, *, shown: int = 8) -> dict[str, Any]:
    latest = read_latest(service.workspace)
    alerts = list(reversed(read_alerts(service.space)))[:200]
    if latest is None:
        return {"latest": None, "alerts": alerts}
    features = latest.get("features", {})
    # The features to plot: those that drifted first, then the largest PSI.
    ranked = sorted(features, key=lambda n: (not features[n].get("drifted"), -float(features[n].get("psi", 0.0))))
    timeline = latest.get("timeline", [])
    labels = [charts.clock(p["start"]) for p in timeline]
    drift_charts = []
    for name in ranked[:shown]:
        threshold = features[name].get("threshold")
        series = [
            charts.series("PSI", [p.get(name, {}).get("psi") for p in timeline], 0),
            charts.series("JS distance", [p.get(name, {}).get("js") for p in timeline], 2),
            charts.series("PSI threshold", [threshold] * len(timeline), 1, dashed=True, points=False),
        ]
        if "wasserstein" in features[name]:  # numeric features
            limit = features[name].get("wasserstein_threshold")
            series.append(
                charts.series("normed Wasserstein", [p.get(name, {}).get("wasserstein") for p in timeline], 3)
            )
            if limit is not None:  # it alerts only when monitor.wasserstein is set
                series.append(
                    charts.series("Wasserstein threshold", [limit] * len(timeline), 4, dashed=True, points=False)
                )
        if "mean_shift" in features[name]:  # numeric, served just before the window
            shifts = [p.get(name, {}).get("mean_shift") for p in timeline]  # each bucket from the one before
            series.append(charts.series("mean shift", shifts, 5))
            if "mean_shift_threshold" in features[name]:
                limit = features[name]["mean_shift_threshold"]
                series.append(
                    charts.series("mean shift threshold", [limit] * len(timeline), 6, dashed=True, points=False)
                )
        drift_charts.append(
            {
                "feature": name,
                "stats": features[name],
                "chart": charts.line(
                    labels,
                    series,
                    y="divergence from the reference",
                    zero=True,
                ),
            }
        )
    cal = latest.get("calibration", {})
    curve = cal.get("curve") or {}
    pairs = list(zip(curve.get("predicted", []), curve.get("observed", []), strict=False))
    top = max([1e-3, *(max(a, b) for a, b in pairs)]) if pairs else 1.0
    online = latest.get("online", {}).get("hourly", [])
    return {
        "latest": latest,
        "alerts": alerts,
        "features": [(n, features[n]) for n in ranked],
        "drift_charts": drift_charts,
        "calibration_chart": charts.xy(
            [
                charts.points("logged predictions vs clicks", pairs, 0),
                charts.points("perfect calibration", [(0.0, 0.0), (top, top)], 8, dashed=True),
            ],
            x="mean predicted click probability",
            y="observed click rate",
            x_range=(0.0, top),
        ),
        "ece_chart": charts.line(
            labels,
            [
                charts.series("ECE", [p.get("ece") for p in timeline], 0),
                charts.series(
                    "reference ECE", [cal.get("reference_ece")] * len(timeline), 8, dashed=True, points=False
                ),
            ],
            y="expected calibration error",
            zero=True,
        ),
        "online_chart": charts.line(
            [charts.clock(h["start"]) for h in online],
            [charts.series("CTR", [h.get("ctr") for h in online], 0)],
            y="clicks per impression",
            zero=True,
        ),
        "skew": latest.get("skew", {}),
    }


# -- feed explorer -----------------------------------------------------------------------------------
def _feed(feed: Feed) -> dict[str, Any]:
    return {
        "version": feed.model_version,
        "experiment": feed.experiment,
        "arm": feed.arm,
        "fallback": feed.fallback_reason,
        "latency_ms": feed.latency_ms,
        "stages": feed.stages_ms,
        "items": [vars(i) for i in feed.items],
    }


def explorer(
    service: FeedService, user_id: str | None, compare: str | None, k: int, *, history_hours: float = 48
) -> dict[str, Any]:
    versions = [m.version for m in reversed(service.registry.list())]
    out: dict[str, Any] = {"user_id": user_id, "compare": compare, "k": k, "versions": versions}
    model = service.bundle.model if service.bundle is not None else None
    out["suggestions"] = [str(u) for u in model.user_ids_[:50]] if model is not None else []
    if not user_id:
        return out
    now = _now(service)
    out["now"] = now.isoformat()
    recent = service.store.scan(
        columns=["timestamp", "type", "item_id", "value", "position", "request_id"],
        users=[user_id],
        start=now - timedelta(hours=history_hours),
        types=["click", "like", "share", "hide", "dwell"],
    ).to_pylist()
    out["history"] = list(reversed(recent))[:50]
    out["history_hours"] = history_hours
    try:
        served = service.preview(user_id, k)
    except NoModelError as exc:
        out["error"] = str(exc)
        return out
    feeds = [_feed(served)]
    if compare and compare != served.model_version:
        try:
            feeds.append(_feed(service.preview(user_id, k, version=compare)))
        except RegistryError as exc:  # unknown, or built for other feature definitions (IncompatibleBundle)
            out["compare_error"] = str(exc)
        except Exception as exc:  # a bundle that cannot load: say so; the served feed is still shown
            out["compare_error"] = f"bundle {compare} could not be loaded ({type(exc).__name__}); see the server log"
            log.exception("feed explorer: bundle %s could not be loaded", compare)
    shared = set.intersection(*({i["item_id"] for i in f["items"]} for f in feeds)) if len(feeds) > 1 else set()
    for f in feeds:
        for i in f["items"]:
            i["in_both"] = i["item_id"] in shared
    out["feeds"] = feeds
    names = sorted(
        {s for f in feeds for s in f["stages"]},
        key=lambda s: (s not in STAGES, STAGES.index(s) if s in STAGES else 0, s),
    )
    out["stage_chart"] = charts.bars(
        names,
        [charts.bar_series(f["version"], [f["stages"].get(s) for s in names], n) for n, f in enumerate(feeds)],
        y="milliseconds",
        horizontal=True,
    )
    return out
