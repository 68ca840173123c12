"""Online metrics of live traffic, per model version served, against the oracle.

Per version: feeds, impressions, clicks, CTR (clicks per impression), expected CTR (the
ground-truth P(click) of the slates shown, per impression: CTR without the sampling noise), oracle
CTR (the best slate's, per slot), regret (oracle minus expected, per impression), likes, shares
and hides per impression, dwell seconds per session, catalogue coverage (distinct items shown over
the items published), the share of impressions that went to the most-shown 1 % of the catalogue
(popularity concentration: a feedback loop's signature), and latency p50/p99 with errors. The
same, by simulated hour, feeds the HTML report's plots.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HOUR = 3_600


@dataclass
class _Sums:
    feeds: int = 0
    impressions: int = 0
    slots: int = 0  # the slots asked for: the oracle fills every one
    clicks: int = 0
    likes: int = 0
    shares: int = 0
    hides: int = 0
    dwell: float = 0.0
    expected: float = 0.0
    oracle: float = 0.0

    def add(self, other: _Sums) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Version:
    total: _Sums = field(default_factory=_Sums)
    hourly: dict[int, _Sums] = field(default_factory=lambda: defaultdict(_Sums))
    shown: Counter[int] = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)
    errors: int = 0


class LoopMetrics:
    def __init__(self) -> None:
        self.versions: dict[str, _Version] = defaultdict(_Version)
        self.arms: dict[str, dict[str, _Version]] = defaultdict(lambda: defaultdict(_Version))
        self.latency_ms: list[float] = []
        self.errors = 0
        self.requests = 0
        self.events_posted = 0

    def feed(
        self,
        version: str,
        t: int,
        latency_ms: float,
        items: np.ndarray,
        slots: int,
        reaction: dict[str, np.ndarray],
        oracle_p: np.ndarray,
        *,
        experiment: str | None = None,
        arm: str | None = None,
    ) -> None:
        """One feed served by ``version`` (in ``experiment``'s ``arm``, when the server says so) at
        simulated time ``t``, what the user did with it (``reaction``, per shown item, with the
        ground-truth ``p_click``) and the oracle slate's P(click)."""
        self.requests += 1
        self.latency_ms.append(latency_ms)
        one = _Sums(
            feeds=1,
            impressions=int(items.size),
            slots=slots,
            clicks=int(reaction["click"].sum()),
            likes=int(reaction["like"].sum()),
            shares=int(reaction["share"].sum()),
            hides=int(reaction["hide"].sum()),
            dwell=float(reaction["dwell"].sum()),
            expected=float(reaction["p_click"].sum()),
            oracle=float(oracle_p.sum()),
        )
        targets = [self.versions[version]]
        if experiment is not None and arm is not None:
            targets.append(self.arms[experiment][arm])
        for v in targets:
            v.latency_ms.append(latency_ms)
            v.total.add(one)
            v.hourly[t // HOUR * HOUR].add(one)
            v.shown.update(items.tolist())

    def error(self, version: str | None = None, latency_ms: float | None = None, *, feed: bool = True) -> None:
        """A failed feed request (``feed``), or a failed event post after a served feed."""
        self.requests += int(feed)
        self.errors += 1
        if latency_ms is not None:
            self.latency_ms.append(latency_ms)
        if version is not None:
            self.versions[version].errors += 1

    def summary(self, catalogue_size: int) -> dict[str, Any]:
        """The ``by_version`` table, ``by_arm`` (experiment -> arm -> the same row) and the overall
        latency (``catalogue_size``: items published)."""
        by_version = {version: _row(v.total, v, catalogue_size) for version, v in sorted(self.versions.items())}
        by_arm = {
            name: {arm: _row(v.total, v, catalogue_size) for arm, v in sorted(arms.items())}
            for name, arms in sorted(self.arms.items())
        }
        return {"latency_ms": _percentiles(self.latency_ms), "by_version": by_version, "by_arm": by_arm}

    def hourly(self) -> dict[str, list[dict[str, float]]]:
        """Per version, per simulated hour: CTR, expected CTR, oracle CTR, regret and feeds."""
        out: dict[str, list[dict[str, float]]] = {}
        for version, v in sorted(self.versions.items()):
            out[version] = [
                {"hour": float(h), "feeds": float(s.feeds), **_rates(s)} for h, s in sorted(v.hourly.items())
            ]
        return out


def _rates(s: _Sums) -> dict[str, float]:
    imp = max(s.impressions, 1)
    expected = s.expected / imp
    oracle = s.oracle / max(s.slots, 1)
    return {
        "ctr": s.clicks / imp,
        "expected_ctr": expected,
        "oracle_ctr": oracle,
        "regret": oracle - expected,
    }


def _row(s: _Sums, v: _Version, catalogue_size: int) -> dict[str, Any]:
    imp = max(s.impressions, 1)
    counts = np.sort(np.fromiter(v.shown.values(), np.int64, len(v.shown)))[::-1]
    top = max(1, int(np.ceil(0.01 * catalogue_size)))
    return {
        "feeds": s.feeds,
        "impressions": s.impressions,
        "clicks": s.clicks,
        **{key: round(value, 6) for key, value in _rates(s).items()},
        "likes_per_impression": round(s.likes / imp, 6),
        "shares_per_impression": round(s.shares / imp, 6),
        "hides_per_impression": round(s.hides / imp, 6),
        "dwell_per_session": round(s.dwell / max(s.feeds, 1), 3),
        "coverage": round(len(v.shown) / max(catalogue_size, 1), 6),
        "top1pct_share": round(float(counts[:top].sum()) / imp, 6) if counts.size else 0.0,
        "latency_ms": _percentiles(v.latency_ms),
        "errors": v.errors,
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}
