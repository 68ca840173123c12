"""The reference profile's parts, and the feature log's bound and durability."""

from __future__ import annotations

import time

import numpy as np
import pytest

from feedrec.metrics import expected_calibration_error
from feedrec.monitoring.featurelog import FeatureLog, read_feature_log
from feedrec.monitoring.profile import build_profile, numeric_profile

pytestmark = pytest.mark.unit


def test_numeric_profile_bins_samples_and_missing_share():
    rng = np.random.default_rng(0)
    values = np.append(rng.exponential(size=9000), [np.nan] * 1000)
    p = numeric_profile(values, sample=500)
    assert p["rows"] == 10_000 and p["missing"] == pytest.approx(0.1)
    assert len(p["cuts"]) == 9 and sum(p["counts"]) == 10_000 and p["counts"][-1] == 1000
    assert len(p["sample"]) == 500 and p["sample"] == sorted(p["sample"])
    assert p["mean"] == pytest.approx(np.nanmean(values))


def test_build_profile_has_categories_predictions_and_calibration():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0, 0.5, 4000)
    y = (rng.random(4000) < pred).astype(float)
    profile = build_profile({"x": rng.normal(size=100)}, {"surface": ["home"] * 3 + ["explore"]}, pred, y)
    assert profile["features"]["surface"]["shares"] == {"explore": 0.25, "home": 0.75}
    assert profile["calibration"]["ece"] == pytest.approx(expected_calibration_error(y, pred))
    assert profile["calibration"]["ctr"] == pytest.approx(y.mean())
    assert sum(profile["calibration"]["curve"]["count"]) == 4000


def _add(log: FeatureLog, n: int) -> None:
    log.add(
        request_id=f"r{n}",
        time=1_700_000_000.0 + n,
        user_id="u1",
        version="v0001",
        surface="home",
        items=[f"i{j}" for j in range(10)],
        slots=list(range(10)),
        names=["a", "position"],
        matrix=np.ones((10, 2), np.float32),
        predict=lambda x: x[:, 0] * 0.5,
    )


def test_the_log_is_bounded_by_size_oldest_files_first(tmp_path):
    log = FeatureLog(tmp_path, max_bytes=1, flush_interval_s=3600)  # every flush leaves only the newest file
    for n in range(3):
        _add(log, n)
        log.flush()
    log.close()
    files = sorted(tmp_path.glob("part-*.parquet"))
    assert len(files) == 1 and files[0].name.endswith("000003.parquet")
    rows = read_feature_log(tmp_path)
    assert rows["request_id"].unique().to_list() == ["r2"] and rows["prediction"].to_list() == [0.5] * 10


def test_close_writes_what_is_queued_and_the_background_thread_flushes(tmp_path):
    log = FeatureLog(tmp_path, flush_interval_s=0.05)
    _add(log, 0)
    for _ in range(100):
        if list(tmp_path.glob("part-*.parquet")):
            break
        time.sleep(0.05)
    _add(log, 1)
    log.close()
    rows = read_feature_log(tmp_path)
    assert sorted(rows["request_id"].unique().to_list()) == ["r0", "r1"]
    assert rows["position"].to_list()[:10] == list(range(10))  # the slot, not the ranking position


def test_null_psi_is_the_largest_block_against_the_rest_of_the_baseline():
    from datetime import UTC, datetime, timedelta

    from feedrec.config import MonitorConfig
    from feedrec.metrics.drift import numeric_histogram, psi
    from feedrec.monitoring.monitor import _null

    rng = np.random.default_rng(3)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    hours = np.repeat(np.arange(4), 500)
    x = rng.normal(size=2000) + (hours == 2) * 1.5  # the third hour strays
    rows = _day_of_rows({"item_x": x}, hours, start)
    profile = build_profile({"item_x": x}, {}, np.zeros(1), np.zeros(1))
    cfg = MonitorConfig(min_rows=100, bucket_hours=1)
    null = _null(rows, profile, ["item_x"], start, start + timedelta(hours=4), timedelta(hours=1), cfg)["psi"]
    cuts = np.asarray(profile["features"]["item_x"]["cuts"])
    whole = numeric_histogram(x, cuts)
    by_hand = max(
        psi(whole - numeric_histogram(x[hours == h], cuts), numeric_histogram(x[hours == h], cuts)) for h in range(4)
    )
    assert null["item_x"] == pytest.approx(by_hand, abs=1e-6) and null["item_x"] > 0.5
    # The Wasserstein null: the normed distance of an hour's values from the other hours'.
    from feedrec.metrics.drift import normed_wasserstein

    cfg = MonitorConfig(min_rows=100, bucket_hours=1, wasserstein=0.1)
    every = _null(rows, profile, ["item_x"], start, start + timedelta(hours=4), timedelta(hours=1), cfg)
    by_hand_w = max(normed_wasserstein(x[hours != h], x[hours == h]) for h in range(4))
    assert every["wasserstein"]["item_x"] == pytest.approx(by_hand_w, abs=1e-6) and by_hand_w > 0.5


def test_with_a_day_of_baseline_the_null_is_the_windows_own_hours_not_the_days_most_unusual():
    """A counter whose nights differ from its days: a window that starts at noon is judged
    against how far the hours around noon a day earlier (10 am to 2 pm starts, those inside the
    baseline) and the hours just before it stray from the day, not against the night; a trend
    still raises the null (the recent blocks)."""
    from datetime import UTC, datetime, timedelta

    from feedrec.config import MonitorConfig
    from feedrec.metrics.drift import numeric_histogram, psi
    from feedrec.monitoring.monitor import _null

    rng = np.random.default_rng(5)
    start = datetime(2024, 1, 1, 12, tzinfo=UTC)  # the baseline: noon to noon; the window starts at noon
    hours = np.repeat(np.arange(24), 200)
    clock = (hours + 12) % 24
    night = rng.normal(size=hours.size) + ((clock >= 0) & (clock < 6)) * 2.0
    trend = rng.normal(size=hours.size) + hours / 8  # rises all day
    rows = _day_of_rows({"item_night": night, "item_trend": trend}, hours, start)
    profile = build_profile({"item_night": night, "item_trend": trend}, {}, np.zeros(1), np.zeros(1))
    cfg = MonitorConfig(min_rows=100, bucket_hours=1)
    end, window = start + timedelta(hours=24), timedelta(hours=2)
    null = _null(rows, profile, ["item_night", "item_trend"], start, end, window, cfg)["psi"]

    def strays(x: np.ndarray, name: str, first_hour: int) -> float:
        cuts = np.asarray(profile["features"][name]["cuts"])
        block = numeric_histogram(x[(hours >= first_hour) & (hours < first_hour + 2)], cuts)
        return psi(numeric_histogram(x, cuts) - block, block)

    local = (0, 1, 2, 21, 22)  # blocks from noon, 1 pm and 2 pm a day earlier; from 9 am and 10 am
    by_hand = max(strays(night, "item_night", h) for h in local)
    night_block = max(strays(night, "item_night", h) for h in range(12, 18, 2))
    assert null["item_night"] == pytest.approx(by_hand, abs=1e-6)
    assert night_block > 2.0 and null["item_night"] < 0.25 * night_block  # the largest block: the old null
    assert (
        null["item_trend"] == pytest.approx(max(strays(trend, "item_trend", h) for h in local), abs=1e-6)
        and null["item_trend"] > 0.5
    )  # the latest block and the first one stray most: the trend


def _day_of_rows(values: dict[str, np.ndarray], hours: np.ndarray, start):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    import polars as pl

    return pl.DataFrame(
        {
            "request_id": [f"r{n}" for n in range(hours.size)],
            "time": [start + timedelta(hours=int(h), seconds=n % 3000) for n, h in enumerate(hours)],
            **values,
        }
    )


def test_the_days_blocks_start_every_bucket_so_a_stray_span_between_two_disjoint_blocks_counts():
    """A 6-hour window over a day whose hours 3 to 9 stray: disjoint 6-hour blocks split that span
    in two and halve it; the null takes the largest over spans starting every hour (a 7-day
    counter's alone; an item counter's the smaller of that and its local spans')."""
    from datetime import UTC, datetime, timedelta

    from feedrec.config import MonitorConfig
    from feedrec.metrics.drift import numeric_histogram, psi
    from feedrec.monitoring.monitor import _null

    rng = np.random.default_rng(11)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    hours = np.repeat(np.arange(24), 150)
    x = rng.normal(size=hours.size) + ((hours >= 3) & (hours < 9)) * 1.5
    rows = _day_of_rows({"item_x": x, "creator_clicks_7d": x}, hours, start)
    profile = build_profile({"item_x": x, "creator_clicks_7d": x}, {}, np.zeros(1), np.zeros(1))
    cfg = MonitorConfig(min_rows=100, bucket_hours=1)
    end = start + timedelta(hours=24)
    null = _null(rows, profile, ["item_x", "creator_clicks_7d"], start, end, timedelta(hours=6), cfg)["psi"]
    cuts = np.asarray(profile["features"]["item_x"]["cuts"])
    whole = numeric_histogram(x, cuts)

    def strays(first: int) -> float:
        block = numeric_histogram(x[(hours >= first) & (hours < first + 6)], cuts)
        return psi(whole - block, block)

    sliding = max(strays(h) for h in range(19))
    disjoint = max(strays(h) for h in range(0, 24, 6))
    # The window starts at midnight: its hours a day earlier start the spans at 0-2 (those
    # inside the baseline), and the two spans just before it start at 17 and 18.
    local = max(strays(h) for h in (0, 1, 2, 17, 18))
    assert sliding == pytest.approx(strays(3), abs=1e-9) and sliding > 2 * disjoint
    assert null["creator_clicks_7d"] == pytest.approx(sliding, abs=1e-6)
    assert null["item_x"] == pytest.approx(min(sliding, local), abs=1e-6)


def test_a_feature_counting_a_week_takes_the_days_null_not_its_hours():
    """The same night-and-day series under an item counter's name and a 7-day creator counter's:
    the first is judged against its own hours a day earlier (the smaller null), the second against
    the whole day's largest span (monitor.LONG_WINDOW)."""
    from datetime import UTC, datetime, timedelta

    from feedrec.config import MonitorConfig
    from feedrec.monitoring.monitor import LONG_WINDOW, _null

    assert {"creator_clicks_7d", "creator_ctr_7d", "user_topic_affinity_30d"} <= LONG_WINDOW
    assert not {"item_clicks_1h", "item_ctr_1d", "item_click_velocity"} & LONG_WINDOW
    rng = np.random.default_rng(5)
    start = datetime(2024, 1, 1, 12, tzinfo=UTC)
    hours = np.repeat(np.arange(24), 200)
    clock = (hours + 12) % 24
    night = rng.normal(size=hours.size) + ((clock >= 0) & (clock < 6)) * 2.0
    rows = _day_of_rows({"item_clicks_1h": night, "creator_clicks_7d": night}, hours, start)
    profile = build_profile({"item_clicks_1h": night, "creator_clicks_7d": night}, {}, np.zeros(1), np.zeros(1))
    cfg = MonitorConfig(min_rows=100, bucket_hours=1)
    names = ["item_clicks_1h", "creator_clicks_7d"]
    null = _null(rows, profile, names, start, start + timedelta(hours=24), timedelta(hours=2), cfg)["psi"]
    assert null["creator_clicks_7d"] > 2.0 and null["item_clicks_1h"] < 0.25 * null["creator_clicks_7d"]


def test_each_row_carries_how_fresh_its_features_were(tmp_path):
    from datetime import UTC, datetime

    log = FeatureLog(tmp_path, flush_interval_s=3600)
    _add(log, 0)  # a store that could not say
    log.add(request_id="r1", time=1_700_000_100.25, user_id="u1", version="v0001", surface="home", items=["i1"],
            slots=[0], names=["a"], matrix=np.ones((1, 1), np.float32), predict=lambda x: x[:, 0],
            as_of=1_700_000_040.5)  # fmt: skip
    log.close()
    rows = read_feature_log(tmp_path)
    fresh = rows.filter(rows["request_id"] == "r1")
    assert fresh["as_of"].to_list() == [datetime.fromtimestamp(1_700_000_040.5, UTC)]
    assert fresh["time"].to_list() == [datetime.fromtimestamp(1_700_000_100.25, UTC)]
    assert rows.filter(rows["request_id"] == "r0")["as_of"].null_count() == 10
