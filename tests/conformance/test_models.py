"""Every recommender passes the same suite: a new model gets it by adding one line to MODELS."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from feedrec.models.base import PAD_ID, NotFittedError, Recommender
from feedrec.models.retrieval.als import ALSRecommender
from feedrec.models.retrieval.covisit import CovisitRecommender
from feedrec.models.retrieval.popularity import PopularityRecommender
from tests.conftest import make_interactions

MODELS: dict[str, Callable[[], Recommender]] = {
    "popularity": PopularityRecommender,
    "popularity_recent": lambda: PopularityRecommender(window_days=0.5),
    "covisit": CovisitRecommender,
    "als": lambda: ALSRecommender(factors=8, iterations=5, num_threads=1),
}

pytestmark = pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())


@pytest.fixture(scope="module")
def data():
    return make_interactions(n_users=40, n_items=60, per_user=8)


def test_fit_returns_self(make, data):
    model = make()
    assert model.fit(data) is model


def test_recommends_k_unique_unseen_known_items(make, data):
    model = make().fit(data)
    users = data.users.ids[:10]
    ids, scores = model.recommend(users, k=10)
    assert ids.shape == scores.shape == (10, 10)
    seen = data.to_csr(binary=True)
    for row, user in zip(ids, users, strict=True):
        assert len(set(row)) == 10
        assert set(row) <= set(data.items.ids)
        history = set(data.items.ids[seen[data.users.lookup([user])[0]].indices])
        assert not set(row) & history
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_exclude_seen_false_may_return_history(make, data):
    ids, _ = make().fit(data).recommend(data.users.ids[:3], k=data.n_items, exclude_seen=False)
    assert (ids != PAD_ID).all()


def test_short_catalogue_pads(make, data):
    ids, scores = make().fit(data).recommend(data.users.ids[:2], k=data.n_items + 5)
    assert (ids[:, -5:] == PAD_ID).all() and np.isnan(scores[:, -5:]).all()


def test_unknown_user_gets_the_cold_start_feed(make, data):
    model = make().fit(data)
    ids, scores = model.recommend(["nobody", data.users.ids[0]], k=5)
    assert len(set(ids[0])) == 5 and np.isfinite(scores[0]).all()
    top_popular = data.items.ids[np.argsort(-np.bincount(data.item_idx, minlength=data.n_items), kind="stable")[:1]]
    if not isinstance(model, PopularityRecommender) or model.window_days is None:
        assert ids[0, 0] == top_popular[0]


def test_save_load_round_trip_is_identical(make, data, tmp_path: Path):
    model = make().fit(data)
    users = np.concatenate([data.users.ids, ["nobody"]])
    before = model.recommend(users, k=7)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    after = loaded.recommend(users, k=7)
    assert np.array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_deterministic(make, data):
    a = make().fit(data).recommend(data.users.ids, k=5)[0]
    b = make().fit(data).recommend(data.users.ids, k=5)[0]
    assert np.array_equal(a, b)


def test_init_only_stores_params(make):
    model = make()
    params = model.get_params()
    assert set(params) == set(inspect.signature(type(model).__init__).parameters) - {"self"}
    assert not [a for a in vars(model) if a.endswith("_")]  # no learned state before fit


def test_not_fitted_and_empty_errors(make, data, tmp_path: Path):
    with pytest.raises(NotFittedError):
        make().recommend(["u0"], k=3)
    with pytest.raises(NotFittedError):
        make().save(tmp_path / "x")
    with pytest.raises(ValueError, match="no interactions"):
        make().fit(make_interactions(n_users=0))
