"""Popularity: all-time, or within a recent window (trending)."""

from __future__ import annotations

import numpy as np

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.models.base import Recommender

DAY = 86_400


class PopularityRecommender(Recommender):
    """Ranks items by how many training interactions they have.

    With ``window_days``, only interactions in the last ``window_days`` before the end of the
    training data count; items tied there (including those with none) fall back to all-time counts.
    """

    _state_attrs = ("scores_",)
    scores_: np.ndarray  # (n_items,) float64

    def __init__(self, window_days: float | None = None) -> None:
        self.window_days = window_days

    def _validate_params(self) -> None:
        if self.window_days is not None and self.window_days <= 0:
            raise ValueError(f"window_days must be > 0 or None, got {self.window_days}")

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        alltime = np.bincount(interactions.item_idx, minlength=interactions.n_items).astype(np.float64)
        if self.window_days is None:
            self.scores_ = alltime
            return
        since = interactions.timestamps.max() - self.window_days * DAY
        recent = interactions.timestamps >= since
        counts = np.bincount(interactions.item_idx[recent], minlength=interactions.n_items).astype(np.float64)
        self.scores_ = counts + alltime / (alltime.max() + 1.0)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores_.astype(np.float32), (user_idx.size, self.scores_.size))

    def _static_table(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scores_[None, :], np.zeros(self.user_ids_.size, np.int64)

    def _cold_start_scores(self) -> np.ndarray:
        return self.scores_.astype(np.float32)
