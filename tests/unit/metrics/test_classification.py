"""AUC, log loss and calibration error against naive references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedrec.metrics import expected_calibration_error, log_loss, roc_auc_score


def ref_auc(y, s):
    pos = [b for a, b in zip(y, s, strict=True) if a == 1]
    neg = [b for a, b in zip(y, s, strict=True) if a == 0]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def ref_log_loss(y, p, eps=1e-15):
    p = [min(max(x, eps), 1 - eps) for x in p]
    return -sum(a * math.log(b) + (1 - a) * math.log(1 - b) for a, b in zip(y, p, strict=True)) / len(y)


def ref_ece(y, p, n_bins):
    bins: dict[int, list[tuple[int, float]]] = {}
    for a, b in zip(y, p, strict=True):
        idx = min(int(b * n_bins), n_bins - 1)
        bins.setdefault(idx, []).append((a, b))
    return sum(len(v) / len(y) * abs(np.mean([a for a, _ in v]) - np.mean([b for _, b in v])) for v in bins.values())


labels_and_scores = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda ys: 0 < sum(ys) < len(ys)),
        st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0, 0.33]), min_size=n, max_size=n),
    )
)


@settings(max_examples=80, deadline=None)
@given(case=labels_and_scores)
def test_auc_matches_pairwise_reference(case):
    y, s = case
    assert roc_auc_score(np.array(y), np.array(s)) == pytest.approx(ref_auc(y, s))


@settings(max_examples=80, deadline=None)
@given(case=labels_and_scores)
def test_log_loss_matches_reference(case):
    y, p = case
    assert log_loss(np.array(y), np.array(p)) == pytest.approx(ref_log_loss(y, p))


@settings(max_examples=80, deadline=None)
@given(case=labels_and_scores, n_bins=st.integers(1, 20))
def test_ece_matches_reference_and_is_bounded(case, n_bins):
    y, p = case
    ece = expected_calibration_error(np.array(y), np.array(p), n_bins=n_bins)
    assert ece == pytest.approx(ref_ece(y, p, n_bins))
    assert 0.0 <= ece <= 1.0


def test_hand_computed():
    assert roc_auc_score(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc_score(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert log_loss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))
    # Two bins: [0.2, 0.2] with labels [0, 1] -> |0.5 - 0.2|; [0.9] with label 1 -> |1 - 0.9|.
    ece = expected_calibration_error(np.array([0, 1, 1]), np.array([0.2, 0.2, 0.9]), n_bins=2)
    assert ece == pytest.approx(2 / 3 * 0.3 + 1 / 3 * 0.1)


def test_perfectly_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.1


def test_errors():
    with pytest.raises(ValueError, match="both positives and negatives"):
        roc_auc_score(np.array([1, 1]), np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        log_loss(np.array([2, 0]), np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1, 0]), np.array([1.2, 0.3]))
