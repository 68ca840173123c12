"""Ranking metrics against slow, obvious reference implementations, hand-computed cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedrec import metrics as M


# --- naive references: one user at a time, straight from the definitions -------------------------
def ref_recall(true, pred, k):
    return np.mean([len(set(p[:k]) & set(t)) / min(len(set(t)), k) for t, p in zip(true, pred, strict=True)])


def ref_precision(true, pred, k):
    return np.mean([len(set(p[:k]) & set(t)) / k for t, p in zip(true, pred, strict=True)])


def ref_ndcg(true, pred, k):
    out = []
    for t, p in zip(true, pred, strict=True):
        dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(p[:k]) if x in set(t))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(set(t)), k)))
        out.append(dcg / idcg)
    return np.mean(out)


def ref_mrr(true, pred, k):
    out = []
    for t, p in zip(true, pred, strict=True):
        rr = 0.0
        for i, x in enumerate(p[:k]):
            if x in set(t):
                rr = 1 / (i + 1)
                break
        out.append(rr)
    return np.mean(out)


def ref_hr(true, pred, k):
    return np.mean([float(any(x in set(t) for x in p[:k])) for t, p in zip(true, pred, strict=True)])


def ref_map(true, pred, k):
    out = []
    for t, p in zip(true, pred, strict=True):
        hits, s = 0, 0.0
        for i, x in enumerate(p[:k]):
            if x in set(t):
                hits += 1
                s += hits / (i + 1)
        out.append(s / min(len(set(t)), k))
    return np.mean(out)


def ref_f1(true, pred, k):
    out = []
    for t, p in zip(true, pred, strict=True):
        h = len(set(p[:k]) & set(t))
        prec, rec = h / k, h / min(len(set(t)), k)
        out.append(0.0 if h == 0 else 2 * prec * rec / (prec + rec))
    return np.mean(out)


PAIRS = [
    (M.recall_at_k, ref_recall),
    (M.precision_at_k, ref_precision),
    (M.ndcg_at_k, ref_ndcg),
    (M.mrr_at_k, ref_mrr),
    (M.hit_rate_at_k, ref_hr),
    (M.map_at_k, ref_map),
    (M.f1_at_k, ref_f1),
]


@st.composite
def ranking_case(draw):
    n_items = draw(st.integers(5, 30))
    n_users = draw(st.integers(1, 8))
    width = draw(st.integers(1, min(10, n_items)))
    pred = np.array([draw(st.permutations(list(range(n_items))))[:width] for _ in range(n_users)], dtype=np.int64)
    true = [
        np.array(draw(st.lists(st.integers(0, n_items - 1), min_size=1, max_size=8, unique=True)))
        for _ in range(n_users)
    ]
    k = draw(st.integers(1, width))
    return true, pred, k


@pytest.mark.parametrize(("fast", "slow"), PAIRS, ids=[f.__name__ for f, _ in PAIRS])
@settings(max_examples=60, deadline=None)
@given(case=ranking_case())
def test_matches_naive_reference(fast, slow, case):
    true, pred, k = case
    assert fast(true, pred, k=k) == pytest.approx(slow(true, pred, k), abs=1e-12)


@pytest.mark.parametrize(("fast", "_slow"), PAIRS, ids=[f.__name__ for f, _ in PAIRS])
@settings(max_examples=40, deadline=None)
@given(case=ranking_case())
def test_bounded_between_zero_and_one(fast, _slow, case):
    true, pred, k = case
    assert 0.0 <= fast(true, pred, k=k) <= 1.0


def test_hand_computed_case():
    # user 0: relevant {1, 3}; list [3, 2, 1] -> hits at ranks 1 and 3.
    # user 1: relevant {9};    list [4, 5, 6] -> no hit.
    true = [np.array([1, 3]), np.array([9])]
    pred = np.array([[3, 2, 1], [4, 5, 6]])
    dcg0 = 1 + 1 / math.log2(4)
    idcg0 = 1 + 1 / math.log2(3)
    assert M.ndcg_at_k(true, pred, k=3) == pytest.approx((dcg0 / idcg0 + 0) / 2)
    assert M.recall_at_k(true, pred, k=3) == pytest.approx((2 / 2 + 0) / 2)
    assert M.precision_at_k(true, pred, k=3) == pytest.approx((2 / 3 + 0) / 2)
    assert M.mrr_at_k(true, pred, k=3) == pytest.approx((1 + 0) / 2)
    assert M.hit_rate_at_k(true, pred, k=3) == pytest.approx(0.5)
    assert M.map_at_k(true, pred, k=3) == pytest.approx(((1 / 1 + 2 / 3) / 2 + 0) / 2)
    # Truncated at k=1 only the first item counts; recall divides by min(|rel|, k) = 1.
    assert M.recall_at_k(true, pred, k=1) == pytest.approx(0.5)


def test_perfect_ranking_scores_one_and_padding_never_hits():
    true = [np.array([0, 1]), np.array([5])]
    pred = np.array([[1, 0, -1], [5, -1, -1]])
    for fn in (M.ndcg_at_k, M.recall_at_k, M.hit_rate_at_k, M.mrr_at_k, M.map_at_k):
        assert fn(true, pred, k=3) == pytest.approx(1.0)
    assert M.precision_at_k(true, pred, k=3) == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="k=5"):
        M.ndcg_at_k([np.array([1])], np.array([[1, 2]]), k=5)
    with pytest.raises(ValueError, match="at least one relevant"):
        M.recall_at_k([np.array([], dtype=int)], np.array([[1, 2]]), k=1)
    with pytest.raises(ValueError, match="users"):
        M.recall_at_k([np.array([1]), np.array([2])], np.array([[1, 2]]), k=1)


def test_coverage():
    pred = np.array([[0, 1, 2], [1, 2, 3], [-1, -1, -1]])
    assert M.catalog_coverage(pred, n_items=10, k=3) == pytest.approx(4 / 10)
    assert M.catalog_coverage(pred, n_items=10, k=1) == pytest.approx(2 / 10)


def ref_ild(pred, feats, k):
    out = []
    for row in pred:
        items = [i for i in row[:k] if i >= 0]
        d = []
        for a in range(len(items)):
            for b in range(len(items)):
                if a != b:
                    x, y = feats[items[a]], feats[items[b]]
                    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
                    cos = 0.0 if nx == 0 or ny == 0 else x @ y / (nx * ny)
                    d.append(1 - cos)
        if d:
            out.append(np.mean(d))
    return np.mean(out)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 6))
def test_intra_list_diversity_matches_reference(seed, k):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(12, 4))
    pred = np.array([rng.permutation(12)[:k] for _ in range(5)])
    pred[0, -1] = -1  # a padded list
    assert M.intra_list_diversity(pred, item_features=feats, k=k) == pytest.approx(ref_ild(pred, feats, k))


def test_intra_list_diversity_hand_cases():
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert M.intra_list_diversity(np.array([[0, 1]]), item_features=feats, k=2) == pytest.approx(1.0)
    assert M.intra_list_diversity(np.array([[0, 2]]), item_features=feats, k=2) == pytest.approx(0.0)


def test_novelty():
    pop = np.array([0.5, 0.25, 1.0])
    assert M.novelty(np.array([[0, 1]]), item_popularity=pop, k=2) == pytest.approx((1 + 2) / 2)
    assert M.novelty(np.array([[2, -1]]), item_popularity=pop, k=2) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        M.novelty(np.array([[0]]), item_popularity=np.array([0.0]), k=1)
