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
    # Hides are rare (about a hundred in the test slice): better than chance, by a margin. The hide
    # head's AUC here moves with the network's initialization: over six seeds 0.59 on average,
    # standard deviation 0.024, the lowest 0.540 (measured with 43 features and with 44).
    assert m["multitask_click_head"]["like_auc"] > 0.6 and m["multitask_click_head"]["hide_auc"] > 0.52
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


def test_the_served_ranker_is_judged_on_its_own_candidates_against_a_naive_count():
    """AUC of the ranking stage over (user, candidate) pairs, labelled by the held-out targets,
    equals a slow pairwise count; ECE only for probability scores."""
    from feedrec.models import model_for_tests
    from feedrec.offline.protocol import prepare
    from feedrec.offline.ranking_eval import served_ranker_metrics
    from tests.conftest import make_interactions

    data_in = make_interactions(n_users=40, n_items=60, per_user=10)
    frame = pl.DataFrame(
        {
            "user_id": data_in.users.ids[data_in.user_idx],
            "item_id": data_in.items.ids[data_in.item_idx],
            "timestamp": pl.Series(data_in.timestamps * 1_000_000).cast(pl.Datetime("us", "UTC")),
        }
    )
    data = prepare(frame, protocol="user", test_ratio=0.3)
    model = model_for_tests("feedrec").fit(data.train)
    got = served_ranker_metrics(model, data, block=7)
    pipeline = model.serving()
    c = pipeline.retrieve(data.test_users, 10)
    s = pipeline.rank(data.test_users, c)
    ids = model.item_ids_[c.item]
    targets = [set(data.train.items.ids[t]) for t in data.targets]
    y = np.array([ids[j] in targets[c.row[j]] for j in range(ids.size)])
    pos, neg = s[y], s[~y]
    naive = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert got["auc"] == pytest.approx(naive, abs=1e-6) and got["candidates"] == ids.size
    assert ("ece" in got) == bool(s.min() >= 0 and s.max() <= 1)
