"""Drift statistics: how far a current distribution has moved from a reference one. Pure functions.

Binning and smoothing, stated once: a numeric feature is cut at the reference's deciles
(``quantile_cuts``: the distinct values among the 10 %, ..., 90 % quantiles, so a counter that is
mostly zero gets fewer, wider bins, and none within 5 % of the 10-90 % range of the one below, so
a cluster of near-equal values gets no sliver bin that an immaterial move empties), with one more
bin for missing values (NaN); a categorical feature has a bin per reference category plus one for
anything unseen. Before a divergence is taken, every bin of both histograms gets ``smoothing`` =
0.5 pseudo-counts (additive, Jeffreys' prior), so an empty bin gives a finite PSI and KL rather
than infinity.

- PSI (population stability index) = sum (c - r) ln(c / r) over the bins' shares; the
  conventional reading: < 0.1 stable, 0.1-0.2 (or 0.25) moderate, above it a major shift
  (``monitor.psi`` defaults to 0.2).
- KL = KL(current || reference) = sum c ln(c / r), in nats (``scipy.stats.entropy``).
- JS = the Jensen-Shannon *distance* (the square root of the divergence), base 2, so it lies in
  [0, 1] (``scipy.spatial.distance.jensenshannon``).
- Normed Wasserstein (numeric only, no bins) = the earth mover's distance between the two samples'
  finite values (``scipy.stats.wasserstein_distance``) over the reference's standard deviation:
  how far, in the reference's own spread, the values moved. Evidently's default drift test for a
  numeric column with over 1,000 rows, at 0.1. It sees what a decile PSI cannot: a counter that is
  mostly zero has few bins, and its mean can fall by half inside them.
- Mean shift (numeric only, no bins) = the absolute standardized mean difference between two
  samples (the covariate-balance statistic; ``mean_shift``). The monitor takes it between the
  window and the span of equal length just before it: an abrupt move of a counter's mean, which
  neither the deciles nor the day-long reference show well (the counter's afternoon differs from
  its night). Tested against a naive loop and statsmodels' ``effectsize_smd``.

scipy computes KL and JS, and the two-sample tests (``scipy.stats.ks_2samp``, ``chisquare``);
PSI is not in scipy and is four lines here, tested against a naive loop. Evidently computes the
same statistics, but as a report framework over pandas frames with a heavy dependency tree; the
monitor needs the numbers, over histograms it has already built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from feedrec.metrics.classification import expected_calibration_error

SMOOTHING = 0.5


#: Quantile cuts closer to the previous kept cut than this share of the values' 10-90 % range are
#: dropped (``quantile_cuts``).
RESOLUTION = 0.05


def quantile_cuts(values: np.ndarray, *, bins: int = 10, resolution: float = RESOLUTION) -> np.ndarray:
    """The inner cut points of ``bins`` quantile bins of ``values`` (NaN ignored), distinct only,
    and none closer than ``resolution`` times the 10-90 % range to the cut below it (kept, from the
    lowest up). A cluster of near-equal values that holds more than a bin's share (one creator's
    CTR, served in a fifth of the feeds) would otherwise get a sliver bin of its own, which an
    immaterial move of the cluster (0.001 in a CTR) empties: PSI 1.0 on an unchanged world
    (docs/BENCHMARKS.md, monitoring)."""
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return np.empty(0)
    cuts = np.unique(np.quantile(finite, np.arange(1, bins) / bins))
    low, high = np.quantile(finite, [0.1, 0.9])
    width = resolution * (high - low)
    kept = [float(c) for c in cuts[:1]]
    for cut in cuts[1:]:
        if cut - kept[-1] >= width:
            kept.append(float(cut))
    return np.asarray(kept)


def numeric_histogram(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Counts per bin: ``len(cuts) + 1`` bins split at ``cuts`` (a value equal to a cut goes to the
    bin above it), then one bin of missing values (NaN or infinite)."""
    v = np.asarray(values, np.float64)
    finite = np.isfinite(v)
    idx = np.searchsorted(np.asarray(cuts, np.float64), v[finite], side="right")
    counts = np.bincount(idx, minlength=len(cuts) + 1).astype(np.float64)
    return np.append(counts, float((~finite).sum()))


def categorical_histogram(values: Sequence[str | None], categories: Sequence[str]) -> np.ndarray:
    """Counts per category of ``categories``, then one bin for values outside them (None included)."""
    position = {c: n for n, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 1)
    for value in values:
        counts[position.get(value, len(categories)) if value is not None else len(categories)] += 1
    return counts


def _shares(counts: np.ndarray, smoothing: float) -> np.ndarray:
    c = np.asarray(counts, np.float64) + smoothing
    return c / c.sum()


def psi(reference: np.ndarray, current: np.ndarray, *, smoothing: float = SMOOTHING) -> float:
    """Population stability index of two histograms over the same bins (counts)."""
    r, c = _shares(reference, smoothing), _shares(current, smoothing)
    return float(np.sum((c - r) * np.log(c / r)))


def kl_divergence(reference: np.ndarray, current: np.ndarray, *, smoothing: float = SMOOTHING) -> float:
    """KL(current || reference) in nats, of two histograms over the same bins (counts)."""
    return float(stats.entropy(_shares(current, smoothing), _shares(reference, smoothing)))


def js_distance(reference: np.ndarray, current: np.ndarray, *, smoothing: float = SMOOTHING) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two histograms over the same bins (counts)."""
    return float(jensenshannon(_shares(reference, smoothing), _shares(current, smoothing), base=2))


def normed_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 distance of the finite values of two samples, in units of the reference's
    standard deviation (at least 0.001, as Evidently norms it); 0 when either has no finite value."""
    a = np.asarray(reference, np.float64)
    b = np.asarray(current, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return 0.0
    return float(stats.wasserstein_distance(a, b)) / max(float(a.std()), 0.001)


def mean_shift(before: np.ndarray, after: np.ndarray) -> float:
    """The absolute standardized mean difference of the finite values of two samples, |mean(after)
    - mean(before)| / sqrt((var(before) + var(after)) / 2) (sample variances): the covariate
    balance statistic (Austin 2009; below 0.1 is conventionally negligible). It sees a counter's
    mean move where quantile bins cannot (most values zero: the deciles collapse into a few bins).
    0 when either sample has fewer than two finite values or both are constant."""
    a = np.asarray(before, np.float64)
    b = np.asarray(after, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return 0.0
    spread = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return float(abs(b.mean() - a.mean()) / spread) if spread > 0 else 0.0


def ks_test(reference_sample: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value) over the finite values of each."""
    a = np.asarray(reference_sample, np.float64)
    b = np.asarray(current, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    result = stats.ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def chi_square_test(reference_shares: Mapping[str, float], current: Sequence[str | None]) -> tuple[float, float]:
    """Chi-square goodness of fit of ``current``'s categories to the reference's shares (smoothed
    as above, so a category the reference never saw does not divide by zero): (statistic, p-value)."""
    categories = list(reference_shares)
    observed = categorical_histogram(current, categories)
    if observed.sum() == 0:
        return float("nan"), float("nan")
    expected = _shares(np.append([reference_shares[c] for c in categories], 0.0) * 1e6, SMOOTHING)
    result = stats.chisquare(observed, expected * observed.sum())
    return float(result.statistic), float(result.pvalue)


def ece_by_chance(y_prob: np.ndarray, *, quantile: float = 0.99, draws: int = 200, seed: int = 0) -> float:
    """The ECE that perfectly calibrated predictions ``y_prob`` reach by chance at this many rows:
    the ``quantile`` of ``expected_calibration_error`` over ``draws`` label sets drawn from the
    predictions themselves (a parametric bootstrap). ECE is biased upward by the bins' noise, about
    as 1 / sqrt(rows per bin): an hour of logged feeds cannot tell a few points of it from a change."""
    p = np.clip(np.asarray(y_prob, np.float64), 0.0, 1.0)
    if p.size == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    chance = [expected_calibration_error((rng.random(p.size) < p).astype(np.float64), p) for _ in range(draws)]
    return float(np.quantile(chance, quantile))


def reliability_curve(y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 10) -> dict[str, list[float]]:
    """Observed click rate against mean prediction in ``n_bins`` quantile bins of the predictions
    (as ``sklearn.calibration.calibration_curve(strategy="quantile")``), with each bin's count."""
    y = np.asarray(y_true, np.float64)
    p = np.asarray(y_prob, np.float64)
    if y.size == 0:
        return {"predicted": [], "observed": [], "count": []}
    edges = np.percentile(p, np.linspace(0, 1, n_bins + 1) * 100)
    idx = np.searchsorted(edges[1:-1], p)
    count = np.bincount(idx, minlength=n_bins)
    keep = count > 0
    predicted = np.bincount(idx, weights=p, minlength=count.size)[keep] / count[keep]
    observed = np.bincount(idx, weights=y, minlength=count.size)[keep] / count[keep]
    return {
        "predicted": [float(v) for v in predicted],
        "observed": [float(v) for v in observed],
        "count": [int(v) for v in count[keep]],
    }
