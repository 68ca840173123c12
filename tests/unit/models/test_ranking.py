from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedrec.models.ranking.base import RankingSet
from feedrec.models.ranking.gbdt import GBDTRanker


def _set(n_queries: int, seed: int) -> RankingSet:
    rng = np.random.default_rng(seed)
    rows = 20 * n_queries
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=rows) > 1.0).astype(np.float32)  # feature 0 decides
    return RankingSet(x, y, np.repeat(np.arange(n_queries), 20), ["signal", "noise_a", "noise_b"])


@pytest.mark.parametrize("objective", ["lambdarank", "binary"])
def test_learns_the_signal_and_round_trips(objective, tmp_path: Path):
    train, valid = _set(200, 0), _set(50, 1)
    ranker = GBDTRanker(objective=objective, n_estimators=50, num_threads=1).fit(train, valid)
    assert next(iter(ranker.feature_importance())) == "signal"
    test = _set(50, 2)
    scores = ranker.predict(test.features)
    assert np.corrcoef(scores, test.features[:, 0])[0, 1] > 0.7
    ranker.save(tmp_path / "r")
    np.testing.assert_allclose(GBDTRanker.load(tmp_path / "r").predict(test.features), scores)


def test_ranking_set_checks():
    with pytest.raises(ValueError, match="contiguous"):
        RankingSet(np.zeros((3, 1), np.float32), np.zeros(3, np.float32), np.array([0, 1, 0]), ["a"])
    with pytest.raises(ValueError, match="names"):
        RankingSet(np.zeros((3, 2), np.float32), np.zeros(3, np.float32), np.zeros(3, np.int64), ["a"])
    with pytest.raises(ValueError, match="both engaged"):
        GBDTRanker().fit(
            RankingSet(np.zeros((3, 1), np.float32), np.zeros(3, np.float32), np.zeros(3, np.int64), ["a"])
        )
