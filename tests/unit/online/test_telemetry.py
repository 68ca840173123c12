"""The dashboard's rates and latency quantiles from the server's own counters: Prometheus's
histogram_quantile semantics, checked against numpy on data whose quantile is known, and
MetricsHistory's window over real prometheus_client metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedrec.online.telemetry import Metrics, MetricsHistory, histogram_quantile, read_sample


def _cumulative(values: np.ndarray, bounds: list[float]) -> dict[float, float]:
    return {b: float((values <= b).sum()) for b in [*bounds, math.inf]}


def test_the_quantile_interpolates_within_its_bucket_as_prometheus_does():
    # 10 observations in (0, 1], 10 in (1, 2]: the median is the first bucket's top, p75 halfway up the second.
    buckets = {1.0: 10.0, 2.0: 20.0, math.inf: 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.5)  # the first bucket starts at 0
    # A rank in the +Inf bucket: the highest finite bound (nothing is known above it).
    assert histogram_quantile(0.99, {1.0: 5.0, 2.0: 6.0, math.inf: 10.0}) == pytest.approx(2.0)
    assert histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 0.99), st.integers(1, 50))
def test_on_uniform_data_the_estimate_is_numpys_quantile(q: float, width: int):
    # Uniform observations fill each bucket evenly: linear interpolation is then exact, up to the
    # discreteness of the sample.
    values = (np.arange(20_000) + 0.5) / 20_000 * width
    bounds = [float(b) for b in range(1, width + 1)]
    assert histogram_quantile(q, _cumulative(values, bounds)) == pytest.approx(np.quantile(values, q), abs=width * 1e-3)


def test_the_history_gives_rates_and_quantiles_over_its_window():
    metrics = Metrics()
    history = MetricsHistory(metrics, every_s=60)
    start = history.sample()
    for ms in range(1, 101):  # feeds of 1..100 ms
        metrics.requests.labels(route="/v1/feed", status="200").inc()
        metrics.latency.labels(stage="feed").observe(ms / 1e3)
    metrics.requests.labels(route="/v1/feed", status="503").inc()
    metrics.requests.labels(route="/v1/events", status="200").inc(3)
    metrics.fallbacks.inc(5)
    window = history.window(3600)
    span = window["seconds"]
    assert span > 0 and span == pytest.approx(read_sample(metrics).at - start.at, abs=0.5)
    assert window["requests_per_s"] * span == pytest.approx(104)  # 100 + 1 feeds, 3 event posts
    assert window["feeds_per_s"] * span == pytest.approx(101)
    assert window["errors_per_s"] * span == pytest.approx(1)
    assert window["fallback_share"] == pytest.approx(5 / 101)
    feed = window["stages"]["feed"]
    assert feed["count"] == 100
    # The median of 1..100 ms lies in the (40, 50] ms bucket; the estimate stays inside it.
    assert 40 <= feed["p50_ms"] <= 50 and abs(feed["p50_ms"] - 50.5) < 10
    assert 75 <= feed["p99_ms"] <= 100


def test_the_window_only_counts_what_happened_inside_it():
    metrics = Metrics()
    history = MetricsHistory(metrics, every_s=60)
    for _ in range(50):  # before the readings the window starts from
        metrics.latency.labels(stage="rank").observe(0.5)
    history.sample()
    for _ in range(10):
        metrics.latency.labels(stage="rank").observe(0.001)
    rank = history.window(3600)["stages"]["rank"]
    assert rank["count"] == 10 and rank["p99_ms"] <= 1.0
