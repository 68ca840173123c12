from __future__ import annotations

import numpy as np
import pytest

from feedrec.models.sampling import sample_negatives


@pytest.fixture
def positives():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 10)
    items = np.concatenate([rng.choice(100, 10, replace=False) for _ in range(50)])
    return users, items


def _pos_set(users, items):
    return set(zip(users.tolist(), items.tolist(), strict=True))


@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
def test_never_samples_a_positive_and_has_the_ratio(positives, strategy):
    users, items = positives
    counts = np.bincount(items, minlength=100)
    nu, ni = sample_negatives(users, items, n_items=100, strategy=strategy, ratio=3, item_counts=counts + 1)
    assert nu.size == ni.size == 3 * users.size
    assert np.array_equal(nu, np.repeat(users, 3))
    assert not (set(zip(nu.tolist(), ni.tolist(), strict=True)) & _pos_set(users, items))


def test_seeded(positives):
    users, items = positives
    a = sample_negatives(users, items, n_items=100, seed=1)
    b = sample_negatives(users, items, n_items=100, seed=1)
    c = sample_negatives(users, items, n_items=100, seed=2)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])


def test_popularity_exponent_skews_toward_popular_items():
    users = np.zeros(1, np.int64)
    items = np.zeros(1, np.int64)
    counts = np.array([1] + [1] * 8 + [1000], dtype=float)
    _, ni = sample_negatives(
        users, items, n_items=10, strategy="popularity", ratio=20_000, item_counts=counts, exponent=1.0
    )
    share = (ni == 9).mean()
    assert share == pytest.approx(1000 / 1008, abs=0.01)
    _, flat = sample_negatives(
        users, items, n_items=10, strategy="popularity", ratio=20_000, item_counts=counts, exponent=0.0
    )
    assert (flat == 9).mean() == pytest.approx(1 / 9, abs=0.01)


def test_impression_negatives_are_shown_but_not_engaged():
    pos_u, pos_i = np.array([0, 0, 1]), np.array([1, 2, 3])
    imp_u, imp_i = np.array([0, 0, 0, 1]), np.array([1, 5, 6, 3])  # user 1 saw only what they engaged with
    nu, ni = sample_negatives(
        pos_u,
        pos_i,
        n_items=10,
        strategy="impression",
        ratio=4,
        impression_users=imp_u,
        impression_items=imp_i,
    )
    assert set(ni[nu == 0].tolist()) <= {5, 6}
    assert not ({(1, 3)} & set(zip(nu.tolist(), ni.tolist(), strict=True)))  # fallback is uniform, still not positive


def test_errors():
    with pytest.raises(ValueError, match="every item"):
        sample_negatives(np.array([0, 0]), np.array([0, 1]), n_items=2)
    with pytest.raises(ValueError, match="item_counts"):
        sample_negatives(np.array([0]), np.array([0]), n_items=5, strategy="popularity")
    with pytest.raises(ValueError, match="impression_users"):
        sample_negatives(np.array([0]), np.array([0]), n_items=5, strategy="impression")


def test_draw_items_follows_the_popularity_weights_and_uniform_matches_integers():
    from feedrec.models.sampling import draw_items

    counts = np.array([1.0, 0.0, 9.0, 0.0])
    drawn = draw_items(
        np.random.default_rng(0), 20_000, n_items=4, strategy="popularity", item_counts=counts, exponent=1.0
    )
    share = np.bincount(drawn, minlength=4) / drawn.size
    assert share[1] == share[3] == 0 and abs(share[2] - 0.9) < 0.01
    same = draw_items(np.random.default_rng(3), 50, n_items=7)
    assert np.array_equal(same, np.random.default_rng(3).integers(0, 7, 50))  # the uniform stream is unchanged


def test_the_feed_draws_its_ranking_negatives_by_its_strategy():
    """popularity-weighted negatives are more popular, on average, than uniform ones."""
    import polars as pl

    from feedrec.models import model_for_tests
    from feedrec.models.retrieval.candidates import CandidateRecommender
    from tests.conftest import make_interactions

    inter = make_interactions(n_users=40, n_items=60, per_user=8)
    source = CandidateRecommender(**model_for_tests("candidates").get_params())
    source.sources = {
        "popularity": {"class": "feedrec.models.retrieval.popularity.PopularityRecommender", "params": {}}
    }
    source.quotas = {"popularity": 5}
    source.fit(inter)
    users = np.asarray(inter.users.ids[:20])
    empty = pl.DataFrame(
        {"row": [], "item": [], "user": []}, schema={"row": pl.Int64, "item": pl.Utf8, "user": pl.Utf8}
    )
    mean_count = {}
    for strategy in ("uniform", "popularity"):
        feed = model_for_tests("feedrec", n_sampled_negatives=30, negative_strategy=strategy, negative_exponent=2.0)
        drawn = feed._sampled_negatives(empty.select("row", "item"), source, users, empty.select("user", "item"))
        idx = source.item_index().lookup(drawn["item"].to_numpy())
        mean_count[strategy] = float(source.item_counts_[idx].mean())
    assert mean_count["popularity"] > mean_count["uniform"]
