from __future__ import annotations

from feedrec.config import FeedrecConfig
from feedrec.data.store import LocalEventStore
from feedrec.models.retrieval.candidates import CandidateRecommender
from feedrec.offline.train import train


def test_train_fits_the_sources_once_per_distinct_training_set(tmp_path, small_feed, monkeypatch):
    """Tuning and the pipeline's validation fit both fit the sources on the training part: the run
    fits them four times (tuning, the ranker's stage 1 on train and on train + validation, serving
    on train + validation), not five; and it reports the time of each stage."""
    store = LocalEventStore(tmp_path)
    store.append(small_feed.events)
    store.put_items(small_feed.items)
    store.put_users(small_feed.users)
    cfg = FeedrecConfig(workspace=tmp_path, threads=1)
    cfg.models.candidates.quotas = {"covisit": 50, "fresh": 20}
    cfg.train.tune_trials = 2
    made: list[str] = []
    original = CandidateRecommender._make

    def counted(spec):  # type: ignore[no-untyped-def]
        made.append(spec["class"])
        return original(spec)

    monkeypatch.setattr(CandidateRecommender, "_make", staticmethod(counted))
    stages: list[str] = []
    result = train(cfg, on_stage=stages.append)
    assert len(made) == 4 * 2  # four fits of the two sources
    assert list(result.seconds) == stages and all(s >= 0 for s in result.seconds.values())
    assert result.manifest.metrics["valid"] and result.manifest.metrics["test"]
