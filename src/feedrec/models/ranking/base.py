"""The ranker contract and the data it learns from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np


@dataclass
class RankingSet:
    """Rows of (query, candidate) features with labels. Rows of one query are contiguous."""

    features: np.ndarray  # (n, f) float32, NaN = missing
    labels: np.ndarray  # (n,) float32: 1 engaged, 0 not (or graded relevance)
    groups: np.ndarray  # (n,) int64 query id (a user at a time), contiguous runs
    feature_names: list[str]

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.labels.shape != (n,) or self.groups.shape != (n,):
            raise ValueError(f"features ({n} rows), labels {self.labels.shape} and groups {self.groups.shape} disagree")
        if self.features.shape[1] != len(self.feature_names):
            raise ValueError(f"{self.features.shape[1]} feature columns but {len(self.feature_names)} names")
        if n and (np.diff(self.groups) != 0).sum() + 1 != np.unique(self.groups).size:
            raise ValueError("rows of one query must be contiguous")

    def group_sizes(self) -> np.ndarray:
        if self.groups.size == 0:
            return np.zeros(0, np.int64)
        starts = np.flatnonzero(np.r_[True, self.groups[1:] != self.groups[:-1]])
        return np.diff(np.r_[starts, self.groups.size])


class Ranker(ABC):
    @abstractmethod
    def fit(self, train: RankingSet, valid: RankingSet | None = None) -> Self: ...

    @abstractmethod
    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n,) float scores; higher ranks first."""

    @abstractmethod
    def save(self, path: Path) -> None: ...
