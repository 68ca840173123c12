"""Prometheus metrics of the server, correct across worker processes.

With several workers (``feedrec serve --workers N``) each process counts its own requests, so
``/metrics`` answered by one of them would show only its share. The server then runs
prometheus_client in multiprocess mode: every worker writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` (set by ``feedrec serve`` before the workers start, emptied at each
start), and ``/metrics`` sums them (counters and histograms) or lists them per live worker (the
model gauge). A single process (tests, ``--workers 1`` without the variable) keeps an ordinary
in-process registry.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from feedrec.monitoring import read_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty ``path`` and point prometheus_client at it (before any worker starts)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)


class MonitorGauges:
    """The latest ``feedrec monitor`` result (``monitoring/latest.json``) as gauges, read when
    ``/metrics`` is scraped: per-feature PSI, JS and normed Wasserstein distance, prediction PSI,
    ECE, skew mismatch, online CTR, and the alerts of that run by kind. Nothing when the monitor
    has not run."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def collect(self) -> Iterator[GaugeMetricFamily]:
        result = read_latest(self.workspace)
        if result is None:
            return
        labels = ["reference"]
        ref = [str(result.get("reference"))]
        psi = GaugeMetricFamily(
            "feedrec_drift_psi", "PSI of each feature vs the reference", labels=[*labels, "feature"]
        )
        js = GaugeMetricFamily(
            "feedrec_drift_js", "Jensen-Shannon distance vs the reference", labels=[*labels, "feature"]
        )
        wasserstein = GaugeMetricFamily(
            "feedrec_drift_wasserstein",
            "Normed Wasserstein distance vs the reference (numeric features)",
            labels=[*labels, "feature"],
        )
        shift = GaugeMetricFamily(
            "feedrec_drift_mean_shift",
            "Standardized mean difference from the span just before the window (numeric features)",
            labels=[*labels, "feature"],
        )
        for name, s in [*result.get("features", {}).items(), ("prediction", result["prediction"])]:
            psi.add_metric([*ref, name], float(s["psi"]))
            if "wasserstein" in s:
                wasserstein.add_metric([*ref, name], float(s["wasserstein"]))
            if "mean_shift" in s:
                shift.add_metric([*ref, name], float(s["mean_shift"]))
            if name != "prediction":
                js.add_metric([*ref, name], float(s["js"]))
        yield psi
        yield js
        yield wasserstein
        yield shift
        cal = GaugeMetricFamily("feedrec_calibration_ece", "ECE of logged predictions vs clicks", labels=labels)
        cal.add_metric(ref, float(result["calibration"]["ece"]))
        yield cal
        skew = GaugeMetricFamily(
            "feedrec_skew_mismatch_rate", "Served vs recomputed features", labels=[*labels, "feature"]
        )
        for name, s in result.get("skew", {}).get("features", {}).items():
            skew.add_metric([*ref, name], float(s["mismatch_rate"]))
        yield skew
        lag = result.get("skew", {}).get("lag_s", {}).get("p50")
        if lag is not None:
            fresh = GaugeMetricFamily(
                "feedrec_feature_lag_seconds", "Median lag of the online store behind the requests", labels=labels
            )
            fresh.add_metric(ref, float(lag))
            yield fresh
        ctr = result.get("online", {}).get("ctr")
        if ctr is not None:
            online = GaugeMetricFamily("feedrec_online_ctr", "Online CTR in the monitored window", labels=labels)
            online.add_metric(ref, float(ctr))
            yield online
        alerts = GaugeMetricFamily(
            "feedrec_monitor_alerts", "Alerts of the latest monitor run", labels=[*labels, "kind"]
        )
        kinds: dict[str, int] = {}
        for alert in result.get("alerts", []):
            kinds[alert["kind"]] = kinds.get(alert["kind"], 0) + 1
        for kind in ("feature_drift", "prediction_drift", "calibration", "skew", "freshness"):
            alerts.add_metric([*ref, kind], float(kinds.get(kind, 0)))
        yield alerts


class Metrics:
    def __init__(self, workspace: Path | None = None) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        # In multiprocess mode values live in the shared files and the registry only collects them;
        # otherwise the metrics register in it.
        own = None if self.multiprocess else self.registry
        if self.multiprocess:
            MultiProcessCollector(self.registry)
        self.requests = Counter("feedrec_requests", "HTTP requests", ["route", "status"], registry=own)
        self.latency = Histogram(
            "feedrec_latency_seconds",
            "Latency by stage",
            ["stage"],
            registry=own,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.0075,
                0.01,
                0.015,
                0.02,
                0.03,
                0.04,
                0.05,
                0.075,
                0.1,
                0.15,
                0.2,
                0.25,
                0.5,
                1.0,
            ),
        )
        self.fallbacks = Counter("feedrec_fallbacks", "Feeds served from the fallback path", registry=own)
        self.events = Counter("feedrec_events", "Events received", ["outcome"], registry=own)
        self.model = Gauge(
            "feedrec_model_info",
            "The bundle being served (1 per worker)",
            ["version"],
            registry=own,
            multiprocess_mode="liveall",
        )
        self.ingest_queue = Gauge(
            "feedrec_ingest_queue", "Event batches waiting to be stored", registry=own, multiprocess_mode="livesum"
        )
        self._version: str | None = None
        if workspace is not None:  # the latest monitor verdict of this workspace, as gauges
            self.registry.register(MonitorGauges(workspace))

    def set_model(self, version: str | None) -> None:
        # Not Gauge.clear(): in multiprocess mode a cleared child's last value stays in the file.
        if self._version is not None and self._version != version:
            self.model.labels(version=self._version).set(0)
        if version:
            self.model.labels(version=version).set(1)
        self._version = version

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Sample:
    """One reading of the cumulative counters: when (monotonic s), requests by (route, status),
    feed latency buckets by stage (upper bound -> cumulative count), fallbacks."""

    at: float
    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    fallbacks: float = 0.0


def read_sample(metrics: Metrics, at: float | None = None) -> Sample:
    """The counters as ``/metrics`` would show them (summed over workers in multiprocess mode)."""
    sample = Sample(time.monotonic() if at is None else at)
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "feedrec_requests_total":
                key = (s.labels["route"], s.labels["status"])
                sample.requests[key] = sample.requests.get(key, 0.0) + s.value
            elif s.name == "feedrec_latency_seconds_bucket":
                stage = sample.buckets.setdefault(s.labels["stage"], {})
                le = float(s.labels["le"])
                stage[le] = stage.get(le, 0.0) + s.value
            elif s.name == "feedrec_fallbacks_total":
                sample.fallbacks += s.value
    return sample


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a histogram (upper bound -> cumulative count), as Prometheus's
    ``histogram_quantile`` computes it: linear within the bucket the rank falls in (from 0 for
    the first); the highest finite bound when it falls in the +Inf bucket; None when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


class MetricsHistory:
    """Readings of the server's counters every ``every_s`` seconds (the last ``keep_s``), so the
    dashboard can show rates and latency quantiles over a recent window, as Prometheus's
    ``rate()`` and ``histogram_quantile()`` over a range would: from the difference between the
    newest reading and the oldest one inside the window. Runs on its own daemon thread."""

    def __init__(self, metrics: Metrics, *, every_s: float = 2.0, keep_s: float = 900.0) -> None:
        self.metrics = metrics
        self.every_s = every_s
        self.started = time.monotonic()
        self._samples: deque[Sample] = deque(maxlen=max(2, int(keep_s / every_s) + 1))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="feedrec-metrics-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> Sample:
        reading = read_sample(self.metrics)
        with self._lock:
            self._samples.append(reading)
        return reading

    def close(self) -> None:
        self._stop.set()

    def window(self, seconds: float) -> dict[str, Any]:
        """Rates and latency over the last ``seconds`` (from a fresh reading): requests, feeds,
        errors (5xx) and fallbacks per second, and each stage's p50/p99 (milliseconds)."""
        now = read_sample(self.metrics)  # not kept: the history stays one reading per every_s
        with self._lock:
            inside = [s for s in self._samples if s.at >= now.at - seconds]
        # The oldest reading in the window; before the first one, the server's start (all zeros).
        first = inside[0] if inside else Sample(self.started)
        span = max(now.at - first.at, 1e-9)

        def delta(pick: Any) -> float:
            return float(pick(now) - pick(first))

        def requests(match: Any) -> float:
            return delta(lambda s: sum(v for k, v in s.requests.items() if match(*k)))

        feeds = requests(lambda route, status: route == "/v1/feed")
        stages = {}
        for stage, buckets in now.buckets.items():
            before = first.buckets.get(stage, {})
            diff = {le: count - before.get(le, 0.0) for le, count in buckets.items()}
            p50, p99 = histogram_quantile(0.5, diff), histogram_quantile(0.99, diff)
            stages[stage] = {
                "count": diff.get(math.inf, 0.0),
                "p50_ms": None if p50 is None else p50 * 1e3,
                "p99_ms": None if p99 is None else p99 * 1e3,
            }
        fallbacks = delta(lambda s: s.fallbacks)
        return {
            "seconds": span,
            "requests_per_s": requests(lambda route, status: True) / span,
            "feeds_per_s": feeds / span,
            "errors_per_s": requests(lambda route, status: status.startswith("5")) / span,
            "fallbacks_per_s": fallbacks / span,
            "fallback_share": fallbacks / feeds if feeds else None,
            "stages": stages,
        }
