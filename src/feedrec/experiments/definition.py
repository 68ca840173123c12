"""What an experiment is: arms (a bundle each, or an interleaving of two), a layer, a share of
the layer's traffic, the metric that decides it and the guardrails that must hold.

Validation is here, so a malformed definition is refused with a message that names what to fix,
whoever writes it (the CLI, a test, a hand-edited state file)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
BUCKETS = 10_000  # a layer's traffic is cut into this many buckets (0.01 % each)

#: metric name -> (numerator, denominator per user; None: a per-user mean), higher is better?
METRICS: dict[str, tuple[str, str | None, bool]] = {
    "ctr": ("clicks", "impressions", True),
    "clicks_per_user": ("clicks", None, True),
    "likes_per_user": ("likes", None, True),
    "hides_per_user": ("hides", None, False),
    "dwell_per_user": ("dwell", None, True),
    "likes_per_impression": ("likes", "impressions", True),
    "hides_per_impression": ("hides", "impressions", False),
}
GUARDRAILS = (*METRICS, "latency_p99")


class ExperimentError(ValueError):
    """An experiment definition or action that cannot be accepted; the message says why."""


class Arm(BaseModel):
    """One arm: ``version`` (an A/B arm) or ``interleave`` (two versions, team-draft interleaved
    into one feed), with a relative ``weight``. An A/B arm may ``explore`` (a Plackett-Luce
    sample of its bundle's top ``explore_top`` with that temperature, in ranks; propensities are
    logged) and log the slates ``shadow`` versions would have shown the same requests: what
    ``feedrec ope`` needs to estimate those versions' CTR from this arm's feeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    version: str | None = None
    interleave: tuple[str, str] | None = None
    weight: float = Field(1.0, gt=0)
    explore: float | None = Field(None, gt=0, le=100)
    explore_top: int = Field(20, ge=2, le=200)
    shadow: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_policy(self) -> Arm:
        if (self.version is None) == (self.interleave is None):
            raise ValueError(f"arm {self.name!r}: give a version (A/B) or two versions to interleave, not both")
        if self.interleave is not None and self.interleave[0] == self.interleave[1]:
            raise ValueError(f"arm {self.name!r}: interleaving needs two different versions")
        if self.interleave is not None and (self.explore is not None or self.shadow):
            raise ValueError(f"arm {self.name!r}: exploration and shadow slates are for A/B arms")
        return self

    @property
    def versions(self) -> tuple[str, ...]:
        """The bundles serving this arm needs loaded (shadows included)."""
        served = self.interleave if self.interleave is not None else (self.version or "",)
        return (*served, *(v for v in self.shadow if v not in served))


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    arms: list[Arm] = Field(min_length=1)
    layer: str = Field("default", pattern=NAME)
    traffic: float = Field(1.0, gt=0, le=1, description="the share of the layer's users in the experiment")
    metric: str = "ctr"
    guardrails: list[str] = Field(default_factory=list)
    salt: str = ""  # the arm hash's salt (default: the name); a new salt re-randomizes
    status: Literal["draft", "running", "stopped"] = "draft"
    buckets: tuple[int, int] | None = None  # [lo, hi) of the layer's buckets, allotted at start
    created_at: str = ""
    started_at: str | None = None
    stopped_at: str | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(METRICS)}")
        return value

    @field_validator("guardrails")
    @classmethod
    def _guardrails(cls, value: list[str]) -> list[str]:
        unknown = [g for g in value if g not in GUARDRAILS]
        if unknown:
            raise ValueError(f"unknown guardrail {unknown[0]!r}; known: {', '.join(GUARDRAILS)}")
        return value

    @model_validator(mode="after")
    def _arms(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must differ: {names}")
        interleaved = [a for a in self.arms if a.interleave is not None]
        if interleaved and len(self.arms) != 1:
            raise ValueError("an interleaving experiment has exactly one arm (it serves both rankings in one feed)")
        if not interleaved and len(self.arms) < 2 and not self.arms[0].shadow:
            raise ValueError("an A/B experiment needs at least two arms (control and treatment); one arm only shadows")
        if not self.salt:
            self.salt = self.name
        return self

    @property
    def interleaving(self) -> bool:
        return self.arms[0].interleave is not None

    @property
    def versions(self) -> set[str]:
        return {v for arm in self.arms for v in arm.versions}

    @property
    def control(self) -> Arm:
        """The arm others are compared with: the one named ``control``, or the first."""
        return next((a for a in self.arms if a.name == "control"), self.arms[0])


class ExperimentsState(BaseModel):
    """Everything the server needs to route: the experiments and the global holdout."""

    model_config = ConfigDict(extra="forbid")

    holdout: float = Field(0.0, ge=0, lt=1, description="the share of all users kept on production")
    holdout_salt: str = "holdout"
    experiments: dict[str, Experiment] = Field(default_factory=dict)

    def running(self) -> list[Experiment]:
        return [e for e in self.experiments.values() if e.status == "running"]
