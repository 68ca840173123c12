"""The persistent world: saved, loaded, and logging the same events; its state and ground truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from feedrec.config import SimulatorConfig
from feedrec.data.simulator import simulate
from feedrec.data.world import PairCounts, World, examine, sigmoid

CFG = SimulatorConfig(n_users=120, n_items=300, days=4, seed=5, live_days=2)


def test_a_loaded_world_logs_the_same_events(tmp_path):
    feed = simulate(CFG)
    feed.write(tmp_path)
    world = World.load(tmp_path / "world")
    assert world.clock == feed.world.t_end
    replayed = world.log()
    events = pl.from_arrow(feed.events)
    imp = events.filter(pl.col("type") == "impression")
    assert replayed["user"].size == imp.height
    # The same impressions, clicks and dwell, row for row (the log is sorted by time, so compare sets).
    logged = set(zip(imp["user_id"].to_list(), imp["item_id"].to_list(), imp["position"].to_list(), strict=True))
    again = {
        (f"u{u}", f"i{i}", int(p)) for u, i, p in zip(replayed["user"], replayed["item"], replayed["pos"], strict=True)
    }
    assert logged == again
    assert int(replayed["click"].sum()) == events.filter(pl.col("type") == "click").height
    # And the state at the end of the log matches what was saved.
    for name in ("exposures", "engaged"):
        a, b = getattr(world, name).arrays(), getattr(World.load(tmp_path / "world"), name).arrays()
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_the_world_goes_on_after_the_log():
    feed = simulate(CFG)
    world = feed.world
    items = pl.from_arrow(feed.items)
    assert items.height == CFG.n_items and world.n_items > CFG.n_items  # items published after the window
    assert (world.item_created[CFG.n_items :] >= world.t_end).all()
    assert world.n_users > CFG.n_users and (world.user_joined[CFG.n_users :] >= world.t_end).all()
    assert pl.from_arrow(feed.users).height == CFG.n_users
    assert world.published(world.t_end).size == CFG.n_items
    assert world.published(world.t_end + 2 * 86_400).size == world.n_items


def test_state_counts_what_the_log_showed_and_what_users_did():
    feed = simulate(CFG)
    world = feed.world
    events = pl.from_arrow(feed.events)
    imp = events.filter(pl.col("type") == "impression")
    pairs = imp.group_by("user_id", "item_id").len()
    row = pairs.row(0, named=True)
    user, item = int(row["user_id"][1:]), int(row["item_id"][1:])
    assert world.exposures.get(user, np.array([item]))[0] == row["len"]
    did = events.filter(pl.col("type").is_in(["click", "hide"])).select("user_id", "item_id").unique()
    total = sum(int((world.engaged.row(u)[1] > 0).sum()) for u in range(world.n_users))
    assert total == did.height


def test_fatigue_lowers_relevance_and_position_lowers_examination():
    world = simulate(CFG).world
    users, items, t = np.array([0, 0]), np.array([3, 3]), np.full(2, world.t_end)
    fresh, tired = world.logit(users, items, t, np.array([0, 5]))
    assert tired < fresh
    assert np.isclose(fresh - tired, 0.4 * np.log1p(5))
    assert examine(np.array([0]))[0] == 1.0 and examine(np.array([9]))[0] < 0.25
    assert 0 < sigmoid(np.array([fresh]))[0] < 1


def test_a_live_drift_changes_tastes_from_its_time_on():
    world = simulate(CFG).world
    t = world.t_end + 3600
    users = np.arange(world.n_users)
    topics = np.zeros(world.n_users, np.int64)
    before = world.taste_of(users, topics, np.full(users.size, t))
    world.drift_at = t - 1
    after = world.taste_of(users, topics, np.full(users.size, t))
    assert np.array_equal(after, world.taste_drift[:, 0]) and not np.array_equal(before, after)
    assert world.drifted(np.array([t]))[0] and not world.drifted(np.array([t - 10]))[0]


def test_pair_counts_merge_live_additions():
    counts = PairCounts.of(10, np.array([1, 1, 2]), np.array([3, 3, 4]))
    assert counts.get(1, np.array([3, 4]))[0] == 2
    counts.add(1, np.array([4, 3]))
    assert counts.get(1, np.array([3, 4, 5])).tolist() == [3, 1, 0]
    items, n = counts.row(1)
    assert dict(zip(items.tolist(), n.tolist(), strict=True)) == {3: 3, 4: 1}
    keys, values = counts.arrays()
    assert keys.tolist() == [13, 14, 24] and values.tolist() == [3, 1, 1]


def test_loading_a_folder_without_a_world_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="feedrec simulate"):
        World.load(tmp_path)


def test_user_propensity_is_the_same_world_with_users_who_click_more_or_less(tmp_path):
    plain = World.draw(CFG)
    varied = World.draw(CFG.model_copy(update={"user_propensity_sd": 1.0}))
    # Its own generator: every other draw, and the log's random state, is the plain world's.
    assert not plain.user_propensity.any()
    for name in World._ARRAYS:
        if name != "user_propensity":
            assert np.array_equal(getattr(plain, name), getattr(varied, name)), name
    assert plain.rng_state == varied.rng_state
    assert 0.8 < varied.user_propensity.std() < 1.2
    # The ground truth moves by b_u, the same for every item of a user: the best slate is unchanged.
    users = np.repeat(np.arange(5), 40)
    items = np.tile(np.arange(40), 5)
    t, seen = np.full(users.size, plain.t_end, np.int64), np.zeros(users.size, np.int64)
    diff = varied.logit(users, items, t, seen) - plain.logit(users, items, t, seen)
    assert np.allclose(diff, varied.user_propensity[users])
    # It is saved, and a world saved before it existed loads with every user equally inclined.
    varied.save(tmp_path / "w")
    assert np.array_equal(World.load(tmp_path / "w").user_propensity, varied.user_propensity)
    with np.load(tmp_path / "w" / "world.npz") as arrays:
        older = {k: arrays[k] for k in arrays.files if k != "user_propensity"}
    np.savez_compressed(tmp_path / "w" / "world.npz", **older)
    assert not World.load(tmp_path / "w").user_propensity.any()


def test_users_with_a_higher_propensity_click_more_in_the_log():
    cfg = SimulatorConfig(n_users=600, n_items=500, days=6, seed=3, live_days=0, user_propensity_sd=1.0)
    world = World.draw(cfg)
    rows = world.log()
    shown = np.bincount(rows["user"], minlength=world.n_users)
    clicked = np.bincount(rows["user"], weights=rows["click"], minlength=world.n_users)
    active = shown >= 20
    ctr = clicked[active] / shown[active]
    b = world.user_propensity[active]
    high, low = ctr[b > np.quantile(b, 0.75)].mean(), ctr[b < np.quantile(b, 0.25)].mean()
    assert high > 2 * low
    assert np.corrcoef(b, ctr)[0, 1] > 0.4
