from __future__ import annotations

from pathlib import Path

import pytest

from feedrec.config import ConfigError, FeedrecConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_the_shipped_config_agree():
    assert load_config(ROOT / "configs" / "default.yaml") == FeedrecConfig()


def test_typo_is_an_error_that_names_the_key(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  test_ration: 0.2\n")
    with pytest.raises(ConfigError, match=r"split\.test_ration"):
        load_config(path)


def test_overrides_are_typed_and_checked():
    cfg = load_config(None, ["split.test_ratio=0.2", "models.als.factors=32", "eval.models=[als]"])
    assert cfg.split.test_ratio == 0.2 and cfg.models.als.factors == 32 and cfg.eval.models == ["als"]
    with pytest.raises(ConfigError, match=r"split\.test_ratio"):
        load_config(None, ["split.test_ratio=2"])
    with pytest.raises(ConfigError, match="unknown model"):
        load_config(None, ["eval.models=[nope]"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["split.protocol"])


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Path("/nonexistent.yaml"))


def test_real_time_ranker_evidence_must_name_candidate_sources():
    with pytest.raises(ConfigError, match=r"train\.realtime_rank_sources"):
        load_config(None, ["train.realtime_rank_sources=[als,nope]"])
    assert load_config(None, ["train.realtime_pair_sources=[als]"]).train.realtime_pair_sources == ["als"]
