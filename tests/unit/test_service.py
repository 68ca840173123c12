"""The feed service's fallbacks, without a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.online.service import Bundle, FeedService, NoModelError
from tests.conftest import make_interactions


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
