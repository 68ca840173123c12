"""The oracle and the online metrics, against brute force and naive counts."""

from __future__ import annotations

import itertools

import numpy as np

from feedrec.config import SimulatorConfig
from feedrec.data.simulator import simulate
from feedrec.data.world import examine, sigmoid
from feedrec.loop.metrics import LoopMetrics
from feedrec.loop.oracle import oracle_slate
from feedrec.loop.traffic import TrafficConfig, parse_time, schedule

TINY = SimulatorConfig(n_users=6, n_items=9, days=2, seed=3, live_days=1, sessions_per_user_day=2.0)


def test_the_oracle_slate_is_the_best_of_every_slate_by_brute_force():
    world = simulate(TINY).world
    k = 3
    for user in range(world.n_users):
        t = world.t_end + 3600
        items, p = oracle_slate(world, user, t, k)
        done = set(world.engaged.row(user)[0].tolist())
        available = [i for i in world.published(t).tolist() if i not in done]
        best = 0.0
        for slate in itertools.permutations(available, k):  # every ordered k-slate
            arr = np.asarray(slate)
            seen = world.exposures.get(user, arr)
            rel = sigmoid(world.logit(np.full(k, user), arr, np.full(k, t), seen))
            best = max(best, float((examine(np.arange(k)) * rel).sum()))
        assert np.isclose(p.sum(), best)
        assert not set(items.tolist()) & done  # nothing the user already engaged with or hid


def test_metrics_match_naive_counts():
    m = LoopMetrics()
    rng = np.random.default_rng(0)
    rows = []
    for n in range(40):
        shown = rng.choice(50, 5, replace=False)
        click = rng.random(5) < 0.3
        reaction = {
            "click": click,
            "like": click & (rng.random(5) < 0.5),
            "share": np.zeros(5, bool),
            "hide": ~click & (rng.random(5) < 0.1),
            "dwell": np.where(click, 10.0, 0.0),
            "p_click": rng.random(5) * 0.4,
        }
        oracle = rng.random(5) * 0.5 + 0.4
        version = "a" if n % 2 else "b"
        m.feed(version, 3600 * (n // 10), float(n), shown, 5, reaction, oracle)
        rows.append((version, shown, reaction, oracle))
    out = m.summary(catalogue_size=100)["by_version"]
    for version in ("a", "b"):
        mine = [r for r in rows if r[0] == version]
        impressions = sum(r[1].size for r in mine)
        clicks = sum(int(r[2]["click"].sum()) for r in mine)
        expected = sum(float(r[2]["p_click"].sum()) for r in mine) / impressions
        oracle = sum(float(r[3].sum()) for r in mine) / impressions
        row = out[version]
        assert row["impressions"] == impressions and row["clicks"] == clicks
        assert np.isclose(row["ctr"], clicks / impressions, atol=1e-6)
        assert np.isclose(row["regret"], oracle - expected, atol=1e-5)
        counts = np.bincount(np.concatenate([r[1] for r in mine]), minlength=50)
        assert np.isclose(row["coverage"], (counts > 0).sum() / 100)
        assert np.isclose(row["top1pct_share"], np.sort(counts)[::-1][:1].sum() / impressions, atol=1e-6)


def test_the_schedule_depends_on_the_seed_only_and_follows_the_day():
    world = simulate(SimulatorConfig(n_users=300, n_items=300, days=3, seed=1)).world
    cfg = TrafficConfig(url="http://127.0.0.1:1", seconds=48, rps=50, speed=1.0, seed=4)
    a, b = schedule(world, cfg, world.clock), schedule(world, cfg, world.clock)
    assert [(s.t, s.user) for s in a] == [(s.t, s.user) for s in b]
    hours = np.asarray([(s.t % 86_400) // 3600 for s in a])
    assert (hours == 20).sum() > 2 * (hours == 3).sum()  # evenings are busier than nights
    assert all(world.user_joined[s.user] <= s.t for s in a)  # only users who have joined
    assert parse_time("now", now=5) == 5 and parse_time("2024-01-01T00:00:00Z", now=0) == 1704067200


def test_traffic_refuses_anything_but_loopback():
    import pytest

    with pytest.raises(ValueError, match="loopback"):
        TrafficConfig(url="http://example.com:8000").validate()
