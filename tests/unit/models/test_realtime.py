"""The served real-time ranker: fitted without leakage, saved in the bundle, ranking from the online store."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from feedrec.data.interactions import Interactions
from feedrec.data.simulator import SimulatedFeed
from feedrec.features.online import LocalOnlineStore
from feedrec.models import model_for_tests
from feedrec.models.base import Recommender, RequestContext
from feedrec.models.feed import FeedRecommender, _top_per_row
from feedrec.offline.realtime import fit_realtime_ranker, warm_start_refusal


@pytest.fixture(scope="module")
def fitted(small_feed: SimulatedFeed) -> tuple[FeedRecommender, LocalOnlineStore, dict[str, float]]:
    events = pl.DataFrame(pl.from_arrow(small_feed.events))
    items = pl.DataFrame(pl.from_arrow(small_feed.items))
    model = model_for_tests("feedrec")
    assert isinstance(model, FeedRecommender)
    model.fit(Interactions.from_frame(events.filter(pl.col("type") == "click")))
    metrics = fit_realtime_ranker(model, events, items, threads=1)
    store = LocalOnlineStore(items)
    store.update(events)
    return model, store, metrics


def _context(store: LocalOnlineStore, **extra: object) -> RequestContext:
    return RequestContext(now=float(1_705_300_000), surface="home", features=store, **extra)  # type: ignore[arg-type]


def test_it_is_calibrated_and_survives_the_bundle_round_trip(fitted, tmp_path: Path):
    model, store, metrics = fitted
    assert metrics["auc"] > 0.6 and metrics["ece"] < 0.05
    users = np.asarray(["u5"])
    candidates = model.retrieve(users, 10)
    scores = model.rank(users, candidates, _context(store))
    assert np.all((scores >= 0) & (scores <= 1 + 1e-6))  # calibrated probabilities for every candidate
    loaded = Recommender.load(model.save(tmp_path / "bundle"))
    assert isinstance(loaded, FeedRecommender) and loaded.realtime_ is not None
    np.testing.assert_allclose(loaded.rank(users, candidates, _context(store)), scores)


def test_without_the_online_store_or_when_told_it_ranks_with_the_retrieval_features(fitted):
    model, store, _ = fitted
    users = np.asarray(["u5"])
    candidates = model.retrieve(users, 10)
    offline = model.rank(users, candidates)  # no context: a batch job, an offline evaluation
    realtime = model.rank(users, candidates, _context(store))
    assert not np.allclose(offline, realtime)
    model.set_params(serve_ranker="retrieval")
    try:
        np.testing.assert_allclose(model.rank(users, candidates, _context(store)), offline)
    finally:
        model.set_params(serve_ranker="realtime")


def test_it_scores_the_best_candidates_by_retrieval_and_records_its_inputs(fitted):
    model, store, _ = fitted
    users = np.asarray(["u5"])
    candidates = model.retrieve(users, 10)
    record: dict[str, object] = {}
    model.set_params(realtime_top=20)
    try:
        scores = model.rank(users, candidates, _context(store, record=record))
    finally:
        model.set_params(realtime_top=200)
    scored = scores >= 0
    assert scored.sum() == 20 and (scores[~scored] < -1).all()  # the rest stay below every scored one
    best = np.argsort(-candidates.rrf, kind="stable")[:20]
    assert set(np.flatnonzero(scored)) == set(best.tolist())
    assert len(record["items"]) == 20 and record["matrix"].shape == (20, len(record["names"]))  # type: ignore[attr-defined,index]


def test_top_per_row_keeps_each_rows_best():
    row = np.array([0, 0, 0, 1, 1, 2])
    score = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    assert _top_per_row(row, score, 2).tolist() == [1, 2, 3, 4, 5]


def test_retrieval_evidence_can_join_the_features_without_leakage(small_feed: SimulatedFeed, tmp_path: Path):
    """Optional: the sources' pair scores and retrieval ranks, from sources refitted on the log
    before the ranker's rows; served from the request's candidate set."""
    events = pl.DataFrame(pl.from_arrow(small_feed.events))
    items = pl.DataFrame(pl.from_arrow(small_feed.items))
    model = model_for_tests("feedrec")
    assert isinstance(model, FeedRecommender)
    model.fit(Interactions.from_frame(events.filter(pl.col("type") == "click")))
    fit_realtime_ranker(
        model, events, items, pair_sources=["covisit"], rank_sources=["popularity", "covisit"], threads=1
    )
    assert model.realtime_ is not None
    names = model.realtime_.feature_names
    assert names[-4:] == ["pair_covisit", "retrieval_pos", "retrieval_rank_popularity", "retrieval_rank_covisit"]
    store = LocalOnlineStore(items)
    store.update(events)
    users = np.asarray(["u5"])
    candidates = model.retrieve(users, 10)
    record: dict[str, object] = {}
    scores = model.rank(users, candidates, _context(store, record=record))
    x = record["matrix"]
    assert x.shape[1] == len(names)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(x[:, names.index("retrieval_pos")], candidates.pos[: x.shape[0]])  # type: ignore[index]
    loaded = Recommender.load(model.save(tmp_path / "bundle"))
    np.testing.assert_allclose(loaded.rank(users, candidates, _context(store)), scores)
    with pytest.raises(ValueError, match="candidate sources"):
        fit_realtime_ranker(model, events, items, rank_sources=["nope"])


def test_the_inverted_drill_ranks_the_least_likely_click_first_and_is_saved(fitted, tmp_path: Path):
    model, store, _ = fitted
    users = np.asarray(["u5"])
    candidates = model.retrieve(users, 20)
    honest = model.rank(users, candidates, _context(store))
    drilled = copy.deepcopy(model)
    assert drilled.realtime_ is not None
    drilled.realtime_.inverted = True
    inverted = drilled.rank(users, candidates, _context(store))
    np.testing.assert_allclose(inverted, 1.0 - honest, atol=1e-6)  # the order reversed, still in [0, 1]
    loaded = Recommender.load(drilled.save(tmp_path / "drilled"))
    assert isinstance(loaded, FeedRecommender) and loaded.realtime_ is not None and loaded.realtime_.inverted


def test_a_warm_start_continues_an_earlier_ranker_only_where_it_cannot_leak(
    small_feed: SimulatedFeed, fitted, tmp_path: Path
):
    """A retraining continues the ranker it replaces (LightGBM init_model) when that ranker was
    fitted only on rows before the new fit's validation rows; one fitted on the same log (which
    saw those rows) is refused, and the fit is cold."""
    events = pl.DataFrame(pl.from_arrow(small_feed.events))
    items = pl.DataFrame(pl.from_arrow(small_feed.items))
    times = events["timestamp"]
    earlier = events.filter(times < times.min() + (times.max() - times.min()) * 0.6)  # type: ignore[operator]
    old = model_for_tests("feedrec")
    assert isinstance(old, FeedRecommender)
    old.fit(Interactions.from_frame(earlier.filter(pl.col("type") == "click")))
    fit_realtime_ranker(old, earlier, items, threads=1)
    assert old.realtime_ is not None and old.realtime_.fit_end is not None
    before = Recommender.load(old.save(tmp_path / "old"))  # the production bundle, as a retraining loads it
    assert isinstance(before, FeedRecommender) and before.realtime_ is not None
    assert before.realtime_.fit_end == old.realtime_.fit_end

    model = copy.deepcopy(fitted[0])  # the shared fixture keeps its own ranker
    metrics = fit_realtime_ranker(model, events, items, threads=1, warm=before.realtime_)
    warm = model.realtime_
    assert warm is not None and warm.warm_start is not None and warm.warm_start["used"]
    assert warm.warm_start["trees_before"] == before.realtime_.booster.n_trees > 0
    assert warm.booster.n_trees >= warm.warm_start["trees_before"]
    # Its first trees are the earlier ranker's: the continued booster's raw score over those trees
    # alone equals the earlier booster's on the same rows.
    x = np.random.default_rng(0).normal(size=(50, len(warm.feature_names))).astype(np.float32)
    head = warm.booster.booster_.predict(x, num_iteration=warm.warm_start["trees_before"], raw_score=True)
    np.testing.assert_allclose(head, before.realtime_.booster.booster_.predict(x, raw_score=True), rtol=1e-6)
    assert metrics["auc"] > 0.6
    # The rule itself: validation rows from the earlier fit's last row on would have been seen.
    end = datetime.fromisoformat(before.realtime_.fit_end)
    assert "leak" in (warm_start_refusal(before.realtime_, warm, end) or "")
    assert warm_start_refusal(before.realtime_, warm, end + timedelta(seconds=1)) is None

    fit_realtime_ranker(model, events, items, threads=1, warm=warm)  # fitted on this same log: it saw the rows
    assert model.realtime_ is not None and model.realtime_.warm_start is not None
    assert not model.realtime_.warm_start["used"] and "leak" in model.realtime_.warm_start["reason"]
    assert model.realtime_.warm_start["trees_before"] == 0
