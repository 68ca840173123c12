from __future__ import annotations

from pathlib import Path

import numpy as np

from feedrec.metrics import roc_auc_score
from feedrec.models.ranking.multitask import MultiTaskRanker, MultiTaskSet


def _set(n: int, seed: int) -> MultiTaskSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[rng.random(n) < 0.1, 3] = np.nan  # some missing values
    surface = rng.integers(1, 3, n)
    click = (rng.random(n) < 1 / (1 + np.exp(-(2 * x[:, 0] - 1 + 0.5 * (surface == 2))))).astype(float)
    like = click * (rng.random(n) < 1 / (1 + np.exp(-2 * x[:, 1]))).astype(float)
    hide = (1 - click) * (rng.random(n) < 1 / (1 + np.exp(-(2 * x[:, 2] - 2)))).astype(float)
    dwell = click * np.exp(1 + x[:, 1])
    return MultiTaskSet(numeric=x, surface=surface, labels={"click": click, "like": like, "hide": hide, "dwell": dwell})


def test_each_head_learns_its_own_signal_and_round_trips(tmp_path: Path):
    train, valid, test = _set(20_000, 0), _set(4_000, 1), _set(4_000, 2)
    ranker = MultiTaskRanker(epochs=8, num_threads=1).fit(train, valid)
    heads = ranker.predict_heads(test)
    assert roc_auc_score(test.labels["click"], heads["click"]) > 0.75
    assert roc_auc_score(test.labels["like"], heads["like"]) > 0.75
    assert roc_auc_score(test.labels["hide"], heads["hide"]) > 0.7
    clicked = test.labels["click"] > 0
    assert np.corrcoef(np.log1p(heads["dwell"][clicked]), np.log1p(test.labels["dwell"][clicked]))[0, 1] > 0.5
    ranker.save(tmp_path / "m")
    np.testing.assert_allclose(MultiTaskRanker.load(tmp_path / "m").predict(test), ranker.predict(test), rtol=1e-6)


def test_the_score_follows_the_configured_weights():
    train, valid, test = _set(8_000, 0), _set(2_000, 1), _set(2_000, 2)
    ranker = MultiTaskRanker(epochs=3, num_threads=1).fit(train, valid)
    heads = ranker.predict_heads(test)
    ranker.weights = {"click": 0.0, "like": 0.0, "dwell": 0.0, "hide": 1.0}
    np.testing.assert_allclose(ranker.predict(test), -heads["hide"], rtol=1e-6)
