"""Top-k ranking metrics and beyond-accuracy metrics. Pure functions: numpy in, float out.

Conventions shared by every function here:
- ``y_pred``: (n_users, >= k) int array of item indices, best first; -1 pads a short list.
- ``y_true``: a sequence of n_users int arrays, each user's relevant items (non-empty).
- The score is averaged over users; relevance is binary.
- Recall@k divides the hits by ``min(|relevant|, k)`` (the benchmark protocol's definition), so a
  perfect list scores 1 even when a user has more than k relevant items. Precision@k divides by k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(y_true: Sequence[np.ndarray], y_pred: np.ndarray, k: int) -> np.ndarray:
    y_pred = np.asarray(y_pred)
    if y_pred.ndim != 2:
        raise ValueError(f"y_pred must be 2-D (n_users, k), got shape {y_pred.shape}")
    if k < 1 or k > y_pred.shape[1]:
        raise ValueError(f"k={k} must be in [1, {y_pred.shape[1]}] (the lists' length)")
    if len(y_true) != y_pred.shape[0]:
        raise ValueError(f"y_true has {len(y_true)} users, y_pred {y_pred.shape[0]}")
    if y_pred.shape[0] == 0:
        raise ValueError("no users to evaluate")
    if any(len(t) == 0 for t in y_true):
        raise ValueError("every user needs at least one relevant item")
    return y_pred[:, :k].astype(np.int64)


def hit_matrix(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> np.ndarray:
    """(n_users, k) bool: whether the item at each rank is relevant to that user."""
    top = _check(y_true, y_pred, k)
    n = top.shape[0]
    width = int(max(top.max(initial=0), max(int(np.max(t)) for t in y_true))) + 2
    owner = np.repeat(np.arange(n, dtype=np.int64), [len(t) for t in y_true])
    true_keys = np.unique(owner * width + np.concatenate([np.asarray(t, np.int64) for t in y_true]))
    keys = np.arange(n, dtype=np.int64)[:, None] * width + top
    pos = np.clip(np.searchsorted(true_keys, keys), 0, true_keys.size - 1)
    return (true_keys[pos] == keys) & (top >= 0)


def _n_relevant(y_true: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([np.unique(np.asarray(t)).size for t in y_true], dtype=np.float64)


def precision_at_k(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> float:
    return float(hit_matrix(y_true, y_pred, k=k).sum(axis=1).mean() / k)


def recall_at_k(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> float:
    hits = hit_matrix(y_true, y_pred, k=k).sum(axis=1)
    return float((hits / np.minimum(_n_relevant(y_true), k)).mean())


def f1_at_k(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> float:
    """Per-user harmonic mean of precision@k and recall@k, averaged (0 for a user with no hit)."""
    hits = hit_matrix(y_true, y_pred, k=k).sum(axis=1).astype(np.float64)
    p = hits / k
    r = hits / np.minimum(_n_relevant(y_true), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(hits > 0, 2 * p * r / (p + r), 0.0)
    return float(f1.mean())


def hit_rate_at_k(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> float:
    return float(hit_matrix(y_true, y_pred, k=k).any(axis=1).mean())


def mrr_at_k(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> float:
    hits = hit_matrix(y_true, y_pred, k=k)
    first = hits.argmax(axis=1)
    return float(np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0).mean())


def ndcg_at_k(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> float:
    hits = hit_matrix(y_true, y_pred, k=k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal_n = np.minimum(_n_relevant(y_true), k).astype(np.int64)
    idcg = np.cumsum(discounts)[ideal_n - 1]
    return float((dcg / idcg).mean())


def map_at_k(y_true: Sequence[np.ndarray], y_pred: np.ndarray, *, k: int) -> float:
    """Mean average precision: sum of precision@i at each hit i, over ``min(|relevant|, k)``."""
    hits = hit_matrix(y_true, y_pred, k=k)
    prec_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (prec_at_i * hits).sum(axis=1) / np.minimum(_n_relevant(y_true), k)
    return float(ap.mean())


def catalog_coverage(y_pred: np.ndarray, *, n_items: int, k: int) -> float:
    """Share of the catalogue's ``n_items`` that appear in at least one top-k list."""
    if n_items < 1:
        raise ValueError("n_items must be >= 1")
    top = np.asarray(y_pred)[:, :k]
    return float(np.unique(top[top >= 0]).size / n_items)


def intra_list_diversity(y_pred: np.ndarray, *, item_features: np.ndarray, k: int) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cosine) between their items.

    ``item_features``: (n_items, d) float. Lists with fewer than two items are left out.
    """
    top = np.asarray(y_pred)[:, :k]
    feats = np.asarray(item_features, np.float64)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0)
    valid = top >= 0
    vecs = unit[np.where(valid, top, 0)] * valid[..., None]  # (n, k, d)
    sim = np.einsum("nid,njd->nij", vecs, vecs)
    pair = valid[:, :, None] & valid[:, None, :] & ~np.eye(top.shape[1], dtype=bool)[None]
    n_pairs = pair.sum(axis=(1, 2))
    keep = n_pairs > 0
    if not keep.any():
        raise ValueError("no list has two items to compare")
    dist = ((1.0 - sim) * pair).sum(axis=(1, 2))
    return float((dist[keep] / n_pairs[keep]).mean())


def novelty(y_pred: np.ndarray, *, item_popularity: np.ndarray, k: int) -> float:
    """Mean self-information ``-log2 p(i)`` of recommended items (bits; higher = less obvious).

    ``item_popularity``: (n_items,) probability that a user has interacted with each item, in (0, 1].
    """
    top = np.asarray(y_pred)[:, :k]
    p = np.asarray(item_popularity, np.float64)
    chosen = top[top >= 0]
    if chosen.size == 0:
        raise ValueError("no recommended items")
    probs = p[chosen]
    if (probs <= 0).any() or (probs > 1).any():
        raise ValueError("item_popularity of recommended items must be in (0, 1]")
    return float((-np.log2(probs)).mean())
