"""EASE (Steck 2019): a closed-form item-item linear model. ``B = I - P / diag(P)``, ``P = (X'X + l2 I)^-1``.

Strong on small and medium catalogues; the Gram matrix is dense (n_items^2), so fitting is limited to
``max_items`` items. With ``l2=None`` the regularization is chosen on a validation carve (each
user's latest ``valid_ratio`` of interactions) by NDCG@10 over ``l2_grid``, then the model is refitted
on everything.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.metrics import ndcg_at_k
from feedrec.models.base import Recommender, top_k

DEFAULT_GRID = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)


def _ease(x: sp.csr_matrix, l2: float) -> np.ndarray:
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


class EASERecommender(Recommender):
    _state_attrs = ("weights_", "l2_")
    weights_: np.ndarray  # (n_items, n_items) float32
    l2_: np.ndarray  # () the regularization used

    def __init__(
        self,
        l2: float | None = None,
        l2_grid: tuple[float, ...] | list[float] = DEFAULT_GRID,
        valid_ratio: float = 0.1,
        max_items: int = 30_000,
    ) -> None:
        self.l2 = l2
        self.l2_grid = l2_grid
        self.valid_ratio = valid_ratio
        self.max_items = max_items

    def _validate_params(self) -> None:
        if self.l2 is not None and self.l2 <= 0:
            raise ValueError(f"l2 must be > 0 or None (tune on validation), got {self.l2}")
        if self.l2 is None and (not self.l2_grid or min(self.l2_grid) <= 0):
            raise ValueError("l2_grid must hold positive values")

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        if interactions.n_items > self.max_items:
            raise ValueError(
                f"EASE needs a dense {interactions.n_items}^2 Gram matrix; this catalogue exceeds max_items="
                f"{self.max_items}. Use als or two_tower for large catalogues."
            )
        x = interactions.to_csr(binary=True)
        self.l2_ = np.asarray(self.l2 if self.l2 is not None else self._tune(interactions))
        self.weights_ = _ease(x, float(self.l2_))

    def _tune(self, interactions: Interactions) -> float:
        valid = interactions.latest_mask(self.valid_ratio)
        shape = (interactions.n_users, interactions.n_items)
        train = sp.csr_matrix(
            (np.ones(int((~valid).sum()), np.float32), (interactions.user_idx[~valid], interactions.item_idx[~valid])),
            shape=shape,
        )
        train.data[:] = 1.0
        users = np.unique(interactions.user_idx[valid])
        targets = sp.csr_matrix(
            (np.ones(int(valid.sum())), (interactions.user_idx[valid], interactions.item_idx[valid])), shape=shape
        )
        keep = [u for u in users if len(np.setdiff1d(targets[u].indices, train[u].indices))]
        truth = [np.setdiff1d(targets[u].indices, train[u].indices) for u in keep]
        best, best_l2 = -1.0, float(self.l2_grid[0])
        for l2 in self.l2_grid:
            scores = (train[keep] @ _ease(train, l2)).astype(np.float32)
            seen = train[keep].tocoo()
            scores[seen.row, seen.col] = -np.inf
            ndcg = ndcg_at_k(truth, top_k(scores, 10)[0], k=10)
            if ndcg > best:
                best, best_l2 = ndcg, float(l2)
        return best_l2

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.user_items_[user_idx] @ self.weights_)
