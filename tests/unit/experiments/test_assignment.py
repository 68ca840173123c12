"""Assignment is deterministic, uniform, exclusive within a layer and orthogonal across layers."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from feedrec.experiments.assignment import Assigner, bucket, buckets
from feedrec.experiments.definition import BUCKETS, Experiment, ExperimentsState
from feedrec.experiments.interleave import team_draft

USERS = [f"u{n}" for n in range(20_000)]


def _running(name: str, layer: str = "default", lo: int = 0, hi: int = BUCKETS, weights=(1, 1)) -> Experiment:
    arms = [{"name": f"a{n}", "version": f"v{n}", "weight": w} for n, w in enumerate(weights)]
    return Experiment.model_validate(
        {"name": name, "layer": layer, "arms": arms, "status": "running", "buckets": (lo, hi)}
    )


def test_buckets_are_deterministic_and_uniform():
    assert bucket("s", "u1") == bucket("s", "u1") and buckets("s", ["u1"])[0] == bucket("s", "u1")
    b = buckets("salt", USERS, 100)
    assert stats.chisquare(np.bincount(b, minlength=100)).pvalue > 0.001
    assert (buckets("other", USERS, 100) != b).mean() > 0.9  # a new salt re-randomizes


def test_arms_follow_their_weights():
    assigner = Assigner(ExperimentsState(experiments={"e": _running("e", weights=(70, 30))}))
    arms = [assigner.assign(u).arm.name for u in USERS]  # type: ignore[union-attr]
    counts = [arms.count("a0"), arms.count("a1")]
    assert stats.chisquare(counts, [0.7 * len(USERS), 0.3 * len(USERS)]).pvalue > 0.001


def test_experiments_in_one_layer_share_no_user_and_layers_are_orthogonal():
    state = ExperimentsState(
        experiments={
            "x": _running("x", "ranking", 0, 5_000),
            "y": _running("y", "ranking", 5_000, 10_000),
            "z": _running("z", "rerank"),
        }
    )
    assigner = Assigner(state)
    found = [{a.experiment.name: a.arm.name for a in assigner.assignments(u)} for u in USERS]
    assert all(("x" in f) != ("y" in f) for f in found)  # exclusive, and everyone is in one of them
    assert all("z" in f for f in found)
    in_x = np.array(["x" in f for f in found])
    assert abs(in_x.mean() - 0.5) < 0.02
    # Orthogonal: the arm in "rerank" is independent of the arm (and experiment) in "ranking".
    table = np.zeros((4, 2))
    for f in found:
        row = ("x", "y").index(next(k for k in f if k != "z")) * 2 + int(f.get("x", f.get("y")) == "a1")
        table[row, int(f["z"] == "a1")] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001
    # The feed is served by the first layer's arm, in name order.
    assert assigner.assign("u1").experiment.name in ("x", "y")  # type: ignore[union-attr]


def test_the_holdout_keeps_its_share_out_of_every_experiment():
    state = ExperimentsState(holdout=0.1, experiments={"e": _running("e")})
    assigner = Assigner(state)
    out = [assigner.assign(u) is None for u in USERS]
    assert abs(np.mean(out) - 0.1) < 0.01
    assert all(assigner.held_out(u) == o for u, o in zip(USERS[:500], out, strict=False))


def test_team_draft_interleaving_balances_the_teams_and_keeps_each_rankings_order():
    a = [f"i{n}" for n in range(20)]
    b = [f"i{n}" for n in (3, 1, 7, 0, 11, 12, 2, 30, 31, 32, 33, 34)]
    for seed in range(50):
        items, teams = team_draft(a, b, 10, random.Random(seed))
        assert len(items) == 10 == len(set(items))
        for n in range(1, 11):  # every prefix: the teams differ by at most one pick
            assert abs(teams[:n].count("A") - teams[:n].count("B")) <= 1
        for team, ranking in (("A", a), ("B", b)):
            picked = [i for i, t in zip(items, teams, strict=True) if t == team]
            assert [ranking.index(i) for i in picked] == sorted(ranking.index(i) for i in picked)
    first = {team_draft(a, b, 2, random.Random(s))[1][0] for s in range(50)}
    assert first == {"A", "B"}  # the coin decides who starts
    items, teams = team_draft(a[:3], a[:3], 10, random.Random(0))
    assert items == a[:3]  # identical rankings: the shared order, until both run out


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"arms": [{"name": "c", "version": "v1"}]}, "at least two arms"),
        ({"arms": [{"name": "c", "version": "v1"}, {"name": "c", "version": "v2"}]}, "arm names must differ"),
        ({"arms": [{"name": "c", "version": "v1", "interleave": ["v1", "v2"]}]}, "not both"),
        ({"arms": [{"name": "c", "interleave": ["v1", "v1"]}]}, "two different versions"),
        (
            {"arms": [{"name": "c", "version": "v1"}, {"name": "t", "version": "v2"}], "metric": "ctrr"},
            "unknown metric",
        ),
        ({"arms": [{"name": "c", "version": "v1"}, {"name": "t", "version": "v2"}], "traffic": 1.5}, "traffic"),
    ],
)
def test_a_malformed_definition_says_what_to_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        Experiment.model_validate({"name": "e", **bad})
