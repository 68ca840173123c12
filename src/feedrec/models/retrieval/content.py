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
        topics_t, by_creator, tie_break = self._scoring_parts()
        scores = self.profile_[user_idx].toarray().astype(np.float32) @ topics_t  # few topics: dense BLAS
        # A user follows few creators: the creator term touches only their items.
        creator = (self.creator_affinity_[user_idx] @ by_creator).tocoo()
        scores[creator.row, creator.col] += np.float32(self.creator_weight) * creator.data.astype(np.float32)
        scores += tie_break
        return scores

    def _score_pairs(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        topics_t, _, tie_break = self._scoring_parts()
        out = np.empty(user_idx.size)
        for lo in range(0, user_idx.size, 200_000):  # bounded temporaries for millions of pairs
            u, i = user_idx[lo : lo + 200_000], item_idx[lo : lo + 200_000]
            topical = np.einsum("ij,ji->i", self.profile_[u].toarray().astype(np.float32), topics_t[:, i])
            creator = np.asarray(self.creator_affinity_[u, self.item_creator_[i]], np.float32).ravel()
            out[lo : lo + u.size] = topical + np.float32(self.creator_weight) * creator + tie_break[i]
        return out

    def _scoring_parts(self) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
        """(n_topics, n_items) item topics, (n_creators, n_items) creator indicators and the
        (n_items,) popularity tie-break, float32; built once per fitted or loaded state."""
        cached = self.__dict__.get("_parts")
        if cached is None or cached[0] is not self.item_topics_:
            n_items = self.item_creator_.size
            by_creator = sp.csr_matrix(
                (np.ones(n_items), (self.item_creator_, np.arange(n_items))),
                shape=(self.creator_affinity_.shape[1], n_items),
            )
            tie_break = (1e-4 * self.item_counts_ / (self.item_counts_.max() + 1.0)).astype(np.float32)
            cached = (self.item_topics_, self.item_topics_.T.toarray().astype(np.float32), by_creator, tie_break)
            self.__dict__["_parts"] = cached
        return cached[1], cached[2], cached[3]
