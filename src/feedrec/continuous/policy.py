"""The continuous-training policy (``feedrec loop --policy FILE``): when to retrain, on what, and
how a candidate earns production. One YAML file; a typo in a key is an error that names it.

``deploy: auto`` is continuous deployment (a candidate that passes its canary is promoted);
``deploy: approval`` is continuous training with a person in the loop (it waits for
``feedrec models approve VERSION``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feedrec.config import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerPolicy(_Strict):
    """Retrain when any fires (times are the events' clock)."""

    every_hours: float | None = Field(24.0, gt=0)  # since the production bundle's data ended
    new_events: int | None = Field(None, ge=1)  # stored since the production bundle's data ended
    on_drift: bool = True  # a `feedrec monitor` alert (drift, calibration, skew) newer than production


class RetrainPolicy(_Strict):
    window_days: float | None = Field(14.0, gt=0)  # the sliding window trained on; None = everything
    # Continue production's real-time ranker where that cannot leak (train.warm_start: LightGBM's
    # init_model; a cold fit, with its reason in the history, otherwise). The retrieval sources refit.
    warm_start: bool = True
    # config key=value for retraining: no tuning, no ranker comparison report (minutes per cycle)
    overrides: list[str] = Field(default_factory=lambda: ["train.tune=[]", "train.evaluate_rankers=false"])


class GateStage(_Strict):
    """The offline gate (``feedrec.registry.gate_decision``) a retrained candidate must pass.

    In a loop it is a sanity check, not the judge: the candidate's validation metrics come from
    its own (later) window and production's from an earlier one, so after a shift a better model
    can score lower offline (measured: every retraining after a taste shift scored 12-22 % lower
    NDCG than production's old score). A broken one still fails by far (a shuffled ranker's AUC
    is 0.5); shadow and canary judge the rest on the same users at the same time."""

    min_gain: float = -0.25  # relative validation NDCG gain over production (negative: may be that much worse)
    auc_tolerance: float = Field(0.05, ge=0)  # ranker AUC it may lose
    force: bool = False  # take a candidate the offline gate refused on to shadow anyway (drills)


class ShadowPolicy(_Strict):
    """The candidate scores live requests beside production, serving none of them."""

    hours: float = Field(1.0, ge=0)  # simulated hours; 0 skips the stage
    share: float = Field(0.2, gt=0, le=1)  # of users whose requests it shadows
    min_requests: int = Field(20, ge=1)
    max_fallback_rate: float = Field(0.01, ge=0, le=1)  # its share of requests that fell back (errors, late)
    max_latency_p99_ms: float = Field(100.0, gt=0)
    min_overlap: float = Field(0.0, ge=0, le=1)  # its slates' mean overlap@k with production's


class CanaryPolicy(_Strict):
    """An experiment: the candidate for ``share`` of users, production for the rest."""

    share: float = Field(0.04, gt=0, lt=1)
    metric: str = "ctr"
    guardrails: list[str] = Field(default_factory=lambda: ["hides_per_impression"])
    min_hours: float = Field(1.0, ge=0)  # simulated; no promotion before this long
    max_hours: float = Field(12.0, gt=0)  # then promoted if not significantly worse (`promote_on_timeout`)
    promote_on_timeout: bool = True
    alpha: float = Field(0.05, gt=0, lt=1)


class LoopPolicy(_Strict):
    trigger: TriggerPolicy = Field(default_factory=TriggerPolicy)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    gate: GateStage = Field(default_factory=GateStage)
    shadow: ShadowPolicy = Field(default_factory=ShadowPolicy)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    deploy: Literal["auto", "approval"] = "auto"
    layer: str = "rollout"  # the experiment layer shadow and canary run in (orthogonal to others)
    poll_s: float = Field(2.0, gt=0)  # wall seconds between the loop's looks


def load_policy(path: Path | None) -> LoopPolicy:
    if path is None:
        return LoopPolicy()
    if not path.is_file():
        raise ConfigError(f"policy file {path} does not exist")
    try:
        return LoopPolicy.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid loop policy {path}: {problems}") from exc
