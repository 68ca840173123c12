"""The served impression ranker: P(click) from real-time features and the retrieval models' pair scores.

Its inputs, per (user, candidate, moment): every feature in ``feedrec.features`` (user, item and
creator counters, CTRs, affinities, item age, hour, weekday, surface, position), answered by the
online store at request time and by the point-in-time builder for training, and the score each
candidate source gives the pair (``pair_sources``). LightGBM (binary, on logged impressions
labelled by a click in the same request), calibrated on a later slice with isotonic regression.

Position is a training feature fixed at serving time: impressions are logged with the slot they
were shown in, so the model learns the position bias apart from relevance, and the server scores
every candidate as if in the top slot (``SERVED_POSITION``); with the bias multiplicative
(P(click) = examine(position) * relevance) that ranks by relevance. A separate bias tower would
do the same for the deep ranker; the gradient-boosted ranker needs none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from feedrec.features.definitions import FEATURE_NAMES
from feedrec.models.ranking.calibration import Calibrator
from feedrec.models.ranking.gbdt import GBDTRanker

NUMERIC_FEATURES = [f for f in FEATURE_NAMES if f != "surface"]
SERVED_POSITION = 0


class RealtimeRanker:
    def __init__(
        self,
        booster: GBDTRanker,
        calibrator: Calibrator,
        surfaces: list[str],
        pair_sources: list[str],
        rank_sources: list[str] | None = None,
        shuffled: bool = False,
        inverted: bool = False,
    ):
        self.booster = booster
        self.calibrator = calibrator
        self.surfaces = surfaces
        self.pair_sources = pair_sources
        self.rank_sources = rank_sources or []
        self.shuffled = shuffled  # a fault drill (train.drill_shuffled_ranker): scores permuted at random
        self.inverted = inverted  # a fault drill (train.drill_inverted_ranker): 1 - P(click), worst first
        # The training data's reference profile (``feedrec.monitoring.profile``), set by the fit and
        # stored beside the bundle by the registry, not with the model.
        self.profile: dict[str, Any] | None = None
        # The time of the latest row the booster or the calibrator was fitted on (ISO; set by the
        # fit): a later fit may continue this one only if its held-out rows are all after it.
        self.fit_end: str | None = None
        # Whether the fit continued an earlier ranker, and why or why not (``feedrec.offline.realtime``).
        self.warm_start: dict[str, Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        ranks = ["retrieval_pos", *(f"retrieval_rank_{s}" for s in self.rank_sources)] if self.rank_sources else []
        return [*NUMERIC_FEATURES, "surface", *(f"pair_{s}" for s in self.pair_sources), *ranks]

    def matrix(
        self, features: Mapping[str, Any], surfaces: Sequence[str | None], pair_scores: np.ndarray
    ) -> np.ndarray:
        """The model's input: ``features`` (by name: one array, or frame column, per feature of
        ``feedrec.features``), the surface of each row (coded; NaN when unseen in training), then
        ``pair_scores`` (rows x ``pair_sources``, NaN where a source does not know the pair)."""
        code = {s: float(i) for i, s in enumerate(self.surfaces)}
        surface = np.asarray([code.get(s, np.nan) if s is not None else np.nan for s in surfaces], np.float64)
        numeric = [np.asarray(features[name], np.float64) for name in NUMERIC_FEATURES]
        return np.column_stack([*numeric, surface, pair_scores]).astype(np.float32)

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated P(click); ties within an isotonic step are broken by the raw score (1e-9 of it),
        so the ranking is the raw model's."""
        raw = self.raw(x)
        scores = self.calibrator.transform(raw) + 1e-9 * raw
        if self.inverted:  # a sign-flip bug: the least likely click ranked first
            scores = 1.0 - scores
        return np.random.default_rng().permutation(scores) if self.shuffled else scores

    def save(self, path: Path) -> None:
        import joblib

        path.mkdir(parents=True, exist_ok=True)
        self.booster.save(path / "booster")
        joblib.dump(self.calibrator, path / "calibrator.joblib")
        meta = {
            "surfaces": self.surfaces,
            "pair_sources": self.pair_sources,
            "rank_sources": self.rank_sources,
            "features": self.feature_names,
            "shuffled": self.shuffled,
            "inverted": self.inverted,
            "fit_end": self.fit_end,
            "warm_start": self.warm_start,
        }
        (path / "realtime.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> RealtimeRanker:
        import joblib

        meta = json.loads((path / "realtime.json").read_text())
        ranker = cls(
            GBDTRanker.load(path / "booster"),
            joblib.load(path / "calibrator.joblib"),
            **{k: meta.get(k, []) for k in ("surfaces", "pair_sources", "rank_sources")},
            shuffled=bool(meta.get("shuffled", False)),
            inverted=bool(meta.get("inverted", False)),
        )
        ranker.fit_end, ranker.warm_start = meta.get("fit_end"), meta.get("warm_start")
        if ranker.feature_names != meta["features"]:
            raise ValueError(f"{path}: the ranker was trained on other features than this feedrec declares")
        return ranker
