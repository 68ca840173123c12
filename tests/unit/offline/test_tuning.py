from __future__ import annotations

from pathlib import Path

import optuna
import polars as pl
import pytest
import yaml

from feedrec.config import FeedrecConfig
from feedrec.offline import tuning
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
    seen_items: list[int] = []
    real_prepare = tuning.prepare

    def spy(df, **kwargs):
        seen_items.append(df.height)
        return real_prepare(df, **kwargs)

    monkeypatch.setattr(tuning, "prepare", spy)
    events = _events()
    result = tuning.tune("als", events, None, FeedrecConfig(), out_dir=tmp_path, n_trials=3, timeout_s=60)
    # Only the train+validation part (90% per user, after dedupe) reaches the trials.
    assert seen_items and seen_items[0] < events.height
    assert result.n_trials == 3 and result.best_value >= result.default_value
    study = optuna.load_study(study_name="als", storage=f"sqlite:///{result.study_path}")
    assert len(study.trials) == 3
    snippet = yaml.safe_load(Path(result.params_path).read_text())
    assert set(snippet["models"]["als"]) <= {"factors", "regularization", "alpha", "iterations"}
    FeedrecConfig.model_validate(snippet)  # the snippet is a valid config


def test_unknown_model():
    with pytest.raises(ValueError, match="no search space"):
        tuning.tune("popularity", _events(), None, FeedrecConfig(), out_dir=Path("/tmp/x"), n_trials=1)
