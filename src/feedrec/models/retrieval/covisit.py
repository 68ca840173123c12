"""Item-to-item co-visitation with time decay.

Two items co-occur when the same user interacts with both within ``window_hours``; the pair's
weight halves every ``gap_half_life_hours`` of time between the two interactions. A user's score
for an item sums the co-visitation weights from the user's ``history_size`` most recent items, the
latest weighing most (weight halves every ``history_half_life`` positions back).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.models.base import Recommender

HOUR = 3_600


class CovisitRecommender(Recommender):
    _state_attrs = ("covisit_", "history_")
    covisit_: sp.csr_matrix  # (n_items, n_items) float32, symmetric
    history_: sp.csr_matrix  # (n_users, n_items) float32: recency weights of each user's recent items

    def __init__(
        self,
        window_hours: float = 24.0,
        max_neighbors: int = 20,
        gap_half_life_hours: float = 6.0,
        history_size: int = 20,
        history_half_life: float = 5.0,
        normalize: bool = True,
    ) -> None:
        self.window_hours = window_hours
        self.max_neighbors = max_neighbors
        self.gap_half_life_hours = gap_half_life_hours
        self.history_size = history_size
        self.history_half_life = history_half_life
        self.normalize = normalize

    def _validate_params(self) -> None:
        for name in ("window_hours", "gap_half_life_hours", "history_half_life"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_neighbors", "history_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        order = np.lexsort((interactions.timestamps, interactions.user_idx))
        u = interactions.user_idx[order]
        i = interactions.item_idx[order]
        t = interactions.timestamps[order]
        n_items = interactions.n_items
        rows, cols, weights = [], [], []
        for lag in range(1, min(self.max_neighbors, len(u) - 1) + 1):
            gap = t[lag:] - t[:-lag]
            ok = (u[lag:] == u[:-lag]) & (gap <= self.window_hours * HOUR) & (i[lag:] != i[:-lag])
            w = 0.5 ** (gap[ok] / (self.gap_half_life_hours * HOUR))
            a, b = i[:-lag][ok], i[lag:][ok]
            rows += [a, b]
            cols += [b, a]
            weights += [w, w]
        if rows:
            co = sp.csr_matrix(
                (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                shape=(n_items, n_items),
                dtype=np.float64,
            )
            co.sum_duplicates()
        else:
            co = sp.csr_matrix((n_items, n_items), dtype=np.float64)
        if self.normalize:
            inv = 1.0 / np.sqrt(np.maximum(self.item_counts_, 1.0))
            co = sp.csr_matrix(sp.diags(inv) @ co @ sp.diags(inv))
        self.covisit_ = co.astype(np.float32)

        self.history_ = interactions.recent_history(self.history_size, self.history_half_life)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        scores = (self.history_[user_idx] @ self.covisit_).toarray()
        # Items with no co-visitation evidence still rank, by popularity, below every covisited one.
        # Per user (a score must not depend on which other users share the batch): a thousandth of
        # the user's smallest co-visitation score.
        tie_break = self.item_counts_ / (self.item_counts_.max() + 1.0)
        smallest = np.min(scores, axis=1, where=scores > 0, initial=np.inf)
        scale = np.where(np.isfinite(smallest), smallest, 1.0) * 1e-3
        return scores + scale[:, None] * tie_break[None, :]
