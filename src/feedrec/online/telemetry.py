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

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty ``path`` and point prometheus_client at it (before any worker starts)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)


class MonitorGauges:
    """The latest ``feedrec monitor`` result (``monitoring/latest.json``) as gauges, read when
    ``/metrics`` is scraped: per-feature PSI and JS, prediction PSI, ECE, skew mismatch, online
    CTR, and the alerts of that run by kind. Nothing when the monitor has not run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            result = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        labels = ["reference"]
        ref = [str(result.get("reference"))]
        psi = GaugeMetricFamily(
            "feedrec_drift_psi", "PSI of each feature vs the reference", labels=[*labels, "feature"]
        )
        js = GaugeMetricFamily(
            "feedrec_drift_js", "Jensen-Shannon distance vs the reference", labels=[*labels, "feature"]
        )
        for name, s in result.get("features", {}).items():
            psi.add_metric([*ref, name], float(s["psi"]))
            js.add_metric([*ref, name], float(s["js"]))
        psi.add_metric([*ref, "prediction"], float(result["prediction"]["psi"]))
        yield psi
        yield js
        cal = GaugeMetricFamily("feedrec_calibration_ece", "ECE of logged predictions vs clicks", labels=labels)
        cal.add_metric(ref, float(result["calibration"]["ece"]))
        yield cal
        skew = GaugeMetricFamily(
            "feedrec_skew_mismatch_rate", "Served vs recomputed features", labels=[*labels, "feature"]
        )
        for name, s in result.get("skew", {}).get("features", {}).items():
            skew.add_metric([*ref, name], float(s["mismatch_rate"]))
        yield skew
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
        for kind in ("feature_drift", "prediction_drift", "calibration", "skew"):
            alerts.add_metric([*ref, kind], float(kinds.get(kind, 0)))
        yield alerts


class Metrics:
    def __init__(self, monitor_file: Path | None = None) -> None:
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
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0),
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
        if monitor_file is not None:
            self.registry.register(MonitorGauges(monitor_file))

    def set_model(self, version: str | None) -> None:
        # Not Gauge.clear(): in multiprocess mode a cleared child's last value stays in the file.
        if self._version is not None and self._version != version:
            self.model.labels(version=self._version).set(0)
        if version:
            self.model.labels(version=version).set(1)
        self._version = version

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
