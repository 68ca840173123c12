"""The statistics of an online experiment, as pure functions over per-user arrays.

The unit of randomization is the user, so every variance is a user-level one: a ratio metric
(CTR: clicks over impressions) is a ratio of two per-user sums, its variance from the delta
method (Deng et al., 2018), equal to a cluster-robust (by user) variance of the per-impression
mean. CUPED (Deng et al., 2013) subtracts the part of each user's metric that their
pre-experiment engagement predicts (a least-squares slope fitted within each arm: Lin, 2013). The sequential
test is the mixture SPRT of Johari et al. (2017): an always-valid p-value, so looking every hour
does not inflate the false-positive rate. Distributions and tests come from scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A metric's estimate in one arm: ``mean`` and the variance of that estimate, over ``n`` users."""

    mean: float
    var: float
    n: int


def linearize(num: np.ndarray, den: np.ndarray | None) -> np.ndarray:
    """Per-user values whose mean is the metric and whose sample variance over n is its variance:
    for a ratio sum(num)/sum(den), the delta method's influence values R + (num - R den)/mean(den);
    for a per-user mean, the values themselves."""
    num = np.asarray(num, np.float64)
    if den is None:
        return num
    den = np.asarray(den, np.float64)
    mean_den = den.mean()
    if mean_den <= 0:
        return np.full_like(num, np.nan)
    ratio = num.sum() / den.sum()
    return ratio + (num - ratio * den) / mean_den


def estimate(values: np.ndarray) -> Estimate:
    """The mean of (linearized) per-user values and its variance, var(values) / n (ddof 1)."""
    n = int(values.size)
    if n < 2:
        return Estimate(float(values.mean()) if n else float("nan"), float("nan"), n)
    return Estimate(float(values.mean()), float(values.var(ddof=1) / n), n)


def ratio_estimate(num: np.ndarray, den: np.ndarray | None) -> Estimate:
    """``sum(num) / sum(den)`` (or the mean of ``num``) with its delta-method variance."""
    return estimate(linearize(num, den))


def compare(control: Estimate, treatment: Estimate, *, alpha: float = 0.05) -> dict[str, float]:
    """Treatment against control: absolute lift with its (1 - alpha) interval and two-sided
    z-test p-value, and the relative lift (delta method for its interval)."""
    lift = treatment.mean - control.mean
    var = treatment.var + control.var
    z = stats.norm.ppf(1 - alpha / 2)
    se = float(np.sqrt(var)) if var > 0 else float("nan")
    p = float(2 * stats.norm.sf(abs(lift) / se)) if se > 0 else float("nan")
    c = control.mean
    rel = lift / c if c else float("nan")
    rel_se = float(np.sqrt(treatment.var / c**2 + treatment.mean**2 * control.var / c**4)) if c else float("nan")
    out = {
        "control": control.mean,
        "treatment": treatment.mean,
        "lift": lift,
        "ci_low": lift - z * se,
        "ci_high": lift + z * se,
        "p_value": p,
        "relative_lift": rel,
        "relative_ci_low": rel - z * rel_se,
        "relative_ci_high": rel + z * rel_se,
        "se": se,
    }
    return {k: float(v) for k, v in out.items()}


def cuped(y: list[np.ndarray], x: list[np.ndarray], *, per_arm: bool = True) -> tuple[list[np.ndarray], float]:
    """CUPED over arms: ``y[a]`` (n_a,) per-user (linearized) values, ``x[a]`` (n_a, p) their
    pre-experiment covariates. Returns each arm's adjusted values y - (x - mean x) theta, centred
    at the covariates' mean over all users, and the variance reduction 1 - Var(adjusted) / Var(y)
    (within arms, pooled). theta is the least-squares slope: fitted within each arm (``per_arm``,
    the default: Lin's (2013) fully interacted regression adjustment, whose lift is the treatment
    coefficient of y ~ T + x + T x; never less efficient than one slope, and more when the
    treatment changes how engagement follows the covariates), or one slope pooled over all users
    (Deng et al. 2013). An arm with too few users for its own slope takes the pooled one."""
    xs = np.concatenate(x).astype(np.float64)
    ys = np.concatenate(y).astype(np.float64)
    mean_x = xs.mean(axis=0)
    pooled = np.linalg.lstsq(xs - mean_x, ys - ys.mean(), rcond=None)[0]

    def slope(ya: np.ndarray, xa: np.ndarray) -> np.ndarray:
        if not per_arm or ya.size < xa.shape[1] + 2:
            return pooled
        return np.linalg.lstsq(xa - xa.mean(axis=0), ya - ya.mean(), rcond=None)[0]

    adjusted = [ya - (xa - mean_x) @ slope(ya, xa) for ya, xa in zip(y, x, strict=True)]
    within = sum(float(((ya - ya.mean()) ** 2).sum()) for ya in y)
    within_adj = sum(float(((a - a.mean()) ** 2).sum()) for a in adjusted)
    return adjusted, 1 - within_adj / within if within > 0 else 0.0


def srm(counts: list[int], weights: list[float]) -> tuple[float, float]:
    """Sample-ratio mismatch: chi-square of the arms' user counts against their weights; (stat, p)."""
    observed = np.asarray(counts, np.float64)
    w = np.asarray(weights, np.float64)
    expected = w / w.sum() * observed.sum()
    result = stats.chisquare(observed, expected)
    return float(result.statistic), float(result.pvalue)


def msprt_log_ratio(lift: float, var: float, tau2: float) -> float:
    """log of the mixture likelihood ratio of H1 (lift ~ N(0, tau2)) to H0 (lift = 0) for an
    observed ``lift`` with sampling variance ``var`` (a normal approximation)."""
    if not (var > 0 and tau2 > 0):
        return 0.0
    return float(0.5 * np.log(var / (var + tau2)) + tau2 * lift**2 / (2 * var * (var + tau2)))


def msprt_ratio(lift: float, var: float, tau2: float) -> float:
    """The mixture likelihood ratio itself (inf past what a float holds)."""
    log_ratio = msprt_log_ratio(lift, var, tau2)
    return float(np.exp(log_ratio)) if log_ratio < 709 else float("inf")


def always_valid_p(lifts: np.ndarray, variances: np.ndarray, tau2: float) -> np.ndarray:
    """The always-valid p-value after each look: min over looks so far of 1 / Lambda, capped at 1.
    Rejecting when it drops below alpha keeps the false-positive rate at alpha however often one looks."""
    logs = np.asarray([msprt_log_ratio(float(d), float(v), tau2) for d, v in zip(lifts, variances, strict=True)])
    return np.minimum.accumulate(np.exp(-np.maximum(logs, 0.0)))


TAU_RELATIVE = 0.05  # the mSPRT is tuned for effects of about 5 % of the control's mean


def mixture_variance(control_mean: float, tau_relative: float = TAU_RELATIVE) -> float:
    """The mSPRT's mixture variance tau^2 = (tau_relative x |control mean|)^2."""
    return float((tau_relative * abs(control_mean)) ** 2)


def sequential_p(
    lifts: np.ndarray, variances: np.ndarray, control_mean: float, tau_relative: float = TAU_RELATIVE
) -> np.ndarray:
    """``always_valid_p`` at each look, with ``mixture_variance``; a look without an estimate yet
    (NaN: too few users) counts as no evidence."""
    return always_valid_p(np.nan_to_num(lifts), np.nan_to_num(variances), mixture_variance(control_mean, tau_relative))


def sequential_decision(p_value: float, lift: float, *, higher_is_better: bool, alpha: float = 0.05) -> str:
    """continue (not significant yet), ship (significantly better) or stop (significantly worse)."""
    if not p_value < alpha:
        return "continue"
    return "ship" if (lift > 0) == higher_is_better else "stop"


def mde(control: Estimate, treatment: Estimate, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest absolute lift this sample detects with ``power`` at two-sided ``alpha``."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * np.sqrt(control.var + treatment.var))


def binomial_preference(wins_a: int, wins_b: int) -> float:
    """Two-sided binomial test p-value of ``wins_a`` out of ``wins_a + wins_b`` against 1/2."""
    n = wins_a + wins_b
    return float(stats.binomtest(wins_a, n, 0.5).pvalue) if n else 1.0


def paired_credit(a: np.ndarray, b: np.ndarray, *, alpha: float = 0.05) -> dict[str, float]:
    """The mean per-user difference of the clicks credited to team A and to team B (every exposed
    user, those without clicks as 0 - 0), its ``1 - alpha`` interval and two-sided p-value: a paired
    t-test (``scipy.stats.ttest_rel``). Unlike the sign test (``binomial_preference``) it weighs a
    user by how far their clicks lean, not only which way; under the null of team draft (two
    equally good rankings) each user's difference is symmetric about 0 either way."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float((a - b).mean()) if a.size else 0.0
    if a.size < 2 or not np.any(a != b):  # no user leans either way: nothing to test
        return {"difference": diff, "ci_low": diff, "ci_high": diff, "p_value": 1.0}
    if np.ptp(a - b) == 0:  # every user leans by the same amount: a difference with no variance
        return {"difference": diff, "ci_low": diff, "ci_high": diff, "p_value": 0.0}
    result = stats.ttest_rel(a, b)
    interval = result.confidence_interval(1 - alpha)
    return {
        "difference": diff,
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "p_value": float(result.pvalue),
    }
