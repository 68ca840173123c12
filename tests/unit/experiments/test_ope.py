"""Off-policy estimators on a synthetic position-based world whose truth is known, and the
exploration's propensity table against exact enumeration."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from feedrec.experiments.explore import marginals, sample
from feedrec.experiments.ope import Logged, OpeError, _per_request, estimate

TOP, K, T = 8, 4, 1.5


def test_the_propensity_table_matches_exact_enumeration_and_the_sampler():
    w = np.exp(-np.arange(5) / 0.8)
    exact = np.zeros((5, 3))
    for perm in itertools.permutations(range(5), 3):
        p, left = 1.0, w.sum()
        for r in perm:
            p *= w[r] / left
            left -= w[r]
        for j, r in enumerate(perm):
            exact[r, j] += p
    table = marginals(5, 3, 0.8)
    np.testing.assert_allclose(table, exact, atol=4e-3)
    rng = random.Random(0)
    drawn = np.zeros((5, 3))
    for _ in range(20_000):
        for j, r in enumerate(sample(5, 3, 0.8, rng)):
            drawn[r, j] += 1
    np.testing.assert_allclose(drawn / 20_000, exact, atol=0.015)


def _world(n: int, seed: int) -> tuple[Logged, float]:
    """Requests by 300 users: TOP candidates with relevance r, examination theta_j; the logging
    bundle ranks by a noisy score; the policy ranks by another noisy score. Returns the log and
    the policy's true CTR (mean over requests of sum_j theta_j r(sigma_j) / K)."""
    rng = np.random.default_rng(seed)
    theta = 1 / np.log2(np.arange(K) + 2)
    table = marginals(TOP, K, T)
    users = rng.integers(0, 300, n)
    shown = np.zeros((n, K), np.int64)
    target = np.zeros((n, K), np.int64)
    clicks = np.zeros((n, K))
    scores = np.zeros((n, TOP))
    truth = 0.0
    for row in range(n):
        rel = np.sort(rng.beta(2, 6, TOP))[::-1]  # by the logging bundle's rank: rank 0 is the most relevant
        scores[row] = rel * 0.9  # its calibrated score, a little low (the reward model is not exact)
        order = sample(TOP, K, T, random.Random(int(rng.integers(1 << 30))))
        shown[row] = order
        clicks[row] = rng.random(K) < theta * rel[order]
        policy = np.argsort(-(rel + rng.normal(0, 0.08, TOP)))[:K]
        target[row] = policy
        truth += float(theta @ rel[policy]) / K
    log = Logged(users, shown, target, clicks, scores, [table] * n, np.full(n, float(K)), 300)
    return log, truth / n


def test_ips_is_the_obvious_loop():
    log, _ = _world(300, 1)
    per = _per_request(log)
    table = log.tables[0]
    for row in range(20):
        want = sum(
            log.clicks[row, j] / table[log.shown_rank[row, j], j]
            for j in range(K)
            if log.shown_rank[row, j] == log.target_rank[row, j]
        )
        assert per["ips"][row] == pytest.approx(want)


def test_every_estimator_recovers_the_policys_ctr_and_its_interval_covers_it():
    covered = {name: 0 for name in ("ips", "snips", "dr", "pbm")}
    errors = {name: [] for name in covered}
    reps = 20
    for seed in range(reps):
        log, truth = _world(3000, seed)
        result = estimate(log, boot=300, seed=seed)
        for name, e in result["estimators"].items():
            covered[name] += e["ci_low"] <= truth <= e["ci_high"]
            errors[name].append(e["ctr"] / truth - 1)
    for name in covered:
        assert abs(np.mean(errors[name])) < 0.03, name  # unbiased (within the noise of 20 repetitions)
        assert covered[name] >= 16, (name, covered[name])  # 95 % intervals: at least 16 of 20
    assert np.std(errors["pbm"]) < np.std(errors["ips"])  # the click model buys variance
    assert result["diagnostics"]["support"] == 1.0 and 0 < result["diagnostics"]["matched"] < 1


def test_unknown_estimators_are_refused():
    log, _ = _world(10, 0)
    with pytest.raises(OpeError, match="unknown estimator 'ipw'"):
        estimate(log, ("ipw",))


def test_the_candidates_merge_the_bundles_ranking_with_the_shadow_slates_in_turns():
    from feedrec.experiments.explore import merge

    assert merge(["a", "b", "c", "d"], [["x", "a", "y"]], 5) == ["a", "x", "b", "c", "y"]
    assert merge(["a", "b"], [["c"], ["d", "e"]], 10) == ["a", "c", "d", "b", "e"]
    assert merge(["a"], [], 3) == ["a"]


def test_the_examination_curve_is_harvested_from_the_exploration():
    log, _ = _world(6000, 3)
    theta = np.asarray(estimate(log, ("pbm",), boot=10)["diagnostics"]["theta"])
    want = 1 / np.log2(np.arange(K) + 2)
    np.testing.assert_allclose(theta, want / want[0], rtol=0.08)


def test_a_bootstrap_draw_is_the_estimate_of_the_users_drawn_with_the_curve_fitted_again():
    """The reference: a log built by repeating each user's requests as often as the draw picks the
    user (a new user id per copy), estimated from scratch, examination curve and all."""
    from feedrec.experiments.ope import _draws

    log, _ = _world(600, 5)
    per = _per_request(log)
    counts = np.random.default_rng(1).multinomial(log.n_users, np.full(log.n_users, 1 / log.n_users), size=3)
    drawn = _draws(log, per, counts, ("ips", "snips", "dr", "pbm"))
    for b, count in enumerate(counts):
        rows, users = [], []
        for u in np.nonzero(count)[0]:
            mine = np.nonzero(log.users == u)[0]
            for copy in range(count[u]):
                rows.extend(mine)
                users.extend([f"{u}/{copy}"] * len(mine))
        ids = {name: i for i, name in enumerate(dict.fromkeys(users))}
        rows_ = np.asarray(rows)
        copy = Logged(
            np.asarray([ids[x] for x in users]), log.shown_rank[rows_], log.target_rank[rows_], log.clicks[rows_],
            log.scores[rows_], [log.tables[r] for r in rows_], log.slots[rows_], len(ids),
        )  # fmt: skip
        again = estimate(copy, boot=2)["estimators"]
        theta_moved = per["diagnostics"]["theta"] != _per_request(copy)["diagnostics"]["theta"]
        assert theta_moved  # the draw's curve is its own
        for name in drawn:
            assert drawn[name][b] == pytest.approx(again[name]["ctr"], rel=1e-9), name
