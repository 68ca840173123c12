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


def _shadowing(tmp_path, latencies_ms: list[float], fallbacks: int, **limits: float):
    """A loop whose shadow stage (v0002 beside production v0001) has logged one exposure per
    latency, the first ``fallbacks`` of them fallen back; then one look at the shadow."""
    from feedrec.continuous.policy import ShadowPolicy
    from feedrec.experiments.exposures import ExposureLog

    ws = build_workspace(tmp_path)
    cfg = load_config()
    cfg.workspace = ws
    loop = ContinuousLoop(cfg, LoopPolicy(shadow=ShadowPolicy(hours=0.0001, min_requests=3, **limits)))
    loop.state = LoopState(candidate="v0002", production="v0001")
    loop._start("shadow", [{"name": "production", "version": "v0001", "shadow": ["v0002"]}], traffic=1.0)
    loop.state.since = "2000-01-01T00:00:00+00:00"  # the stage's hours are over
    log = ExposureLog(loop.experiments.exposures_dir)
    for n, ms in enumerate(latencies_ms):
        log.write({"request_id": f"r{n}", "user_id": f"u{n}", "experiment": "shadow-v0002", "arm": "production",
                   "version": "v0001", "items": ["a", "b"], "positions": [1, 2], "teams": None,
                   "time": "2024-01-01T00:00:00+00:00", "served_at": "2024-01-01T00:00:00+00:00", "latency_ms": 1.0,
                   "shadow": {"v0002": ["a", "c"]}, "shadow_ms": {"v0002": ms},
                   **({"shadow_fallback": {"v0002": "rank: late"}} if n < fallbacks else {})})  # fmt: skip
    log.close()
    stage = loop.step()
    registry = LocalRegistry(ws / "registry")
    return stage, [e for e in registry.history() if e["version"] == "v0002"], loop


def test_a_shadow_within_its_limits_goes_on_to_the_canary(tmp_path):
    stage, history, loop = _shadowing(tmp_path, [5.0, 6.0, 7.0, 8.0], fallbacks=0)
    assert stage == "canary" and [e["action"] for e in history][-2:] == ["shadow_passed", "canary_started"]
    assert loop.experiments.get("shadow-v0002").status == "stopped"


@pytest.mark.parametrize(
    ("latencies", "fallbacks", "limits", "why"),
    [
        ([5.0, 6.0, 7.0, 250.0], 0, {"max_latency_p99_ms": 100.0}, "latency p99"),
        ([5.0, 6.0, 7.0, 8.0], 1, {"max_fallback_rate": 0.1}, "fallback rate 0.250 > 0.1"),
        ([5.0, 6.0, 7.0, 8.0], 0, {"min_overlap": 0.9}, "overlap@k with production 0.500 < 0.9"),
    ],
)
def test_a_shadow_over_a_limit_is_rejected_with_the_reason(tmp_path, latencies, fallbacks, limits, why):
    stage, history, loop = _shadowing(tmp_path, latencies, fallbacks, **limits)
    assert stage == "idle" and loop.state.cycles == 1
    actions = [e["action"] for e in history]
    assert actions[-2:] == ["shadow_failed", "rejected"] and "canary_started" not in actions
    assert why in history[-2]["reason"] and history[-1]["reason"].startswith("shadow: ")
    assert loop.experiments.get("shadow-v0002").status == "stopped"
    assert LocalRegistry(tmp_path / "registry").production().version == "v0001"
