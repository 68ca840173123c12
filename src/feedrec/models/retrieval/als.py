"""Matrix factorization by alternating least squares, from the ``implicit`` library."""

from __future__ import annotations

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.models.base import Recommender


class ALSRecommender(Recommender):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008): confidence = ``alpha`` * interaction weight."""

    _state_attrs = ("user_factors_", "item_factors_")
    user_factors_: np.ndarray  # (n_users, factors) float32
    item_factors_: np.ndarray  # (n_items, factors) float32

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        seed: int = 42,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def _validate_params(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ValueError("factors and iterations must be >= 1")
        if self.regularization < 0 or self.alpha <= 0:
            raise ValueError("regularization must be >= 0 and alpha > 0")

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        # implicit runs its own threads; a multi-threaded BLAS underneath would oversubscribe the cores.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=self.num_threads,
            )
            model.fit(interactions.to_csr(), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, np.float32)
        self.item_factors_ = np.asarray(model.item_factors, np.float32)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_idx] @ self.item_factors_.T

    def _score_pairs(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.user_factors_[user_idx], self.item_factors_[item_idx])
