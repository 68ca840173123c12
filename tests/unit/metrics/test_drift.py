"""Drift statistics against reference computations: a naive PSI loop, scipy's KL and JS written
out by hand, the textbook KS statistic, the Wasserstein distance as the area between the
quantile functions, a hand chi-square, sklearn's calibration curve, the standardized mean
difference by a naive loop and by statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.calibration import calibration_curve

from feedrec.metrics import expected_calibration_error
from feedrec.metrics.drift import (
    SMOOTHING,
    categorical_histogram,
    chi_square_test,
    ece_by_chance,
    js_distance,
    kl_divergence,
    ks_test,
    mean_shift,
    normed_wasserstein,
    numeric_histogram,
    psi,
    quantile_cuts,
    reliability_curve,
)

pytestmark = pytest.mark.unit
counts = st.lists(st.integers(0, 500), min_size=2, max_size=12)


def _naive_shares(c: list[int]) -> list[float]:
    total = sum(x + SMOOTHING for x in c)
    return [(x + SMOOTHING) / total for x in c]


def naive_psi(ref: list[int], cur: list[int]) -> float:
    r, c = _naive_shares(ref), _naive_shares(cur)
    return sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))


def naive_kl(ref: list[int], cur: list[int]) -> float:
    r, c = _naive_shares(ref), _naive_shares(cur)
    return sum(ci * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))


def naive_js(ref: list[int], cur: list[int]) -> float:
    r, c = _naive_shares(ref), _naive_shares(cur)
    m = [(a + b) / 2 for a, b in zip(r, c, strict=True)]
    div = sum(a * math.log2(a / b) for a, b in zip(r, m, strict=True)) / 2
    div += sum(a * math.log2(a / b) for a, b in zip(c, m, strict=True)) / 2
    return math.sqrt(max(div, 0.0))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_psi_kl_js_equal_the_naive_formulas(data):
    ref = data.draw(counts)
    cur = data.draw(st.lists(st.integers(0, 500), min_size=len(ref), max_size=len(ref)))
    assert psi(np.asarray(ref), np.asarray(cur)) == pytest.approx(naive_psi(ref, cur), rel=1e-9, abs=1e-12)
    assert kl_divergence(np.asarray(ref), np.asarray(cur)) == pytest.approx(naive_kl(ref, cur), rel=1e-9, abs=1e-12)
    assert js_distance(np.asarray(ref), np.asarray(cur)) == pytest.approx(naive_js(ref, cur), rel=1e-6, abs=1e-6)


def test_statistics_are_zero_for_equal_histograms_and_grow_with_the_shift():
    ref = np.asarray([100, 200, 300, 400])
    assert psi(ref, ref) == 0 and psi(ref, ref * 3) == pytest.approx(0, abs=1e-5)  # smoothing: ~0
    assert js_distance(ref, ref) == pytest.approx(0, abs=1e-6)
    shifted = [psi(ref, np.roll(ref, k)) for k in (0, 1, 2)]
    assert shifted[0] < shifted[1] < shifted[2]
    assert 0 <= js_distance(ref, np.asarray([0, 0, 0, 1000])) <= 1
    # An empty bin stays finite (the smoothing), where the unsmoothed KL would be infinite.
    assert np.isfinite(kl_divergence(np.asarray([10, 0]), np.asarray([5, 5])))


def cuts_of(values: np.ndarray) -> list[float]:
    return np.unique(np.quantile(values, np.arange(1, 10) / 10)).tolist()


def test_quantile_bins_and_the_missing_bin():
    rng = np.random.default_rng(0)
    values = rng.normal(size=10_000)
    cuts = quantile_cuts(values)
    assert cuts.size == 9
    hist = numeric_histogram(values, cuts)
    assert hist.size == 11 and hist[-1] == 0 and np.allclose(hist[:10], 1000, atol=2)
    with_missing = numeric_histogram(np.asarray([np.nan, -np.inf, 0.0, 5.0]), np.asarray([1.0]))
    assert with_missing.tolist() == [1, 1, 2]
    # A counter that is mostly zero gets fewer, wider bins: the distinct quantiles only.
    assert quantile_cuts(np.asarray([0] * 95 + [1, 2, 3, 4, 5])).tolist() == [0.0]
    # A cluster of near-equal values holding two deciles' share gets no sliver bin of its own: a
    # move of the cluster far smaller than the values' spread leaves PSI small.
    spread, cluster = np.linspace(0.10, 0.20, 7_000), 0.2010 + np.linspace(0, 0.0004, 3_000)
    before, moved = np.append(spread, cluster), np.append(spread, cluster + 0.0011)
    raw = np.asarray(cuts_of(before))
    assert np.sum(raw > 0.2005) >= 2  # the plain deciles split the cluster
    cuts = quantile_cuts(before)
    low, high = np.quantile(before, [0.1, 0.9])
    assert np.all(np.diff(cuts) >= 0.05 * (high - low)) and np.sum(cuts > 0.2005) <= 1
    plain = psi(numeric_histogram(before, raw), numeric_histogram(moved, raw))
    merged = psi(numeric_histogram(before, cuts), numeric_histogram(moved, cuts))
    assert plain > 0.25 > merged, (plain, merged)
    assert quantile_cuts(values, resolution=0.0).tolist() == cuts_of(values)
    # A value equal to a cut goes to the bin above it.
    assert numeric_histogram(np.asarray([0.0, 0.0, 1.0]), np.asarray([0.0])).tolist() == [0, 3, 0]


def test_ks_is_scipys_two_sample_test_over_finite_values():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=500), rng.normal(0.3, size=400)
    statistic, p = ks_test(a, np.append(b, [np.nan, np.nan]))
    ref = stats.ks_2samp(a, b)
    assert statistic == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # The textbook statistic: the largest gap between the two empirical CDFs.
    grid = np.sort(np.concatenate([a, b]))
    gap = np.max(
        np.abs(
            np.searchsorted(np.sort(a), grid, "right") / a.size - np.searchsorted(np.sort(b), grid, "right") / b.size
        )
    )
    assert statistic == pytest.approx(gap)


def test_normed_wasserstein_is_the_area_between_quantile_functions_over_the_reference_sd():
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(size=400), rng.normal(0.5, 2.0, size=400)
    # Equal sizes: W1 is the mean distance between the sorted samples (the quantile functions).
    by_hand = np.mean(np.abs(np.sort(ref) - np.sort(cur))) / ref.std()
    assert normed_wasserstein(ref, cur) == pytest.approx(by_hand, rel=1e-9)
    # Missing values are left out; a mostly-zero counter whose mean halves inside one bin moves.
    assert normed_wasserstein(np.append(ref, np.nan), np.append(cur, np.nan)) == pytest.approx(by_hand, rel=1e-9)
    zeros = np.zeros(600)
    before, after = np.append(zeros, rng.poisson(2.0, 400)), np.append(zeros, rng.poisson(1.0, 400))
    cuts = quantile_cuts(before)
    assert psi(numeric_histogram(before, cuts), numeric_histogram(after, cuts)) < 0.25
    assert normed_wasserstein(before, after) > 0.2
    assert normed_wasserstein(ref, ref) == 0.0 and normed_wasserstein(ref, np.array([np.nan])) == 0.0
    assert normed_wasserstein(np.ones(5), np.ones(5) * 1.01) == pytest.approx(0.01 / 0.001)  # Evidently's floor


def test_mean_shift_is_the_standardized_mean_difference():
    from statsmodels.stats.meta_analysis import effectsize_smd

    rng = np.random.default_rng(5)
    before, after = rng.poisson(0.4, 700).astype(float), rng.poisson(0.2, 500).astype(float)

    def var(x: np.ndarray) -> float:
        m = sum(x) / len(x)
        return sum((v - m) ** 2 for v in x) / (len(x) - 1)

    by_hand = abs(sum(after) / len(after) - sum(before) / len(before)) / math.sqrt((var(before) + var(after)) / 2)
    assert mean_shift(before, after) == pytest.approx(by_hand, rel=1e-9)
    assert mean_shift(after, before) == pytest.approx(by_hand, rel=1e-9)  # symmetric
    # Equal sizes: statsmodels' pooled SD is the same; undo its small-sample (Hedges) correction.
    a, b = before[:500], after
    smd, _ = effectsize_smd(b.mean(), b.std(ddof=1), 500, a.mean(), a.std(ddof=1), 500)
    assert mean_shift(a, b) == pytest.approx(abs(smd) / (1 - 3 / (4 * 1000 - 9)), rel=1e-9)
    # A mostly-zero counter whose mean halves: its deciles barely see it, the mean shift does.
    zeros = np.zeros(900)
    lo, hi = np.append(zeros, rng.poisson(1.0, 100)), np.append(zeros, rng.poisson(2.0, 100))
    cuts = quantile_cuts(hi)
    assert psi(numeric_histogram(hi, cuts), numeric_histogram(lo, cuts)) < 0.1 < mean_shift(hi, lo)
    # Missing values are left out; too few values or no spread: 0.
    assert mean_shift(np.append(before, np.nan), after) == pytest.approx(by_hand, rel=1e-9)
    assert mean_shift(np.ones(5), np.ones(5)) == 0.0 and mean_shift(np.array([1.0]), after) == 0.0


def test_chi_square_against_a_hand_computation():
    shares = {"home": 0.75, "explore": 0.25}
    current = ["home"] * 60 + ["explore"] * 40
    statistic, p = chi_square_test(shares, current)
    expected = np.asarray([0.75, 0.25, 0.0]) * 1e6 + SMOOTHING
    expected = expected / expected.sum() * 100
    observed = np.asarray([60, 40, 0])
    hand = float(((observed - expected) ** 2 / expected).sum())
    assert statistic == pytest.approx(hand, rel=1e-6)
    assert p == pytest.approx(stats.chi2.sf(hand, df=2), rel=1e-6)
    assert categorical_histogram(["a", None, "zz", "a"], ["a", "b"]).tolist() == [2, 0, 2]


def test_reliability_curve_equals_sklearns_quantile_calibration_curve():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 8, size=3000)
    y = (rng.random(3000) < p * 1.2).astype(float)
    curve = reliability_curve(y, p, n_bins=10)
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    np.testing.assert_allclose(curve["observed"], observed)
    np.testing.assert_allclose(curve["predicted"], predicted)
    assert sum(curve["count"]) == 3000


def test_ece_by_chance_is_what_calibrated_predictions_exceed_that_often():
    """Fresh label sets drawn from the predictions (calibrated by construction) exceed the 0.9
    quantile about 10 % of the time; labels from predictions 0.05 too high exceed it always; and
    the chance level shrinks with the rows (about as 1 / sqrt(n))."""
    rng = np.random.default_rng(11)
    p = rng.beta(2, 10, size=1000)
    level = ece_by_chance(p, quantile=0.9, draws=400, seed=1)
    fresh = np.array([expected_calibration_error((rng.random(p.size) < p).astype(float), p) for _ in range(1000)])
    assert 0.07 <= (fresh > level).mean() <= 0.13
    shifted = np.clip(p - 0.05, 0, 1)
    worse = [expected_calibration_error((rng.random(p.size) < shifted).astype(float), p) for _ in range(50)]
    assert min(worse) > level
    big = rng.beta(2, 10, size=16_000)
    assert ece_by_chance(big, quantile=0.9, draws=100) < 0.4 * level  # 16x the rows: about a quarter
