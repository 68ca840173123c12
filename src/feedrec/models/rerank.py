"""Re-ranking: shape a ranked candidate list into a feed.

In order: drop blocked items; apply business boosts and a freshness boost to the scores; keep the
best ``window_per_slot * k`` (optional: serving time grows with the window, and deeper candidates
almost never make the feed); then fill
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
        window_per_slot: float | None = None,
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
        if window_per_slot is not None and window_per_slot < 1:
            raise ValueError(f"window_per_slot must be >= 1 or None, got {window_per_slot}")
        self.window_per_slot = window_per_slot
        self.rules = rules or BusinessRules()

    def rerank(
        self, item_ids: np.ndarray, scores: np.ndarray, catalog: ItemCatalog, *, k: int, now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """One user's feed: (item_ids (<= k,), final scores) from ranked candidates."""
        ids = np.asarray(item_ids).astype(str)
        pos = np.clip(np.searchsorted(catalog.item_ids, ids), 0, max(catalog.item_ids.size - 1, 0))
        known = catalog.item_ids[pos] == ids if catalog.item_ids.size else np.zeros(ids.size, bool)
        return self._rerank(ids, np.asarray(scores, np.float64), pos, known, catalog, k=k, now=now)

    def rerank_indices(
        self, item_idx: np.ndarray, scores: np.ndarray, catalog: ItemCatalog, *, k: int, now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """``rerank`` for candidates given as catalogue positions (the serving path: no id lookups)."""
        item_idx = np.asarray(item_idx, np.int64)
        ids = catalog.item_ids[item_idx]
        return self._rerank(
            ids, np.asarray(scores, np.float64), item_idx, np.ones(ids.size, bool), catalog, k=k, now=now
        )

    def _rerank(
        self,
        ids: np.ndarray,
        s: np.ndarray,
        pos: np.ndarray,
        known: np.ndarray,
        catalog: ItemCatalog,
        *,
        k: int,
        now: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        keep = (ids != "") & np.isfinite(s)
        if self.rules.block:
            keep &= ~np.isin(ids, list(self.rules.block))
        ids, s, pos, known = ids[keep], s[keep], pos[keep], known[keep]
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
        window = int(np.ceil(self.window_per_slot * k)) if self.window_per_slot is not None else ids.size
        if ids.size > window:  # only the head competes for the feed's slots
            head = np.sort(np.argsort(-rel, kind="stable")[:window])
            ids, rel, pos, known = ids[head], rel[head], pos[head], known[head]
        topics = catalog.topics[pos].toarray() * known[:, None]
        norms = np.linalg.norm(topics, axis=1, keepdims=True)
        unit = np.divide(topics, norms, out=np.zeros_like(topics), where=norms > 0)
        creators = np.where(known, catalog.creator[pos], 0)

        chosen: list[int] = []
        relevance = (1 - self.diversity) * rel
        open_ = relevance.copy()  # -inf once taken, or once its creator or one of its topics is capped
        untaken = relevance.copy()  # -inf once taken (caps bend when every candidate left is capped)
        penalty = np.zeros(ids.size)  # diversity * max similarity to the feed so far
        similarity = self.diversity * (unit @ unit.T) if self.diversity else None
        per_creator: dict[int, int] = {}
        per_topic = np.zeros(topics.shape[1])
        for _ in range(min(k, ids.size)):
            best = int(np.argmax(open_ - penalty))
            if open_[best] == -np.inf:
                best = int(np.argmax(untaken - penalty))
            chosen.append(best)
            open_[best] = untaken[best] = -np.inf
            creator = int(creators[best])
            per_creator[creator] = per_creator.get(creator, 0) + 1
            if creator and self.max_per_creator is not None and per_creator[creator] == self.max_per_creator:
                open_[creators == creator] = -np.inf
            if self.max_per_topic is not None:
                has = topics[best] > 0
                per_topic += has
                saturated = has & (per_topic == self.max_per_topic)
                if saturated.any():
                    open_[topics[:, saturated].sum(axis=1) > 0] = -np.inf
            if similarity is not None:
                np.maximum(penalty, similarity[best], out=penalty)
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
