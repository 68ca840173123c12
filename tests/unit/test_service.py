"""The feed service's fallbacks, without a server."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from feedrec.models.base import Recommender
from feedrec.models.feed import FeedRecommender
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.online.service import Budgets, Bundle, FeedService, NoModelError
from feedrec.schemas import Event, EventType
from tests.conftest import make_interactions, make_side


class Broken(PopularityRecommender):
    def recommend(self, user_ids, k=10, *, exclude_seen=True, batch_size=0):  # type: ignore[no-untyped-def]
        raise RuntimeError("the ranker fell over")


def test_a_failing_model_falls_back_to_popularity_and_says_so(tmp_path: Path):
    service = FeedService(tmp_path)
    with pytest.raises(NoModelError, match="feedrec train"):
        service.feed("u1", 5)
    model = Broken().fit(make_interactions())
    service._bundle = Bundle("v9", model)
    feed = service.feed("u1", 5)
    assert feed.fallback and service.fallbacks == 1 and len(feed.items) == 5
    expected = model.item_ids_[np.argsort(-model.item_counts_, kind="stable")[:5]]
    assert [i.item_id for i in feed.items] == expected.tolist()
    assert all(i.source == "popularity" for i in feed.items)
    assert (tmp_path / "serving" / "impressions.jsonl").read_text().count(feed.request_id) == 1


@pytest.fixture(scope="module")
def feed_model() -> FeedRecommender:
    from tests.conformance.test_models import _feed

    model = _feed()
    model.fit(make_interactions(), make_side())
    return model


def _service(tmp_path: Path, model: Recommender, **budgets: float) -> FeedService:
    service = FeedService(tmp_path, budgets=Budgets(**budgets) if budgets else None)
    service._bundle = Bundle("v1", model)
    return service


def test_the_full_pipeline_serves_every_stage_within_budget(tmp_path: Path, feed_model: FeedRecommender):
    feed = _service(tmp_path, feed_model).feed("u3", 10)
    assert not feed.fallback and feed.fallback_reason is None
    assert set(feed.stages_ms) == {"features", "retrieve", "rank", "rerank"}
    want, _, _ = feed_model.recommend_with_sources(["u3"], 10)
    assert [i.item_id for i in feed.items] == want[0].tolist()


def test_a_late_ranker_is_abandoned_for_the_retrieval_order(tmp_path: Path, feed_model: FeedRecommender):
    slow = copy.copy(feed_model)
    slow.rank = lambda *args: time.sleep(0.5) or feed_model.rank(*args)  # type: ignore[method-assign]
    started = time.perf_counter()
    feed = _service(tmp_path, slow, rank=0.02).feed("u3", 10)
    assert time.perf_counter() - started < 0.4  # it did not wait for the ranker
    assert feed.fallback and feed.fallback_reason is not None and feed.fallback_reason.startswith("rank: StageLate")
    candidates = feed_model.retrieve(np.asarray(["u3"]), 10)
    want, _, _ = feed_model.arrange(1, candidates, candidates.rrf, 10)
    assert [i.item_id for i in feed.items] == want[0].tolist()


@pytest.mark.parametrize("stage", ["retrieve", "rank", "rerank"])
def test_a_failing_stage_falls_back_and_the_request_still_succeeds(
    tmp_path: Path, feed_model: FeedRecommender, stage: str
):
    broken = copy.copy(feed_model)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{stage} fell over")

    setattr(broken, stage if stage != "rerank" else "_reranker", fail)
    # Budgets no busy machine overruns: the fallback must be the failure's, not a late stage's.
    feed = _service(tmp_path, broken, retrieve=5.0, rank=5.0, rerank=5.0).feed("u3", 10)
    assert feed.fallback and feed.fallback_reason == f"{stage}: RuntimeError: {stage} fell over"
    users = np.asarray(["u3"])
    candidates = feed_model.retrieve(users, 10)
    if stage == "retrieve":  # the most popular items
        want = feed_model.item_ids_[np.argsort(-feed_model.item_counts_, kind="stable")[:10]]
    elif stage == "rank":  # the retrieval order, still re-ranked
        want = feed_model.arrange(1, candidates, candidates.rrf, 10)[0][0]
    else:  # the ranked order, not re-ranked
        want = feed_model.arrange(1, candidates, feed_model.rank(users, candidates), 10, rerank=False)[0][0]
    assert [i.item_id for i in feed.items] == want.tolist()


def test_events_reach_the_next_feed_at_once(tmp_path: Path, feed_model: FeedRecommender):
    """A hide (or a click) posted now removes the item from the user's next feed."""
    service = _service(tmp_path, feed_model)
    before = [i.item_id for i in service.feed("u3", 10).items]
    now = datetime.now(UTC)
    service.ingest(
        [
            Event(event_id="e1", user_id="u3", item_id=before[0], timestamp=now, type=EventType.HIDE),
            Event(event_id="e2", user_id="u3", item_id=before[1], timestamp=now, type=EventType.CLICK),
            Event(event_id="e3", user_id="u3", item_id=before[2], timestamp=now, type=EventType.IMPRESSION),
        ]
    )
    after = [i.item_id for i in service.feed("u3", 10).items]
    assert before[0] not in after and before[1] not in after and before[2] in after
    assert len(after) == 10
    service.close()
    assert (tmp_path / "online" / "features.parquet").exists()  # close() persists the online features


def test_a_user_with_no_candidate_left_gets_an_empty_feed_not_an_error(feed_model: FeedRecommender):
    candidates = feed_model.retrieve(np.asarray(["u3"]), 10)
    none = candidates.take(np.zeros(candidates.row.size, bool))
    ids, scores, sources = feed_model.arrange(1, none, np.empty(0), 10)
    assert (ids == "").all() and (sources == "").all() and np.isnan(scores).all() and ids.shape == (1, 10)


def test_the_service_holds_several_bundles_and_serves_each_by_version(tmp_path: Path):
    from feedrec.models.retrieval.covisit import CovisitRecommender
    from feedrec.registry import LocalRegistry
    from tests.integration.servers import build_workspace

    ws = build_workspace(tmp_path / "ws")  # v0001 (popularity) in production, v0002 (covisit) registered
    service = FeedService(ws)
    try:
        assert service.reload().version == "v0001" and set(service.bundles) == {"v0001"}
        service.hold(["v0002"])
        assert set(service.bundles) == {"v0001", "v0002"}
        a, b = service.feed("u1", 5), service.feed("u1", 5, version="v0002")
        assert (a.model_version, b.model_version) == ("v0001", "v0002")
        model = LocalRegistry(ws / "registry").load_model("v0002")
        assert isinstance(model, CovisitRecommender)
        assert [i.item_id for i in b.items] == model.recommend(["u1"], 5)[0][0].tolist()
        with pytest.raises(NoModelError, match="not held"):
            service.feed("u1", 5, version="v0003")
        service.hold([])
        assert set(service.bundles) == {"v0001"}
    finally:
        service.close()


def test_logged_features_line_up_with_the_feed_even_for_items_the_ranker_did_not_score(tmp_path):
    from types import SimpleNamespace

    from feedrec.monitoring.featurelog import FeatureLog, read_feature_log
    from feedrec.online.service import FeedItem, FeedService

    names = ["f", "position"]
    record = {
        "items": ["a", "b"],
        "names": names,
        "matrix": np.array([[1.0, 0.0], [2.0, 0.0]]),
        "predict": lambda x: x[:, 0] / 10,
    }
    feed = [FeedItem("b", 0.9, "als", "personalized"), FeedItem("pinned", 0.0, "rule", "personalized")]
    feed.append(FeedItem("a", 0.5, "als", "personalized"))
    fake = SimpleNamespace(
        feature_log=FeatureLog(tmp_path, flush_interval_s=3600), _features_as_of=lambda: 1_699_999_000.0
    )
    FeedService._log_features(fake, "r1", "u1", "home", feed, "v0001", 1_700_000_000.0, record)  # type: ignore[arg-type]
    fake.feature_log.close()
    rows = read_feature_log(tmp_path)
    # The pinned item was not scored: not logged; the others keep the slots they were served in.
    assert rows["item_id"].to_list() == ["b", "a"] and rows["slot"].to_list() == [0, 2]
    assert rows["f"].to_list() == [2.0, 1.0] and rows["position"].to_list() == [0.0, 2.0]
    assert rows["prediction"].to_list() == pytest.approx([0.2, 0.1])
    assert [t.timestamp() for t in rows["as_of"].to_list()] == [1_699_999_000.0] * 2


def test_a_stale_look_of_the_watcher_does_not_undo_a_promotion(tmp_path: Path):
    from tests.integration.servers import build_workspace

    service = FeedService(build_workspace(tmp_path / "ws"))
    try:
        assert service.reload().version == "v0001"
        registry, real = service.registry, service.registry.production
        stale = real()
        looks = iter([stale])  # the watcher's first read happened before the promotion below
        registry.production = lambda: next(looks, None) or real()  # type: ignore[method-assign]
        assert service.promote("v0002", reason="test").version == "v0002"
        service._watch_once()
        assert service.bundle is not None and service.bundle.version == "v0002"
        assert real().version == "v0002"
        assert service.rollback().version == "v0001" and real().version == "v0001"
    finally:
        service.close()
