"""Every feature, declared once. The offline builder and the online store both read these.

A *counter* counts one entity's (a user, item, creator, or a (user, item) pair) events of one type in ``[t - window, t)``: strictly before the
moment ``t`` it describes, so no training row sees its own event or anything after it. A *ratio*
is a smoothed rate of two counters, ``(num + prior * prior_rate) / (den + prior)``. An *affinity*
is the share of a user's engaged events in a window that went to the candidate's topics or
creator, or of their impressions that showed its topics. *Item age* and *context* (hour, weekday,
surface, position) come from the request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

HOUR, DAY = 3_600, 86_400
WINDOWS: dict[str, int] = {"1h": HOUR, "1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
ENGAGED_TYPES: tuple[str, ...] = ("click", "like", "share")

Entity = Literal["user", "item", "creator", "user_item"]


@dataclass(frozen=True)
class Counter:
    name: str
    entity: Entity
    event_type: str
    window: str  # a key of WINDOWS


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str  # counter names
    denominator: str
    prior: float  # pseudo-count
    prior_rate: float  # the rate a new entity is assumed to have


@dataclass(frozen=True)
class Affinity:
    name: str
    # topic: the share of the user's engaged events that went to the candidate's topics; creator:
    # to its creator; topic_exposure: the share of the user's impressions that showed its topics.
    kind: Literal["topic", "creator", "topic_exposure"]
    window: str


@dataclass(frozen=True)
class Context:
    name: Literal["hour", "weekday", "surface", "position", "item_age_days"]


def _counters() -> list[Counter]:
    out: list[Counter] = []
    for entity, types, windows in (
        ("user", ("impression", "click", "like", "hide"), ("1h", "1d", "7d", "30d")),
        ("item", ("impression", "click", "like", "hide"), ("1h", "1d", "7d")),
        ("creator", ("impression", "click"), ("7d",)),
    ):
        for etype in types:
            for window in windows:
                out.append(Counter(f"{entity}_{etype}s_{window}", entity, etype, window))  # type: ignore[arg-type]
    # How often this user was already shown this item: what a feed's fatigue depends on.
    out.append(Counter("user_item_impressions_30d", "user_item", "impression", "30d"))
    return out


COUNTERS: list[Counter] = _counters()
RATIOS: list[Ratio] = [
    Ratio("user_ctr_30d", "user_clicks_30d", "user_impressions_30d", prior=20.0, prior_rate=0.1),
    Ratio("item_ctr_7d", "item_clicks_7d", "item_impressions_7d", prior=20.0, prior_rate=0.1),
    Ratio("item_ctr_1d", "item_clicks_1d", "item_impressions_1d", prior=20.0, prior_rate=0.1),
    Ratio("creator_ctr_7d", "creator_clicks_7d", "creator_impressions_7d", prior=20.0, prior_rate=0.1),
    # Popularity velocity: the last day's share of the last week's clicks (1/7 is a steady item).
    Ratio("item_click_velocity", "item_clicks_1d", "item_clicks_7d", prior=7.0, prior_rate=1 / 7),
]
AFFINITIES: list[Affinity] = [
    Affinity("user_topic_affinity_30d", "topic", "30d"),
    Affinity("user_creator_affinity_30d", "creator", "30d"),
    # What the user has been shown, by topic: many impressions per user against a few engaged events,
    # so a steadier read of their tastes than the engaged share where feeds follow them.
    Affinity("user_topic_exposure_30d", "topic_exposure", "30d"),
]
CONTEXT: list[Context] = [
    Context("hour"),
    Context("weekday"),
    Context("surface"),
    Context("position"),
    Context("item_age_days"),
]

ALL_FEATURES: list[Counter | Ratio | Affinity | Context] = [*COUNTERS, *RATIOS, *AFFINITIES, *CONTEXT]
FEATURE_NAMES: list[str] = [f.name for f in ALL_FEATURES]


def schema_hash() -> str:
    """A fingerprint of the definitions: a model bundle records it, and refuses other feature sets."""
    payload = json.dumps([asdict(f) | {"kind": type(f).__name__} for f in ALL_FEATURES])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ratio_value(num: np.ndarray, den: np.ndarray, ratio: Ratio) -> np.ndarray:
    return (num + ratio.prior * ratio.prior_rate) / (den + ratio.prior)
