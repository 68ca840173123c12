from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from feedrec.models.retrieval.two_tower import TwoTowerRecommender, _histories
from feedrec.schemas import ITEM_SCHEMA
from tests.conftest import make_interactions, make_side


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 30), st.integers(0, 20)), min_size=1, max_size=60),
    size=st.integers(1, 6),
)
def test_histories_only_hold_earlier_interactions(rows, size):
    """Point in time: an example's history is the same user's interactions before it, latest first."""
    user = np.array([r[0] for r in rows])
    code = np.array([r[1] for r in rows])
    t = np.array([r[2] for r in rows])
    order = np.lexsort((np.arange(user.size), t, user))
    hist = _histories(user, code, order, size)
    rank = np.empty(user.size, np.int64)
    rank[order] = np.arange(user.size)
    for n in range(user.size):
        earlier = [m for m in order if user[m] == user[n] and rank[m] < rank[n]]
        expected = [code[m] for m in reversed(earlier)][:size]
        assert hist[n, : len(expected)].tolist() == expected
        assert (hist[n, len(expected) :] == 0).all()
        assert all(t[m] <= t[n] for m in earlier)


def _fit() -> tuple[TwoTowerRecommender, object]:
    data = make_interactions(n_users=80, n_items=80, per_user=10, seed=1)
    side = make_side(n_users=80, n_items=80)
    model = TwoTowerRecommender(dim=16, hidden=32, history_size=5, epochs=8, batch_size=64, num_threads=1)
    return model.fit(data, side), data


def test_learns_the_block_structure_and_reports_validation():
    model, _ = _fit()
    assert 0 < model.best_valid_ndcg_ <= 1
    ids, _ = model.recommend(["u0", "u1"], k=5)
    block = {0: range(0, 20), 1: range(20, 40)}
    for row, b in zip(ids, (0, 1), strict=True):
        in_block = sum(int(i[1:]) in block[b] for i in row)
        assert in_block >= 4  # users prefer their block (make_interactions)


def test_new_user_from_history_alone_lands_near_that_history():
    model, _ = _fit()
    emb = model.embed_new_users([["i21", "i22", "i25"], []])
    scores = emb @ model.item_emb_.T
    top = model.item_ids_[np.argsort(-scores[0])[:10]]
    assert sum(20 <= int(i[1:]) < 40 for i in top) >= 6
    assert np.isfinite(emb[1]).all()  # no history, no attributes: still an embedding


def test_new_items_are_embedded_from_content():
    model, _ = _fit()
    new = pa.Table.from_pylist(
        [{"item_id": "fresh", "created_at": None, "topics": ["t1", "t4"], "creator_id": "c1", "text": None}],
        ITEM_SCHEMA,
    )
    vec = model.embed_items(new)[0]
    sims = model.item_emb_ @ vec
    top = model.item_ids_[np.argsort(-sims)[:10]]
    assert sum(15 <= int(i[1:]) < 40 for i in top) >= 6  # block 1 items share topic t1 and creator c1
