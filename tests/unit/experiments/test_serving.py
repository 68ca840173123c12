"""The service routes each user to their arm's bundle, logs every exposure, and picks up a start
or stop without a restart."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from feedrec.data.interactions import Interactions
from feedrec.experiments.assignment import Assigner
from feedrec.experiments.exposures import read_exposures
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.online.service import FeedService
from feedrec.registry import LocalRegistry
from feedrec.testing import T0, sample_manifest

USERS = [f"u{n}" for n in range(300)]


def _popular(order: list[str]) -> PopularityRecommender:
    """A popularity model whose ranking is ``order`` (more interactions for the earlier items)."""
    rows = [(f"x{n}", item) for rank, item in enumerate(order) for n in range(len(order) - rank)]
    frame = pl.DataFrame(
        {"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows], "timestamp": [T0] * len(rows)},
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    return PopularityRecommender().fit(Interactions.from_frame(frame))


def _workspace(tmp_path: Path) -> tuple[LocalRegistry, list[str], list[str]]:
    registry = LocalRegistry(tmp_path / "registry")
    a = [f"a{n}" for n in range(8)]
    b = [f"b{n}" for n in range(8)]
    for order in (a, b, a[::-1]):
        registry.register(_popular(order), sample_manifest(registry.next_version()))
    registry.promote("v0003")
    return registry, a, b


def test_users_get_their_arms_bundle_and_each_exposure_is_logged(tmp_path: Path):
    _, a, b = _workspace(tmp_path)
    service = FeedService(tmp_path)
    service.try_reload()
    store = service.experiments
    arms = [{"name": "control", "version": "v0001"}, {"name": "treatment", "version": "v0002"}]
    store.create({"name": "ab", "arms": arms, "traffic": 0.5})
    store.start("ab")
    assert service.refresh_experiments() and not service.refresh_experiments()  # once per change
    assert set(service.bundles) == {"v0001", "v0002", "v0003"}
    assigner = Assigner(store.load())
    feeds = {u: service.feed(u, 4) for u in USERS}
    for user, feed in feeds.items():
        assignment = assigner.assign(user)
        if assignment is None:
            assert feed.experiment is None and feed.model_version == "v0003"
            assert [i.item_id for i in feed.items] == a[::-1][:4]
        else:
            assert (feed.experiment, feed.arm) == ("ab", assignment.arm.name)
            assert feed.model_version == assignment.arm.version
            assert [i.item_id for i in feed.items] == (a if feed.arm == "control" else b)[:4]
    logged = read_exposures(store.exposures_dir, "ab")
    in_experiment = {u: f for u, f in feeds.items() if f.experiment}
    assert 100 < len(in_experiment) < 200  # traffic 0.5 of 300 users
    assert sorted(logged["request_id"].to_list()) == sorted(f.request_id for f in in_experiment.values())
    row = logged.filter(pl.col("request_id") == next(iter(in_experiment.values())).request_id).row(0, named=True)
    assert row["items"] == [i.item_id for i in next(iter(in_experiment.values())).items]
    store.stop("ab")
    assert service.refresh_experiments()
    assert all(service.feed(u, 4).experiment is None for u in in_experiment)
    assert service.bundles.keys() == {"v0003"}  # released
    service.close()


def test_an_interleaving_arm_serves_both_rankings_in_one_feed(tmp_path: Path):
    _, a, b = _workspace(tmp_path)
    service = FeedService(tmp_path)
    service.try_reload()
    service.experiments.create({"name": "il", "arms": [{"name": "il", "interleave": ["v0001", "v0002"]}]})
    service.experiments.start("il")
    service.refresh_experiments()
    feed = service.feed("u1", 6)
    assert feed.model_version == "v0001+v0002" and feed.arm == "il"
    ids = [i.item_id for i in feed.items]
    assert sorted(ids) == sorted(a[:3] + b[:3])  # three picks each, each team in its own order
    row = read_exposures(service.experiments.exposures_dir, "il").row(0, named=True)
    assert [t for i, t in zip(row["items"], row["teams"], strict=True) if i.startswith("a")] == ["A"] * 3
    service.close()


def test_a_broken_experiments_state_keeps_the_current_routing(tmp_path: Path):
    _workspace(tmp_path)
    service = FeedService(tmp_path)
    service.try_reload()
    arms = [{"name": "control", "version": "v0001"}, {"name": "treatment", "version": "v0002"}]
    service.experiments.create({"name": "ab", "arms": arms})
    service.experiments.start("ab")
    service.refresh_experiments()
    service.experiments.state_path.write_text("{not json")
    assert not service.refresh_experiments()
    assert service.feed("u1", 3).experiment == "ab"  # still routed, no request failed
    service.close()
