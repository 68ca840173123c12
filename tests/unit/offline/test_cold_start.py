from __future__ import annotations

import polars as pl
import pytest

from feedrec.config import FeedrecConfig, SimulatorConfig, load_config
from feedrec.data.side import SideInfo
from feedrec.data.simulator import simulate
from feedrec.offline.cold_start import evaluate_cold_start


@pytest.fixture(scope="module")
def report():
    feed = simulate(SimulatorConfig(n_users=600, n_items=1200, days=20, seed=11))
    cfg: FeedrecConfig = load_config(
        None, ["threads=1", "models.two_tower.epochs=4", "models.two_tower.dim=32", "models.candidates.ann=flat"]
    )
    events = pl.from_arrow(feed.events).filter(pl.col("type").is_in(["click", "like", "share", "dwell"]))
    return evaluate_cold_start(
        events, SideInfo(items=feed.items, users=feed.users), models=["popularity", "content", "candidates"], cfg=cfg
    )


def test_slices_are_populated(report):
    assert report.slices["sparse_users"] > 10
    assert report.slices["new_users"] > 5
    assert report.slices["new_items"] > 10
    for metrics in report.models.values():
        assert {"sparse_users.recall@10", "new_users.recall@10", "new_items.recall@100"} <= set(metrics)


def test_popularity_cannot_reach_new_items_and_content_can(report):
    assert report.models["popularity"]["new_items.recall@100"] < 0.05
    assert report.models["content"]["new_items.recall@100"] > report.models["popularity"]["new_items.recall@100"] + 0.05


def test_candidates_beat_popularity_on_both_slices(report):
    cand, pop = report.models["candidates"], report.models["popularity"]
    assert cand["sparse_users.recall@10"] > pop["sparse_users.recall@10"]
    assert cand["new_items.recall@100"] > pop["new_items.recall@100"]


def test_needs_items():
    with pytest.raises(ValueError, match="items table"):
        evaluate_cold_start(pl.DataFrame(), SideInfo(), models=["popularity"], cfg=FeedrecConfig())
