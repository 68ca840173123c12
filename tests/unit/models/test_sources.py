from __future__ import annotations

import numpy as np
import pyarrow as pa

from feedrec.data.side import SideInfo
from feedrec.models.base import Recommender
from feedrec.models.retrieval.candidates import CandidateRecommender
from feedrec.models.retrieval.content import ContentRecommender
from feedrec.models.retrieval.covisit import CovisitRecommender
from feedrec.models.retrieval.fresh import FreshRecommender
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.models.retrieval.trending import TrendingRecommender
from tests.conftest import make_interactions, make_side


def test_trending_differs_by_segment():
    data = make_interactions(n_users=40, n_items=60)
    side = make_side()
    model = TrendingRecommender(window_days=30).fit(data, side)
    assert model.segments_.tolist() == ["a", "b"]
    even, odd = model.recommend(["u0", "u1"], k=5, exclude_seen=False)[0]
    assert set(even) != set(odd)  # even and odd users sit in segments a and b, with other blocks


def test_fresh_puts_recent_items_first_including_ones_nobody_saw():
    data = make_interactions(n_users=10, n_items=20)
    side = make_side(n_users=10, n_items=20, extra_items=3)
    from feedrec.data.interactions import Interactions

    with_new = Interactions.from_arrays(
        data.users.ids[data.user_idx],
        data.items.ids[data.item_idx],
        data.timestamps,
        catalogue=np.array(["i20", "i21"]),
    )
    model = FreshRecommender(max_age_days=3).fit(with_new, side)
    ids, _ = model.recommend(["u0"], k=3, exclude_seen=False)
    created = {r["item_id"]: r["created_at"] for r in side.items.to_pylist()}
    newest = sorted(created, key=lambda i: created[i], reverse=True)
    assert set(ids[0]) <= set(newest[:6])
    assert "i20" in model.item_ids_


def test_content_matches_topics():
    data = make_interactions(n_users=40, n_items=60)
    model = ContentRecommender().fit(data, make_side())
    ids, _ = model.recommend(["u2"], k=10)  # u2 likes block 2: items 30..44, and has seen 8 of them
    seen = set(data.items.ids[data.to_csr()[data.users.lookup(["u2"])[0]].indices])
    unseen_block = {f"i{n}" for n in range(30, 45)} - seen
    assert set(ids[0][: len(unseen_block)]) == unseen_block  # every unseen block item ranks first


def test_merger_dedupes_keeps_sources_and_drops_hidden():
    data = make_interactions(n_users=20, n_items=40)
    spec = lambda k: {"class": f"{k.__module__}.{k.__qualname__}", "params": {}}  # noqa: E731
    pop_first = PopularityRecommender().fit(data).recommend(["u0"], k=1)[0][0, 0]
    hidden = pa.table({"user_id": ["u0"], "item_id": [pop_first]})
    model = CandidateRecommender(
        sources={"popularity": spec(PopularityRecommender), "covisit": spec(CovisitRecommender)},
        quotas={"popularity": 15, "covisit": 15},
    ).fit(data, SideInfo(hidden=hidden))
    ids, scores, sources = model.recommend_with_sources(["u0", "u1"], k=30)
    for row in ids:
        real = [i for i in row if i]
        assert len(real) == len(set(real))
    assert pop_first not in ids[0]  # hidden for u0 ...
    assert pop_first in ids[1] or pop_first in set(data.items.ids[data.to_csr()[1].indices])  # ... not for u1
    assert set(sources[ids != ""]) <= {"popularity", "covisit"}
    finite = scores[0][np.isfinite(scores[0])]
    assert (np.diff(finite) <= 1e-9).all()
    # An item both sources rank scores higher than either alone would give it.
    assert scores[0, 0] > 1 / 61


def test_a_candidate_set_whose_every_candidate_is_hidden_is_empty_not_an_error():
    inter, side = make_interactions(), make_side()
    model = CandidateRecommender(
        sources={"popularity": {"class": "feedrec.models.retrieval.popularity.PopularityRecommender"}},
        quotas={"popularity": 3},
    ).fit(inter, side)
    top, _ = model.recommend(["u0"], k=3)
    hidden = pa.table({"user_id": ["u0"] * 3, "item_id": top[0].tolist()})
    model = CandidateRecommender(**model.get_params()).fit(
        inter, SideInfo(items=side.items, users=side.users, hidden=hidden)
    )
    c = model.candidate_set(["u0"], 3)
    assert c.row.size == 0 and c.rank.shape == (0, 1)
    assert (model.recommend(["u0"], k=3)[0] == "").all()


def _count_lists(source: Recommender) -> dict[str, int]:
    """Counts the source's ``recommend_indices`` calls from now on, in the returned dict's "n"."""
    calls = {"n": 0}
    original = source.recommend_indices

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return original(*args, **kwargs)

    source.recommend_indices = counted  # type: ignore[method-assign]
    return calls


def test_reusing_source_lists_changes_no_result_and_asks_each_source_once():
    """Tuning re-weights the fusion many times over the same users; inside the block each source
    is asked once, and every fused result is what a fresh computation gives."""
    inter, side = make_interactions(), make_side()
    spec = lambda k: {"class": f"{k.__module__}.{k.__qualname__}"}  # noqa: E731
    model = CandidateRecommender(
        sources={"popularity": spec(PopularityRecommender), "covisit": spec(CovisitRecommender)},
        quotas={"popularity": 20, "covisit": 20},
    ).fit(inter, side)
    users = inter.users.ids[:15]
    calls = _count_lists(model.sources_["covisit"])
    want = []
    for weights in ({"covisit": 1.0}, {"covisit": 0.1}, {"covisit": 3.0}):
        model.weights = weights
        want.append(model.recommend(users, k=10)[0])
    assert calls["n"] == 3
    with model.reusing_source_lists():
        for weights, expected in zip(({"covisit": 1.0}, {"covisit": 0.1}, {"covisit": 3.0}), want, strict=True):
            model.weights = weights
            np.testing.assert_array_equal(model.recommend(users, k=10)[0], expected)
    assert calls["n"] == 4  # once for the whole block
    assert "_memo" not in model.__dict__  # nothing is kept after it


def test_reusing_fits_refits_nothing_for_equal_data_and_gives_the_same_candidates():
    """A training run fits the candidate sources on the same split more than once (tuning, then the
    pipeline): inside ``reusing_fits`` the second fit on equal data (a separately built copy) reuses
    the first, lists included; other data or other sources get a fit of their own."""
    from feedrec.data.interactions import Interactions
    from feedrec.models.retrieval.candidates import reusing_fits

    inter, side = make_interactions(), make_side()
    spec = lambda k: {"class": f"{k.__module__}.{k.__qualname__}"}  # noqa: E731
    params = {
        "sources": {"popularity": spec(PopularityRecommender), "covisit": spec(CovisitRecommender)},
        "quotas": {"popularity": 20, "covisit": 20},
    }
    users = inter.users.ids[:15]
    reference = CandidateRecommender(**params, weights={"covisit": 0.5}).fit(inter, side).candidate_set(users, 30)
    copy = Interactions.from_arrays(
        inter.users.ids[inter.user_idx], inter.items.ids[inter.item_idx], inter.timestamps, inter.weights
    )
    fewer = inter.subset(inter.user_idx != 0)
    with reusing_fits():
        first = CandidateRecommender(**params).fit(inter, side)
        first.candidate_set(users, 30)
        calls = _count_lists(first.sources_["covisit"])
        again = CandidateRecommender(**params, weights={"covisit": 0.5}).fit(copy, side)
        assert again.sources_ is first.sources_  # no refit ...
        got = again.candidate_set(users, 30)
        assert calls["n"] == 0  # ... and the lists the first fit returned for these users are reused
        other_data = CandidateRecommender(**params).fit(fewer, side)
        other_sources = CandidateRecommender(**{**params, "quotas": {"popularity": 20}}).fit(inter, side)
        assert other_data.sources_ is not first.sources_ and other_sources.sources_ is not first.sources_
    for name in ("row", "item", "rrf", "rank", "score"):  # what a fresh fit with the same weights gives
        np.testing.assert_array_equal(getattr(got, name), getattr(reference, name))
    assert "_memo" not in again.__dict__ and "_memo" not in first.__dict__  # nothing memoized after the block
    outside = CandidateRecommender(**params).fit(copy, side)
    assert outside.sources_ is not first.sources_
