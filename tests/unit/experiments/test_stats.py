"""Each statistic against a reference: statsmodels, scipy, or a slow obvious computation."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import integrate, stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from feedrec.experiments import stats as xs


def _users(rng: np.random.Generator, n: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    impressions = rng.integers(1, 40, n)
    p = np.clip(rng.normal(ctr, 0.05, n), 0.001, 0.999)
    return rng.binomial(impressions, p).astype(float), impressions.astype(float)


def test_the_delta_method_equals_a_cluster_robust_variance_by_user():
    rng = np.random.default_rng(0)
    clicks, impressions = _users(rng, 400, 0.1)
    est = xs.ratio_estimate(clicks, impressions)
    # Per impression: one row per impression, clicked or not; the mean is clicks/impressions, and
    # the cluster-robust (by user, CR0) variance of that mean is the delta method's (ddof 0).
    user = np.repeat(np.arange(clicks.size), impressions.astype(int))
    y = np.concatenate([np.r_[np.ones(int(c)), np.zeros(int(m - c))] for c, m in zip(clicks, impressions, strict=True)])
    fit = sm.OLS(y, np.ones(y.size)).fit(cov_type="cluster", cov_kwds={"groups": user, "use_correction": False})
    n = clicks.size
    assert est.mean == pytest.approx(float(fit.params[0]), rel=1e-12)
    assert est.var * (n - 1) / n == pytest.approx(float(fit.bse[0] ** 2), rel=1e-9)


def test_the_delta_method_interval_covers_the_true_ctr_at_its_level():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(400):
        clicks, impressions = _users(rng, 300, 0.1)
        est = xs.ratio_estimate(clicks, impressions)
        half = 1.96 * np.sqrt(est.var)
        # The population ratio: E[clicks] / E[impressions] = 0.1 (p is symmetric around 0.1, far from the clips).
        covered += abs(est.mean - 0.1) <= half
    assert 0.92 <= covered / 400 <= 0.98


def test_compare_is_statsmodels_unequal_variance_z_test_with_a_hand_computed_interval():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 2.0, 3000), rng.normal(1.1, 2.5, 2500)
    result = xs.compare(xs.estimate(a), xs.estimate(b))
    z, p = CompareMeans(DescrStatsW(b), DescrStatsW(a)).ztest_ind(usevar="unequal")
    assert result["p_value"] == pytest.approx(float(p), rel=1e-6)
    assert result["lift"] / result["se"] == pytest.approx(float(z), rel=1e-3)  # ddof 1 here, 0 there
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert result["ci_low"] == pytest.approx(b.mean() - a.mean() - 1.959964 * se, rel=1e-5)
    assert result["relative_lift"] == pytest.approx(b.mean() / a.mean() - 1)


def test_cuped_with_one_covariate_is_the_textbook_adjustment():
    rng = np.random.default_rng(3)
    x = [rng.normal(5, 2, 2000), rng.normal(5, 2, 2000)]
    y = [2 + 0.8 * x[0] + rng.normal(0, 1, 2000), 2.2 + 0.8 * x[1] + rng.normal(0, 1, 2000)]
    adjusted, reduction = xs.cuped(y, [xa[:, None] for xa in x], per_arm=False)
    # Textbook: theta = cov(x, y) / var(x) over all users; y - theta (x - mean x).
    xall, yall = np.concatenate(x), np.concatenate(y)
    theta = np.cov(xall, yall)[0, 1] / np.var(xall, ddof=1)
    for ya, xa, got in zip(y, x, adjusted, strict=True):
        np.testing.assert_allclose(got, ya - theta * (xa - xall.mean()), rtol=1e-10)
    within = sum(((ya - ya.mean()) ** 2).sum() for ya in y)
    assert reduction == pytest.approx(1 - sum(((g - g.mean()) ** 2).sum() for g in adjusted) / within)
    assert reduction > 0.6  # x explains most of y here
    # The adjusted lift stays unbiased: near the true 0.2, with a tighter interval than without.
    plain = xs.compare(xs.estimate(y[0]), xs.estimate(y[1]))
    cup = xs.compare(xs.estimate(adjusted[0]), xs.estimate(adjusted[1]))
    assert abs(cup["lift"] - 0.2) < 3 * cup["se"] and cup["se"] < 0.7 * plain["se"]


def test_cuped_with_several_covariates_is_least_squares():
    rng = np.random.default_rng(4)
    x = [rng.normal(size=(500, 3)), rng.normal(size=(600, 3))]
    y = [xa @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=xa.shape[0]) for xa in x]
    adjusted, _ = xs.cuped(y, x, per_arm=False)
    xall, yall = np.concatenate(x), np.concatenate(y)
    fit = sm.OLS(yall, sm.add_constant(xall)).fit()
    theta = fit.params[1:]
    np.testing.assert_allclose(adjusted[1], y[1] - (x[1] - xall.mean(0)) @ theta, rtol=1e-8)


def test_cuped_per_arm_is_the_fully_interacted_regression():
    """Lin (2013): the lift of per-arm slopes centred at the overall covariate mean is the treatment
    coefficient of y ~ 1 + T + (x - mean x) + T (x - mean x) (statsmodels' OLS)."""
    rng = np.random.default_rng(5)
    x = [rng.normal(size=(700, 2)), rng.normal(size=(800, 2))]
    y = [x[0] @ np.array([1.0, 0.5]) + rng.normal(size=700), 0.3 + x[1] @ np.array([2.0, 0.5]) + rng.normal(size=800)]
    adjusted, reduction = xs.cuped(y, x)
    xall = np.concatenate(x)
    centred = xall - xall.mean(0)
    t = np.r_[np.zeros(700), np.ones(800)]
    design = np.column_stack([np.ones(t.size), t, centred, t[:, None] * centred])
    fit = sm.OLS(np.concatenate(y), design).fit()
    assert adjusted[1].mean() - adjusted[0].mean() == pytest.approx(fit.params[1], rel=1e-9)
    # The treatment doubled the first slope: one pooled slope fits neither arm as well.
    assert reduction > xs.cuped(y, x, per_arm=False)[1] + 0.02


def test_srm_is_scipys_chi_square():
    stat, p = xs.srm([10_200, 9_800], [50, 50])
    ref = stats.chisquare([10_200, 9_800], [10_000, 10_000])
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))
    # 51/49 over 20,000 users is chi2 = 8, p = 0.005: not flagged at 0.001 (see BENCHMARKS); over 60,000 it is.
    assert p == pytest.approx(0.00468, abs=1e-4) and xs.srm([30_600, 29_400], [1, 1])[1] < 0.001
    assert xs.srm([7_000, 3_100], [70, 30])[1] > 0.05  # the weights are the expectation


def test_the_msprt_ratio_is_the_normal_mixture_integral():
    for lift, var, tau2 in ((0.01, 1e-4, 4e-4), (-0.03, 2e-4, 1e-4), (0.0, 1e-4, 1e-3)):

        def integrand(theta: float, lift: float = lift, var: float = var, tau2: float = tau2) -> float:
            ratio = stats.norm.pdf(lift, theta, np.sqrt(var)) / stats.norm.pdf(lift, 0, np.sqrt(var))
            return ratio * stats.norm.pdf(theta, 0, np.sqrt(tau2))

        reference, _ = integrate.quad(integrand, -1, 1, points=[0.0], limit=200)
        assert xs.msprt_ratio(lift, var, tau2) == pytest.approx(reference, rel=1e-6)


def test_the_always_valid_p_keeps_its_level_under_24_looks_where_peeking_does_not():
    """A/A Monte Carlo: users arrive over 24 looks; reject when any look is significant."""
    rng = np.random.default_rng(5)
    runs, looks, per_look = 2000, 24, 50
    always = peeked = 0
    for _ in range(runs):
        a = rng.normal(1.0, 1.0, (looks, per_look)).cumsum(0)  # cumulative sums per look
        b = rng.normal(1.0, 1.0, (looks, per_look)).cumsum(0)
        n = per_look * np.arange(1, looks + 1)
        lift = (b.sum(1) - a.sum(1)) / n
        var = 2.0 / n
        p_fixed = 2 * stats.norm.sf(np.abs(lift) / np.sqrt(var))
        peeked += bool((p_fixed < 0.05).any())
        always += bool((xs.always_valid_p(lift, var, tau2=0.05**2) < 0.05).any())
    assert always / runs <= 0.05 + 0.01
    assert peeked / runs > 0.15


def test_the_decision_and_the_minimum_detectable_effect():
    assert xs.sequential_decision(0.2, 1.0, higher_is_better=True) == "continue"
    assert xs.sequential_decision(0.01, 1.0, higher_is_better=True) == "ship"
    assert xs.sequential_decision(0.01, 1.0, higher_is_better=False) == "stop"
    est = xs.Estimate(0.1, 1e-6, 1000)
    assert xs.mde(est, est) == pytest.approx((1.959964 + 0.841621) * np.sqrt(2e-6), rel=1e-5)


def test_the_preference_test_is_scipys_binomial_test():
    assert xs.binomial_preference(60, 40) == pytest.approx(stats.binomtest(60, 100).pvalue)
    assert xs.binomial_preference(0, 0) == 1.0


def test_the_paired_credit_test_is_scipys_paired_t_test_and_a_t_by_hand():
    rng = np.random.default_rng(3)
    a, b = rng.poisson(1.2, 300), rng.poisson(1.0, 300)
    got = xs.paired_credit(a, b)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / np.sqrt(d.size))
    assert got["difference"] == pytest.approx(d.mean())
    assert got["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), d.size - 1))
    assert got["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert xs.paired_credit(np.array([2, 0]), np.array([2, 0]))["p_value"] == 1.0  # nobody leans
    assert xs.paired_credit(np.array([1, 1]), np.array([0, 0]))["p_value"] == 0.0  # all lean alike


def test_the_paired_credit_test_holds_its_level_under_team_draft_of_equal_rankings():
    """Two equally good rankings: team draft gives each pair of slots to (A, B) or (B, A) by a coin;
    clicks depend on the user and the slot, never on the team. 400 populations at alpha 0.05."""
    rng = np.random.default_rng(11)
    rejected = []
    for _ in range(400):
        users, slots = 500, 10
        propensity = rng.beta(1, 6, users)[:, None] * 0.7 ** np.arange(slots)  # users differ; position bias
        clicks = rng.random((users, slots)) < propensity
        first_is_a = rng.random((users, slots // 2)) < 0.5
        team_a = np.repeat(first_is_a, 2, axis=1) ^ np.tile([False, True], slots // 2)
        a, b = (clicks & team_a).sum(axis=1), (clicks & ~team_a).sum(axis=1)
        rejected.append(xs.paired_credit(a, b)["p_value"] < 0.05)
    assert 0.025 <= np.mean(rejected) <= 0.08
