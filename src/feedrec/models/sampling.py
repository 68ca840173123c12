"""Negative sampling: for each positive (user, item), ``ratio`` items the user did not engage with.

Strategies:
- ``uniform``: any catalogue item.
- ``popularity``: items drawn with probability proportional to ``count ** exponent`` (word2vec's
  0.75 by default): harder negatives, and a correction for popularity bias in the positives.
- ``impression``: items the user was shown but did not engage with (the strongest signal a feed
  has); positives of users with no such impressions fall back to uniform negatives.
A sampled negative is never one of the user's positives. Seeded: the same inputs give the same sample.

``draw_items`` is the draw itself (uniform or popularity-weighted, no exclusions), for a caller that
excludes on its own terms: the whole pipeline (``FeedRecommender``) draws its ranking set's
sampled negatives with it, by ``models.feedrec.negative_strategy``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Strategy = Literal["uniform", "popularity", "impression"]


def draw_items(
    rng: np.random.Generator,
    size: int,
    *,
    n_items: int,
    strategy: Strategy = "uniform",
    item_counts: np.ndarray | None = None,
    exponent: float = 0.75,
) -> np.ndarray:
    """``size`` item indices in ``[0, n_items)``: uniform, or with probability ∝ ``count ** exponent``."""
    if strategy == "uniform":
        return rng.integers(0, n_items, size)
    if strategy != "popularity":
        raise ValueError(f"draw_items: strategy must be uniform or popularity, not {strategy!r}")
    if item_counts is None or len(item_counts) != n_items:
        raise ValueError("strategy='popularity' needs item_counts of length n_items")
    cdf = np.cumsum(np.asarray(item_counts, np.float64) ** exponent)
    if cdf[-1] <= 0:
        raise ValueError("item_counts are all zero")
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), n_items - 1)


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return users.astype(np.int64) * n_items + items.astype(np.int64)


def _is_member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.size, bool)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def sample_negatives(
    pos_users: np.ndarray,
    pos_items: np.ndarray,
    *,
    n_items: int,
    strategy: Strategy = "uniform",
    ratio: int = 4,
    seed: int = 42,
    item_counts: np.ndarray | None = None,
    exponent: float = 0.75,
    impression_users: np.ndarray | None = None,
    impression_items: np.ndarray | None = None,
    max_rounds: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(users, items)`` of ``ratio * len(pos_users)`` negatives (int64 indices).

    The i-th block of ``ratio`` negatives belongs to the i-th positive.
    """
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    pos_users = np.asarray(pos_users, np.int64)
    pos_items = np.asarray(pos_items, np.int64)
    rng = np.random.default_rng(seed)
    positive = np.unique(_pair_keys(pos_users, pos_items, n_items))
    per_user = np.bincount(pos_users, minlength=int(pos_users.max(initial=-1)) + 1)
    full = np.flatnonzero(per_user >= n_items)
    if full.size:
        raise ValueError(f"user index {full[0]} engaged with every item: no negative exists for them")
    users = np.repeat(pos_users, ratio)
    items = np.empty(users.size, np.int64)
    todo = np.arange(users.size)

    if strategy == "impression":
        if impression_users is None or impression_items is None:
            raise ValueError("strategy='impression' needs impression_users and impression_items")
        imp = np.unique(_pair_keys(np.asarray(impression_users), np.asarray(impression_items), n_items))
        imp = imp[~_is_member(imp, positive)]  # shown but not engaged
        imp_user = imp // n_items
        start = np.searchsorted(imp_user, users, side="left")
        stop = np.searchsorted(imp_user, users, side="right")
        has = stop > start
        pick = start[has] + (rng.random(int(has.sum())) * (stop[has] - start[has])).astype(np.int64)
        items[has] = imp[pick] % n_items
        todo = np.flatnonzero(~has)  # these fall back to uniform
        probs = None
    elif strategy == "popularity":
        if item_counts is None or len(item_counts) != n_items:
            raise ValueError("strategy='popularity' needs item_counts of length n_items")
        w = np.asarray(item_counts, np.float64) ** exponent
        if w.sum() <= 0:
            raise ValueError("item_counts are all zero")
        probs = w / w.sum()
    elif strategy == "uniform":
        probs = None
    else:
        raise ValueError(f"unknown sampling strategy {strategy!r}; use uniform, popularity or impression")

    cdf = None if probs is None else np.cumsum(probs)
    for round_ in range(max_rounds):
        if todo.size == 0:
            return users, items
        # Popularity mass may sit on a user's own positives; after half the rounds, draw uniformly.
        if cdf is None or round_ >= max_rounds // 2:
            draw = rng.integers(0, n_items, todo.size)
        else:
            draw = np.minimum(np.searchsorted(cdf, rng.random(todo.size) * cdf[-1], side="right"), n_items - 1)
        items[todo] = draw
        todo = todo[_is_member(_pair_keys(users[todo], draw, n_items), positive)]
    if todo.size:
        raise RuntimeError(f"could not draw negatives for {todo.size} rows in {max_rounds} rounds")
    return users, items
