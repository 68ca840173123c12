"""Re-ranking: shape a ranked candidate list into a feed.

In order: drop blocked items; apply business boosts and a freshness boost to the scores; then fill
the feed greedily by maximal marginal relevance (MMR), ``(1 - diversity) * relevance - diversity *
max similarity to what is already in the feed`` (topic cosine), skipping an item that would break
the per-creator or per-topic cap while others remain; finally put pinned items at their slots.
Seen and hidden items never reach this stage: the candidate set drops them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

DAY = 86_400


@dataclass
class BusinessRules:
    pin: dict[str, int] = field(default_factory=dict)  # item_id -> 0-based slot
    block: set[str] = field(default_factory=set)
    boost: dict[str, float] = field(default_factory=dict)  # item_id -> score multiplier


@dataclass
class ItemCatalog:
    """What re-ranking needs to know about items, aligned to ``item_ids``."""

    item_ids: np.ndarray  # (n,) str, sorted
    topics: sp.csr_matrix  # (n, n_topics) binary
    creator: np.ndarray  # (n,) int, 0 = unknown
    created_at: np.ndarray  # (n,) epoch seconds, NaN = unknown


class ReRanker:
    def __init__(
        self,
        diversity: float = 0.2,
        max_per_creator: int | None = 2,
        max_per_topic: int | None = 4,
        freshness_boost: float = 0.0,
        freshness_half_life_days: float = 3.0,
        rules: BusinessRules | None = None,
    ) -> None:
        if not 0 <= diversity <= 1:
            raise ValueError(f"diversity must be in [0, 1], got {diversity}")
        for name, cap in (("max_per_creator", max_per_creator), ("max_per_topic", max_per_topic)):
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {cap}")
        self.diversity = diversity
        self.max_per_creator = max_per_creator
        self.max_per_topic = max_per_topic
        self.freshness_boost = freshness_boost
        self.freshness_half_life_days = freshness_half_life_days
        self.rules = rules or BusinessRules()

    def rerank(
        self, item_ids: np.ndarray, scores: np.ndarray, catalog: ItemCatalog, *, k: int, now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """One user's feed: (item_ids (<= k,), final scores) from ranked candidates."""
        ids = np.asarray(item_ids).astype(str)
        s = np.asarray(scores, np.float64)
        keep = (ids != "") & np.isfinite(s) & ~np.isin(ids, list(self.rules.block))
        ids, s = ids[keep], s[keep]
        pos = np.searchsorted(catalog.item_ids, ids)
        pos = np.clip(pos, 0, catalog.item_ids.size - 1)
        known = catalog.item_ids[pos] == ids
        if self.rules.boost:
            s = s * np.array([self.rules.boost.get(i, 1.0) for i in ids])
        if ids.size == 0:
            return ids, s
        # Relevance on [0, 1] within the list, so that it and similarity share a scale.
        rel = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.ones_like(s)
        if self.freshness_boost:
            age = np.where(known, (now - catalog.created_at[pos]) / DAY, np.nan)
            rel = rel + self.freshness_boost * np.nan_to_num(
                0.5 ** (np.maximum(age, 0) / self.freshness_half_life_days)
            )
        topics = catalog.topics[pos].toarray() * known[:, None]
        norms = np.linalg.norm(topics, axis=1, keepdims=True)
        unit = np.divide(topics, norms, out=np.zeros_like(topics), where=norms > 0)
        creators = np.where(known, catalog.creator[pos], 0)

        chosen: list[int] = []
        max_sim = np.zeros(ids.size)
        available = np.ones(ids.size, bool)
        per_creator: dict[int, int] = {}
        per_topic = np.zeros(topics.shape[1])
        slots = min(k, ids.size)
        while len(chosen) < slots and available.any():
            mmr = (1 - self.diversity) * rel - self.diversity * max_sim
            allowed = available.copy()
            if self.max_per_creator is not None:
                full = [c for c, n in per_creator.items() if c and n >= self.max_per_creator]
                allowed &= ~np.isin(creators, full)
            if self.max_per_topic is not None:
                saturated = per_topic >= self.max_per_topic
                allowed &= ~(topics[:, saturated].sum(axis=1) > 0)
            pick_from = allowed if allowed.any() else available  # caps bend rather than leave slots empty
            best = int(np.argmax(np.where(pick_from, mmr, -np.inf)))
            chosen.append(best)
            available[best] = False
            per_creator[int(creators[best])] = per_creator.get(int(creators[best]), 0) + 1
            per_topic += topics[best] > 0
            max_sim = np.maximum(max_sim, unit @ unit[best])
        feed = list(ids[chosen])
        final = list(rel[chosen])
        for item, slot in sorted(self.rules.pin.items(), key=lambda kv: kv[1]):
            if item in self.rules.block:
                continue
            if item in feed:
                i = feed.index(item)
                feed.pop(i)
                final.pop(i)
            at = min(slot, len(feed))
            feed.insert(at, item)
            final.insert(at, np.inf)
        return np.asarray(feed[:k]), np.asarray(final[:k], np.float64)
