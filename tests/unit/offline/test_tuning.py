from __future__ import annotations

from pathlib import Path

import optuna
import polars as pl
import pytest
import yaml

from feedrec.config import FeedrecConfig
from feedrec.offline import tuning
from feedrec.offline.jobs import split_interactions
from tests.conftest import make_interactions


def _events() -> pl.DataFrame:
    data = make_interactions(n_users=60, n_items=80, per_user=12)
    return pl.DataFrame(
        {
            "user_id": data.users.ids[data.user_idx],
            "item_id": data.items.ids[data.item_idx],
            "timestamp": pl.Series(data.timestamps * 1_000_000).cast(pl.Datetime("us", "UTC")),
        }
    )


def test_tune_saves_the_study_and_never_sees_the_test_split(tmp_path: Path, monkeypatch):
    seen: list[tuple[int, int]] = []
    real_targets = tuning.targets_after

    def spy(train_df, test_df, **kwargs):
        seen.append((train_df.height, test_df.height))
        return real_targets(train_df, test_df, **kwargs)

    monkeypatch.setattr(tuning, "targets_after", spy)
    cfg = FeedrecConfig()
    split = split_interactions(_events(), cfg)
    before = cfg.model_dump()
    spaces = dict(tuning.SPACES)
    result = tuning.tune("als", split, None, cfg, out_dir=tmp_path, n_trials=3, timeout_s=60)
    # Only the split's train part against its validation part reaches the trials: never the test.
    assert seen == [(split.train.height, split.valid.height)]
    assert result.n_trials == 3 and result.best_value >= result.default_value
    assert cfg.model_dump() == before and spaces == tuning.SPACES  # no caller or module state changed
    study = optuna.load_study(study_name="als", storage=f"sqlite:///{result.study_path}")
    assert len(study.trials) == 3
    snippet = yaml.safe_load(Path(result.params_path).read_text())
    assert set(snippet["models"]["als"]) <= {"factors", "regularization", "alpha", "iterations"}
    FeedrecConfig.model_validate(snippet)  # the snippet is a valid config


def test_tuning_the_fusion_leaves_the_search_spaces_alone(tmp_path: Path):
    cfg = FeedrecConfig()
    cfg.models.candidates = cfg.models.candidates.model_copy(update={"quotas": {"popularity": 20, "covisit": 20}})
    spaces = dict(tuning.SPACES)
    result = tuning.tune("candidates", split_interactions(_events(), cfg), None, cfg, out_dir=tmp_path, n_trials=2)
    assert spaces == tuning.SPACES and result.n_trials == 2


def test_unknown_model():
    with pytest.raises(ValueError, match="no search space"):
        cfg = FeedrecConfig()
        tuning.tune("popularity", split_interactions(_events(), cfg), None, cfg, out_dir=Path("/tmp/x"), n_trials=1)
