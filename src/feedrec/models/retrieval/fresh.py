"""Fresh items: recently published, newest first, lifted by their early engagement."""

from __future__ import annotations

import numpy as np

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideEncoder, SideInfo
from feedrec.models.base import Recommender

DAY = 86_400


class FreshRecommender(Recommender):
    """Items published in the last ``max_age_days`` before the end of training. Score: freshness
    (1 for just published, 0 at ``max_age_days``) plus ``engagement_weight`` times the item's share
    of the top engagement count; older or undated items follow, by popularity."""

    _state_attrs = ("scores_",)
    scores_: np.ndarray  # (n_items,) float32

    def __init__(self, max_age_days: float = 14.0, engagement_weight: float = 0.5) -> None:
        self.max_age_days = max_age_days
        self.engagement_weight = engagement_weight

    def _validate_params(self) -> None:
        if self.max_age_days <= 0 or self.engagement_weight < 0:
            raise ValueError("max_age_days must be > 0 and engagement_weight >= 0")

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        created = SideEncoder.fit(side).encode_items(side.items if side else None, interactions.items).created_at
        # An item published after the last interaction (catalogue ahead of the logs) is brand new: age 0.
        age_days = np.maximum(float(interactions.timestamps.max()) - created, 0.0) / DAY
        fresh = np.nan_to_num(1.0 - age_days / self.max_age_days, nan=0.0)
        fresh = np.clip(fresh, 0.0, 1.0)
        engagement = self.item_counts_ / max(self.item_counts_.max(), 1.0)
        score = np.where(fresh > 0, 1.0 + fresh + self.engagement_weight * engagement, 0.0)
        self.scores_ = (score + engagement * 1e-3).astype(np.float32)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores_, (user_idx.size, self.scores_.size))

    def _static_table(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scores_[None, :], np.zeros(self.user_ids_.size, np.int64)

    def _cold_start_scores(self) -> np.ndarray:
        return self.scores_
