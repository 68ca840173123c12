"""Pointwise metrics for predicted probabilities: AUC, log loss, calibration error."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _binary(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values, y_score {s.size}")
    if y.size == 0:
        raise ValueError("empty input")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("y_score must be finite")
    return y.astype(np.int64), s


def roc_auc_score(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    y, s = _binary(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positives and negatives")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, y_prob: np.ndarray, *, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of Bernoulli labels (natural log); probabilities clipped to [eps, 1-eps]."""
    y, p = _binary(y_true, y_prob)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("y_prob must lie in [0, 1]")
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 15) -> float:
    """Sum over equal-width probability bins of (bin share) * |observed rate - mean prediction|."""
    y, p = _binary(y_true, y_prob)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("y_prob must lie in [0, 1]")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=y, minlength=n_bins) - np.bincount(bins, weights=p, minlength=n_bins))
    return float(gap.sum() / count.sum())
