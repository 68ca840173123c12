"""Probability calibration: map ranker scores to probabilities that match observed rates.

``isotonic`` (monotone, non-parametric; needs a few thousand rows) or ``platt`` (a logistic fit on
the score; robust with little data). Fit on a held-out set, never on the ranker's training rows.
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression


class Calibrator:
    def __init__(self, method: str = "isotonic") -> None:
        if method not in ("isotonic", "platt"):
            raise ValueError(f"method must be isotonic or platt, got {method!r}")
        self.method = method

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> Self:
        s = np.asarray(scores, np.float64).reshape(-1)
        y = np.asarray(labels).reshape(-1)
        if len(np.unique(y)) < 2:
            raise ValueError("calibration needs both positive and negative labels")
        if self.method == "isotonic":
            self.model_: IsotonicRegression | LogisticRegression = IsotonicRegression(
                out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6
            ).fit(s, y)
        else:
            self.model_ = LogisticRegression().fit(s[:, None], y)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, np.float64).reshape(-1)
        if isinstance(self.model_, IsotonicRegression):
            return np.asarray(self.model_.predict(s))
        return np.asarray(self.model_.predict_proba(s[:, None])[:, 1])
