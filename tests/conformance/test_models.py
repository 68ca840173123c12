"""Every recommender passes the same suite: a model declared in feedrec.config gets it for free."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from feedrec.models import MODEL_NAMES, model_for_tests
from feedrec.models.base import PAD_ID, NotFittedError, Recommender, top_k
from feedrec.models.retrieval.candidates import CandidateRecommender
from tests.conftest import make_interactions, make_side


def _feed() -> Recommender:
    return model_for_tests("feedrec")


#: Every declared model (``ModelDecl.test_params`` in feedrec.config), plus the two-tower over HNSW.
MODELS: dict[str, Callable[[], Recommender]] = {name: partial(model_for_tests, name) for name in MODEL_NAMES} | {
    "two_tower_hnsw": partial(model_for_tests, "two_tower", ann="hnsw")
}

pytestmark = pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())


class Data:
    """Interactions with their side information; ``fit(model)`` passes both."""

    def __init__(self) -> None:
        self.inter = make_interactions(n_users=40, n_items=60, per_user=8)
        self.side = make_side(n_users=40, n_items=60)

    def __getattr__(self, name: str):  # the tests read users, items, ... off the interactions
        return getattr(self.inter, name)

    def fit(self, model: Recommender) -> Recommender:
        return model.fit(self.inter, self.side)


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


def test_fit_returns_self(make, data):
    model = make()
    assert data.fit(model) is model


def test_recommends_k_unique_unseen_known_items(make, data):
    model = data.fit(make())
    users = data.users.ids[:10]
    ids, scores = model.recommend(users, k=10)
    assert ids.shape == scores.shape == (10, 10)
    seen = data.inter.to_csr(binary=True)
    for row, user in zip(ids, users, strict=True):
        assert len(set(row)) == 10
        assert set(row) <= set(data.items.ids)
        history = set(data.items.ids[seen[data.users.lookup([user])[0]].indices])
        assert not set(row) & history
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_exclude_seen_false_may_return_history(make, data):
    ids, _ = data.fit(make()).recommend(data.users.ids[:3], k=data.n_items, exclude_seen=False)
    assert (ids != PAD_ID).all()


def test_short_catalogue_pads(make, data):
    ids, scores = data.fit(make()).recommend(data.users.ids[:2], k=data.n_items + 5)
    assert (ids[:, -5:] == PAD_ID).all() and np.isnan(scores[:, -5:]).all()


def test_unknown_user_gets_the_cold_start_feed(make, data):
    model = data.fit(make())
    ids, scores = model.recommend(["nobody", data.users.ids[0]], k=5)
    assert len(set(ids[0])) == 5 and np.isfinite(scores[0]).all()
    top_popular = data.items.ids[np.argsort(-np.bincount(data.item_idx, minlength=data.n_items), kind="stable")[:1]]
    uses_default = type(model).recommend is Recommender.recommend
    if uses_default and type(model)._cold_start_scores is Recommender._cold_start_scores:  # popularity
        assert ids[0, 0] == top_popular[0]


def test_save_load_round_trip_is_identical(make, data, tmp_path: Path):
    model = data.fit(make())
    users = np.concatenate([data.users.ids, ["nobody"]])
    before = model.recommend(users, k=7)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    after = loaded.recommend(users, k=7)
    assert np.array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_deterministic(make, data):
    a = data.fit(make()).recommend(data.users.ids, k=5)[0]
    b = data.fit(make()).recommend(data.users.ids, k=5)[0]
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
    with pytest.raises((NotFittedError, ValueError)):
        make().recommend(["u0"], k=3)


def test_a_static_source_top_k_and_pair_scores_match_the_dense_path(make, data):
    """Sources with a ``_static_table`` serve from a precomputed order; it must agree with the
    exhaustive ``_score`` + ``top_k`` path exactly, seen items excluded, at every k."""
    model = data.fit(make())
    if model._static() is None:
        pytest.skip("personal scores: no static table")
    users = np.arange(model.user_ids_.size)
    for k in (1, 7, 60):
        dense = np.array(model._score(users), dtype=np.float32, copy=True)
        seen = model.user_items_[users].tocoo()
        dense[seen.row, seen.col] = -np.inf
        want_idx, want_scores = top_k(dense, k)
        got_idx, got_scores = model._static_top_k(users, k, exclude_seen=True)
        valid = np.isfinite(want_scores)
        np.testing.assert_array_equal(np.isfinite(got_scores), valid)
        np.testing.assert_array_equal(got_idx[valid], want_idx[valid])
        np.testing.assert_array_equal(got_scores[valid], want_scores[valid])
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, model.user_ids_.size, 200), rng.integers(0, model.item_ids_.size, 200)
    np.testing.assert_allclose(model._score_pairs(u, i), np.asarray(model._score(u))[np.arange(200), i], rtol=1e-6)


def test_pair_scores_match_the_dense_scores(make, data):
    """The ranker reads every source's score of every candidate through ``_score_pairs``; whatever
    shortcut a model takes there must give what its dense ``_score`` gives for the same pairs,
    in any order of users (pairs arrive grouped by candidate, not by user)."""
    model = data.fit(make())
    try:
        dense = np.asarray(model._score(np.arange(model.user_ids_.size)), np.float64)
    except NotImplementedError:
        pytest.skip("scores a candidate set, not the dense catalogue")
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, model.user_ids_.size, 500), rng.integers(0, model.item_ids_.size, 500)
    np.testing.assert_allclose(model._score_pairs(u, i), dense[u, i], rtol=1e-5, atol=1e-7)


def test_recommending_many_users_in_blocks_changes_nothing(make, data, monkeypatch):
    """Evaluations and batch jobs recommend for many users a block at a time (memory stays bounded);
    the result must be what one pass over every user gives."""
    import feedrec.models.feed as feed_module
    import feedrec.models.retrieval.candidates as candidates_module

    model = data.fit(make())
    users = data.users.ids
    whole_ids, whole_scores = model.recommend(users, k=7)
    table = model.candidate_table(users, 30) if isinstance(model, CandidateRecommender) else None
    monkeypatch.setattr(candidates_module, "USER_BLOCK", 6)
    monkeypatch.setattr(feed_module, "USER_BLOCK", 6)
    assert len(candidates_module.user_blocks(users.size)) > 1
    ids, scores = model.recommend(users, k=7)
    np.testing.assert_array_equal(ids, whole_ids)
    np.testing.assert_allclose(scores, whole_scores, rtol=1e-6)
    if table is not None:  # the ranker's training candidates, likewise
        assert model.candidate_table(users, 30).equals(table)


def test_clone_and_set_params(make):
    model = make()
    twin = model.clone()
    assert type(twin) is type(model) and repr(twin) == repr(model) and twin is not model
    name, value = next(iter(model.get_params().items()))
    with pytest.raises(ValueError, match="no parameter"):
        twin.set_params(not_a_parameter=1)
    assert twin.set_params(**{name: value}) is twin


def test_the_served_pipeline_gives_the_recommended_feed(make, data):
    """Through its stages (retrieve -> rank -> arrange), a model serves what ``recommend`` returns;
    ``exclude`` removes items from the candidates, and ``popular`` is the most-seen items."""
    model = data.fit(make())
    pipeline = model.serving()
    users = np.asarray([str(data.users.ids[0])])
    candidates = pipeline.retrieve(users, 5)
    ids, _, sources = pipeline.arrange(1, candidates, pipeline.rank(users, candidates), 5)
    assert ids[0].tolist() == model.recommend(users, 5)[0][0].tolist() and all(sources[0])
    dropped = pipeline.retrieve(users, 5, exclude=[ids[0][0]])
    assert ids[0][0] not in model.item_ids_[dropped.item]
    top, counts, _ = pipeline.popular(3, exclude=[str(model.item_ids_[np.argmax(model.item_counts_)])])
    assert top.size == 3 and np.all(np.diff(counts) <= 0)
