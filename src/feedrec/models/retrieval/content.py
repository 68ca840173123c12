"""Content-based retrieval: items whose topics and creator match what the user engaged with.

Needs no interactions on the item side, so it reaches items nobody has seen yet (cold items).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideEncoder, SideInfo
from feedrec.models.base import Recommender


def _normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m)


class ContentRecommender(Recommender):
    """Score = cosine(user topic profile, item topics) + ``creator_weight`` * share of the user's
    recent items by the item's creator. The profile sums the topic vectors of the user's latest
    ``history_size`` items, halving every ``history_half_life`` items back."""

    _state_attrs = ("profile_", "item_topics_", "creator_affinity_", "item_creator_")
    profile_: sp.csr_matrix  # (n_users, n_topics) unit rows
    item_topics_: sp.csr_matrix  # (n_items, n_topics) unit rows
    creator_affinity_: sp.csr_matrix  # (n_users, n_creators) shares
    item_creator_: np.ndarray  # (n_items,) creator code, 0 = unknown

    def __init__(self, history_size: int = 50, history_half_life: float = 20.0, creator_weight: float = 0.5) -> None:
        self.history_size = history_size
        self.history_half_life = history_half_life
        self.creator_weight = creator_weight

    def _validate_params(self) -> None:
        if self.history_size < 1 or self.history_half_life <= 0 or self.creator_weight < 0:
            raise ValueError("history_size >= 1, history_half_life > 0 and creator_weight >= 0 are required")

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        enc = SideEncoder.fit(side)
        feats = enc.encode_items(side.items if side else None, interactions.items)
        self.item_topics_ = _normalize_rows(feats.topics)
        self.item_creator_ = feats.creator
        weights = interactions.recent_history(self.history_size, self.history_half_life)
        self.profile_ = _normalize_rows(sp.csr_matrix(weights @ feats.topics))
        creators = sp.csr_matrix(
            (np.ones(interactions.n_items), (np.arange(interactions.n_items), feats.creator)),
            shape=(interactions.n_items, enc.n_creators),
        )
        known_creator = np.ones(enc.n_creators)
        known_creator[0] = 0.0  # an unknown creator is no evidence
        aff = sp.csr_matrix(weights @ creators @ sp.diags(known_creator))
        aff.eliminate_zeros()
        totals = np.asarray(weights.sum(axis=1)).ravel()
        self.creator_affinity_ = sp.csr_matrix(sp.diags(1.0 / np.maximum(totals, 1e-12)) @ aff)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        topical = (self.profile_[user_idx] @ self.item_topics_.T).toarray()
        creator = self.creator_affinity_[user_idx].toarray()[:, self.item_creator_]
        tie_break = 1e-4 * self.item_counts_ / (self.item_counts_.max() + 1.0)
        return topical + self.creator_weight * creator + tie_break
