from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from feedrec.models.retrieval.covisit import CovisitRecommender
from feedrec.online.batch import PrecomputedFeeds, recommend_batch
from feedrec.online.service import Bundle, FeedService
from tests.conftest import make_interactions


def test_batch_matches_the_model_and_resumes(tmp_path: Path):
    data = make_interactions(n_users=30, n_items=60)
    model = CovisitRecommender().fit(data)
    model.save(tmp_path / "model")
    users = data.users.ids.tolist()
    out = tmp_path / "recs"
    first = recommend_batch(tmp_path / "model", "v1", users, out, k=5, chunk_size=7, workers=2)
    assert first == {"users": 30, "chunks": 5, "written": 5, "skipped": 0}
    frame = pl.concat([pl.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))]).sort(["user_id", "rank"])
    expected, _ = model.recommend(np.asarray(sorted(users)), k=5)
    assert frame.group_by("user_id", maintain_order=True).agg("item_id")["item_id"].to_list() == expected.tolist()
    # An interrupted run left two parts missing: the rerun writes just those.
    (out / "part-00001.parquet").unlink()
    (out / "part-00004.parquet").unlink()
    again = recommend_batch(tmp_path / "model", "v1", users, out, k=5, chunk_size=7, workers=1)
    assert (again["written"], again["skipped"]) == (2, 3)
    assert not list(out.glob("*.tmp"))


def test_the_service_serves_precomputed_feeds_first(tmp_path: Path):
    data = make_interactions(n_users=10, n_items=30)
    model = CovisitRecommender().fit(data)
    model.save(tmp_path / "model")
    recommend_batch(tmp_path / "model", "v7", ["u1"], tmp_path / "recs", k=4, workers=1)
    service = FeedService(tmp_path / "ws", precomputed=tmp_path / "recs")
    service._bundle = Bundle("v8", model)
    feed = service.feed("u1", 3)
    assert [i.source for i in feed.items] == ["precomputed"] * 3 and feed.model_version == "v7"
    assert [i.item_id for i in feed.items] == PrecomputedFeeds(tmp_path / "recs").get("u1", 3)[0]  # type: ignore[index]
    other = service.feed("u2", 3)  # not precomputed: the model answers
    assert other.model_version == "v8" and other.items[0].source == "CovisitRecommender"
