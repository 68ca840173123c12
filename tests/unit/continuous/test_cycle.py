"""The loop's pieces without a server: its policy file, the registry's history of transitions,
the shadow and canary summaries, and the approval step of continuous training."""

from __future__ import annotations

import pytest
import yaml

from feedrec.config import ConfigError, load_config
from feedrec.continuous.cycle import ContinuousLoop, LoopState, canary_exposure, shadow_report
from feedrec.continuous.policy import LoopPolicy, load_policy
from feedrec.experiments.exposures import read_exposures
from feedrec.registry import LocalRegistry, RegistryError
from tests.integration.servers import build_workspace

pytestmark = pytest.mark.unit


def test_a_policy_typo_is_an_error_that_names_the_key(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"canary": {"shares": 0.1}}))
    with pytest.raises(ConfigError, match=r"canary\.shares"):
        load_policy(path)
    path.write_text(yaml.safe_dump({"deploy": "approval", "canary": {"share": 0.1}}))
    policy = load_policy(path)
    assert policy.deploy == "approval" and policy.canary.share == 0.1 and policy.shadow.hours == 1.0
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")


def test_recorded_transitions_leave_production_and_rollback_alone(tmp_path):
    ws = build_workspace(tmp_path)
    registry = LocalRegistry(ws / "registry")
    registry.promote("v0002")
    registry.record("v0001", "canary_started", "experiment canary-v0001", share=0.04)
    assert registry.production().version == "v0002"
    assert registry.history()[-1]["share"] == 0.04 and registry.history()[-1]["action"] == "canary_started"
    assert registry.rollback().version == "v0001"  # the notes in between are not served versions
    with pytest.raises(RegistryError, match="changes production"):
        registry.record("v0001", "promote", "no")
    with pytest.raises(RegistryError, match="no bundle"):
        registry.record("v0009", "gate", "no")


def test_shadow_report_against_hand_counts():
    rows = [
        {"items": ["a", "b"], "shadow": {"v2": ["a", "c"]}, "shadow_ms": {"v2": 4.0}},
        {
            "items": ["a", "b"],
            "shadow": {"v2": ["b", "a"]},
            "shadow_ms": {"v2": 8.0},
            "shadow_fallback": {"v2": "rank: late"},
        },
        {"items": ["x"], "shadow": {}},  # the shadow bundle was not loaded for this one
    ]
    report = shadow_report(rows, "v2")
    assert report["requests"] == 2 and report["fallback_rate"] == 0.5
    assert report["overlap"] == pytest.approx((0.5 + 1.0) / 2) and report["top1_agreement"] == 0.5
    assert 4.0 < report["latency_p99_ms"] <= 8.0


def test_canary_exposure_counts_users_of_the_treatment(tmp_path):
    from feedrec.experiments.exposures import ExposureLog

    log = ExposureLog(tmp_path)
    for n, (user, arm) in enumerate([("u1", "treatment"), ("u1", "treatment"), ("u2", "control"), ("u3", "control")]):
        log.write({"request_id": f"r{n}", "user_id": user, "experiment": "c", "arm": arm, "version": "v",
                   "items": [], "positions": [], "teams": None, "time": "2024-01-01T00:00:00+00:00",
                   "served_at": "2024-01-01T00:00:00+00:00", "latency_ms": 1.0})  # fmt: skip
    log.close()
    assert canary_exposure(read_exposures(tmp_path, "c")) == {
        "users_exposed": 1,
        "users_in_experiment": 3,
        "share_exposed": pytest.approx(1 / 3),
    }


def _awaiting(tmp_path):
    """A loop holding v0002 for approval, and its registry."""
    ws = build_workspace(tmp_path)
    cfg = load_config()
    cfg.workspace = ws
    loop = ContinuousLoop(cfg, LoopPolicy(deploy="approval"))
    loop.state = LoopState(stage="approval", candidate="v0002", production="v0001")
    registry = LocalRegistry(ws / "registry")
    registry.record("v0002", "awaiting_approval", "continuous training")
    return loop, registry, cfg


def test_continuous_training_waits_for_an_approval_then_promotes(tmp_path):
    loop, registry, cfg = _awaiting(tmp_path)
    assert loop.step() == "approval" and registry.production().version == "v0001"
    registry.record("v0002", "approve", "looks good")
    assert loop.step() == "idle" and loop.state.cycles == 1
    assert registry.production().version == "v0002"
    assert registry.history()[-1]["reason"] == "approved: looks good"
    # The state survives a restart of the loop.
    assert ContinuousLoop(cfg, LoopPolicy()).state.cycles == 1


def test_a_rejection_ends_the_cycle_without_promotion(tmp_path):
    loop, registry, _ = _awaiting(tmp_path)
    registry.record("v0002", "reject", "not now")
    assert loop.step() == "idle" and registry.production().version == "v0001"
    assert [e["action"] for e in registry.history()][-1] == "rejected"
