from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from feedrec.config import SimulatorConfig
from feedrec.data.simulator import simulate
from feedrec.models.ranking.calibration import Calibrator
from feedrec.offline.ranking_eval import evaluate_rankers, impression_dataset


@pytest.fixture(scope="module")
def feed():
    return simulate(SimulatorConfig(n_users=1000, n_items=2000, days=20, seed=3))


def test_labels_are_clicks_on_the_shown_item_in_the_same_request(feed):
    events = pl.DataFrame(pl.from_arrow(feed.events))
    data = impression_dataset(events, pl.DataFrame(pl.from_arrow(feed.items)))
    assert data.height == events.filter(pl.col("type") == "impression").height
    clicks = events.filter(pl.col("type") == "click").height
    assert data["label"].sum() == clicks  # one click per clicked impression in the simulator
    assert data["like"].sum() == events.filter(pl.col("type") == "like").height
    assert data["hide"].sum() == events.filter(pl.col("type") == "hide").height
    assert ((data["dwell"] > 0) == (data["label"] == 1)).all()  # dwell follows every click, only clicks


def test_a_capped_dataset_is_the_latest_impressions_with_the_same_features(feed):
    """Capping the impressions keeps the latest ones; their features still count every earlier event."""
    events = pl.DataFrame(pl.from_arrow(feed.events))
    items = pl.DataFrame(pl.from_arrow(feed.items))
    full = impression_dataset(events, items)
    capped = impression_dataset(events, items, max_impressions=5000)
    assert capped.height == 5000
    assert capped["timestamp"].min() >= full["timestamp"].sort()[-5000]
    key = ["user_id", "item_id", "timestamp", "position"]
    joined = capped.select([*key, "user_ctr_30d", "item_ctr_1d", "label"]).join(
        full.select([*key, "user_ctr_30d", "item_ctr_1d", "label"]), on=key, suffix="_full"
    )
    assert joined.height == 5000
    for column in ("user_ctr_30d", "item_ctr_1d", "label"):
        assert joined[column].fill_nan(-1.0).equals(joined[f"{column}_full"].fill_nan(-1.0), null_equal=True)


def test_lightgbm_beats_logistic_regression_and_calibrates(feed):
    report = evaluate_rankers(
        pl.DataFrame(pl.from_arrow(feed.events)), pl.DataFrame(pl.from_arrow(feed.items)), threads=1
    )
    m = report.models
    assert m["lightgbm"]["auc"] > m["logistic_regression"]["auc"]
    assert m["lightgbm_calibrated"]["ece"] < 0.02
    assert m["multitask_click_head"]["auc"] > m["logistic_regression"]["auc"] - 0.02
    assert m["multitask_click_head"]["like_auc"] > 0.6 and m["multitask_click_head"]["hide_auc"] > 0.6
    assert report.rows["train"] > report.rows["test"] > 1000


def test_calibration_fixes_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(p.size) < p).astype(int)
    skewed = p**3  # ranks right, probabilities wrong
    from feedrec.metrics import expected_calibration_error

    for method in ("isotonic", "platt"):
        fixed = Calibrator(method).fit(skewed[:25_000], y[:25_000]).transform(skewed[25_000:])
        assert (
            expected_calibration_error(y[25_000:], fixed) < expected_calibration_error(y[25_000:], skewed[25_000:]) / 3
        )
    with pytest.raises(ValueError, match="isotonic or platt"):
        Calibrator("magic")
