"""Trending per segment: what users like this one engaged with in the last ``window_days``."""

from __future__ import annotations

import json

import numpy as np

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo, _attr_value
from feedrec.models.base import Recommender

DAY = 86_400


class TrendingRecommender(Recommender):
    """Recent-window popularity within the user's segment (the first attribute named in the
    comma-separated ``segment_attributes`` that users carry, e.g. an age group); users without a
    segment get the global trend."""

    _state_attrs = ("segment_scores_", "user_segment_", "segments_")
    segment_scores_: np.ndarray  # (n_segments + 1, n_items) float32; row 0 = global
    user_segment_: np.ndarray  # (n_users,) int64, 0 = no segment
    segments_: np.ndarray  # (n_segments,) segment values, in row order from 1

    def __init__(self, window_days: float = 7.0, segment_attributes: str = "age_group,age") -> None:
        self.window_days = window_days
        self.segment_attributes = segment_attributes

    def _validate_params(self) -> None:
        if self.window_days <= 0:
            raise ValueError(f"window_days must be > 0, got {self.window_days}")

    def _user_segments(self, interactions: Interactions, side: SideInfo | None) -> tuple[np.ndarray, np.ndarray]:
        values = np.full(interactions.n_users, "", dtype=object)
        if side is not None and side.users is not None and side.users.num_rows:
            records = [json.loads(a) if a else {} for a in side.users.column("attributes").to_pylist()]
            present = {k for r in records for k in r}
            wanted = [a.strip() for a in self.segment_attributes.split(",") if a.strip()]
            name = next((a for a in wanted if a in present), None)
            if name is not None:
                pos = interactions.users.lookup([str(u) for u in side.users.column("user_id").to_pylist()])
                for p, record in zip(pos.tolist(), records, strict=True):
                    if p >= 0 and name in record:
                        values[p] = _attr_value(record[name])
        segments = np.array(sorted({v for v in values if v}), dtype=str)
        codes = np.zeros(interactions.n_users, np.int64)
        has = values != ""
        codes[has] = np.searchsorted(segments, values[has].astype(str)) + 1
        return segments, codes

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        self.segments_, self.user_segment_ = self._user_segments(interactions, side)
        recent = interactions.timestamps >= interactions.timestamps.max() - self.window_days * DAY
        seg = self.user_segment_[interactions.user_idx[recent]]
        n_items = interactions.n_items
        counts = np.zeros((self.segments_.size + 1, n_items))
        np.add.at(counts, (seg, interactions.item_idx[recent]), 1.0)
        counts[0] = np.bincount(interactions.item_idx[recent], minlength=n_items)
        # Ties (and items with no recent interaction) fall back to the global trend, then all-time counts.
        alltime = self.item_counts_ / (self.item_counts_.max() + 1.0)
        self.segment_scores_ = (counts + (counts[0] + alltime) / (counts[0].max() + 2.0)).astype(np.float32)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.segment_scores_[self.user_segment_[user_idx]]

    def _static_table(self) -> tuple[np.ndarray, np.ndarray]:
        return self.segment_scores_, self.user_segment_

    def scores_for_attributes(self, attributes: list[dict[str, object]]) -> np.ndarray:
        """(n, n_items) scores for users known only by their attributes (a new user's segment)."""
        wanted = [a.strip() for a in self.segment_attributes.split(",") if a.strip()]
        codes = np.zeros(len(attributes), np.int64)
        for r, attrs in enumerate(attributes):
            name = next((a for a in wanted if a in attrs), None)
            if name is not None:
                pos = np.searchsorted(self.segments_, _attr_value(attrs[name]))
                if pos < self.segments_.size and self.segments_[pos] == _attr_value(attrs[name]):
                    codes[r] = pos + 1
        return self.segment_scores_[codes]

    def _cold_start_scores(self) -> np.ndarray:
        return self.segment_scores_[0]
