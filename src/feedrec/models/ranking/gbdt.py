"""Gradient-boosted trees with LightGBM: ``lambdarank`` (listwise NDCG) or ``binary`` (pointwise)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import lightgbm as lgb
import numpy as np

from feedrec.models.ranking.base import Ranker, RankingSet


class GBDTRanker(Ranker):
    booster_: lgb.Booster
    feature_names_: list[str]

    def __init__(
        self,
        objective: str = "lambdarank",
        n_estimators: int = 500,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 50,
        feature_fraction: float = 0.9,
        early_stopping_rounds: int = 30,
        seed: int = 42,
        num_threads: int = 0,
    ) -> None:
        self.objective = objective
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.feature_fraction = feature_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.num_threads = num_threads

    def _params(self) -> dict[str, object]:
        if self.objective not in ("lambdarank", "binary"):
            raise ValueError(f"objective must be lambdarank or binary, got {self.objective!r}")
        return {
            "objective": self.objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "metric": "ndcg" if self.objective == "lambdarank" else "binary_logloss",
            "eval_at": [10],
            "seed": self.seed,
            "deterministic": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def _dataset(self, data: RankingSet, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        group = data.group_sizes() if self.objective == "lambdarank" else None
        return lgb.Dataset(
            data.features,
            label=data.labels,
            group=group,
            feature_name=data.feature_names,
            reference=reference,
            free_raw_data=False,
        )

    def fit(self, train: RankingSet, valid: RankingSet | None = None, *, init: GBDTRanker | None = None) -> Self:
        """Boost on ``train``, early-stopped on ``valid``; with ``init`` (a fitted ranker on the same
        features), continue from its trees (LightGBM's ``init_model``: a warm start; the result
        holds its trees and up to ``n_estimators`` new ones)."""
        if train.features.shape[0] == 0 or len(np.unique(train.labels)) < 2:
            raise ValueError("the ranking set needs rows with both engaged and not-engaged labels")
        if init is not None and init.feature_names_ != list(train.feature_names):
            raise ValueError("a warm start needs the same features as the ranker it continues")
        dtrain = self._dataset(train)
        sets = [dtrain]
        callbacks: list[Callable[..., Any]] = []
        if valid is not None and valid.features.shape[0]:
            sets.append(self._dataset(valid, reference=dtrain))
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        self.booster_ = lgb.train(
            self._params(),
            dtrain,
            num_boost_round=self.n_estimators,
            valid_sets=sets,
            callbacks=callbacks,
            init_model=init.booster_ if init is not None else None,
        )
        self.feature_names_ = list(train.feature_names)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not hasattr(self, "booster_"):
            raise RuntimeError("GBDTRanker is not fitted")
        best = self.booster_.best_iteration or None
        # A request's few hundred rows run faster on the calling thread than spread over a team.
        threads = 1 if len(features) < 10_000 else self.num_threads
        return np.asarray(self.booster_.predict(features, num_iteration=best, num_threads=threads), dtype=np.float64)

    @property
    def n_trees(self) -> int:
        """The trees ``predict`` uses (an early-stopped fit's best iteration, a warm start's included)."""
        best = int(self.booster_.best_iteration or 0)  # 0 unless early-stopped; -1 once loaded
        return best if best > 0 else int(self.booster_.num_trees())

    def feature_importance(self) -> dict[str, float]:
        gains = self.booster_.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.feature_names_, gains.tolist(), strict=True), key=lambda kv: -kv[1]))

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(path / "booster.txt"), num_iteration=self.booster_.best_iteration or None)
        params = {
            k: getattr(self, k)
            for k in (
                "objective",
                "n_estimators",
                "learning_rate",
                "num_leaves",
                "min_data_in_leaf",
                "feature_fraction",
                "early_stopping_rounds",
                "seed",
                "num_threads",
            )
        }
        (path / "ranker.json").write_text(json.dumps({"params": params, "features": self.feature_names_}))

    @classmethod
    def load(cls, path: Path) -> GBDTRanker:
        meta = json.loads((path / "ranker.json").read_text())
        ranker = cls(**meta["params"])
        ranker.booster_ = lgb.Booster(model_file=str(path / "booster.txt"))
        ranker.feature_names_ = meta["features"]
        return ranker
