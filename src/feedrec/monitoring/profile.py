"""A bundle's reference profile: the distribution of what its served ranker was trained on.

``feedrec train`` computes it from the real-time ranker's training rows and stores it in the
bundle (``profile.json``); ``feedrec monitor`` compares serving logs against it. Per numeric
feature: the reference's decile cut points, the histogram over them (plus missing values, see
``feedrec.metrics.drift``), its mean, and a uniform sample of at most ``sample`` values (what the
Kolmogorov-Smirnov test compares with); per categorical feature: each category's share; the
prediction's profile on the held-out slice (the rows after the training ones) and the calibration
curve of the calibrated ranker there.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feedrec.metrics import expected_calibration_error
from feedrec.metrics.drift import numeric_histogram, quantile_cuts, reliability_curve

PROFILE_FILE = "profile.json"


def numeric_profile(values: np.ndarray, *, bins: int = 10, sample: int = 2000, seed: int = 0) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    cuts = quantile_cuts(v, bins=bins)
    finite = v[np.isfinite(v)]
    rng = np.random.default_rng(seed)
    drawn = finite if finite.size <= sample else rng.choice(finite, sample, replace=False)
    return {
        "kind": "numeric",
        "rows": int(v.size),
        "cuts": [float(c) for c in cuts],
        "counts": [float(c) for c in numeric_histogram(v, cuts)],
        "mean": float(finite.mean()) if finite.size else None,
        "missing": float(1 - finite.size / v.size) if v.size else 0.0,
        "sample": [float(x) for x in np.sort(drawn)],
    }


def categorical_profile(values: Sequence[str | None]) -> dict[str, Any]:
    counts = Counter("<missing>" if v is None else str(v) for v in values)
    total = sum(counts.values()) or 1
    return {"kind": "categorical", "rows": len(values), "shares": {k: n / total for k, n in sorted(counts.items())}}


def build_profile(
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, Sequence[str | None]],
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    bins: int = 10,
    sample: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The profile of training rows (``numeric`` and ``categorical`` features by name) and of the
    calibrated predictions on held-out rows with their click ``labels``."""
    p, y = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
    features: dict[str, Any] = {
        name: numeric_profile(values, bins=bins, sample=sample, seed=seed) for name, values in numeric.items()
    }
    features |= {name: categorical_profile(values) for name, values in categorical.items()}
    return {
        "features": features,
        "prediction": numeric_profile(p, bins=bins, sample=sample, seed=seed),
        "calibration": {
            "rows": int(p.size),
            "ece": expected_calibration_error(y, p) if p.size and len(np.unique(y)) > 1 else None,
            "ctr": float(y.mean()) if y.size else None,
            "curve": reliability_curve(y, p),
        },
    }


def profile_artifacts(model: object) -> dict[str, str]:
    """The bundle artifacts that carry ``model``'s reference profile (none when its served ranker
    has none): what ``feedrec train`` registers with it."""
    profile = getattr(getattr(model, "realtime_", None), "profile", None)
    return {PROFILE_FILE: json.dumps(profile)} if profile is not None else {}
