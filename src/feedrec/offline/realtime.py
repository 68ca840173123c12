"""Fit the served impression ranker (``RealtimeRanker``) of a feed pipeline, with no leakage.

The latest logged impressions (at most ``max_impressions``) get their point-in-time features
(every counter from events strictly before the impression) and a label (a click in the same
request). The rows are cut by time: 70 % train, 15 % validation (early stopping, then isotonic
calibration), 15 % test (the reported AUC, log loss and ECE).

Optionally the retrieval's evidence joins the features: each source's score of the pair
(``pair_sources``) and where the sources retrieve the item for the user (``rank_sources``: the
fused position and each source's rank, NaN when not retrieved; at serving, the request's own
candidate set). The ranker's rows are then the latest ``window`` share of the impressions, and the
sources are refitted on the positive interactions before the first of them, so no row's evidence
has seen its own click (fitted on the whole log, every training row's evidence would be missing,
and present at serving). Both are off by default: on the simulated world each lowered the online
expected CTR (the refitted sources, stale and fitted on less, describe pairs differently from the
served ones; docs/BENCHMARKS.md, "live loop").

A warm start (``warm``: the ranker of the bundle being replaced, as ``feedrec loop`` retrains)
continues its trees with LightGBM's ``init_model`` instead of boosting from nothing, when that
cannot leak and fits: the earlier ranker was fitted (booster and calibrator) only on rows before
this fit's validation rows begin, so the validation and test rows stay unseen; it has the same
features (surfaces and sources included); and it has at most ``MAX_WARM_TREES`` trees (a chain of
warm starts grows; past that a cold fit resets it). Otherwise the fit is cold and says why
(``RealtimeRanker.warm_start``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.features.offline import build_features
from feedrec.metrics import expected_calibration_error, log_loss, roc_auc_score
from feedrec.models.feed import FeedRecommender, pair_scores
from feedrec.models.ranking.base import RankingSet
from feedrec.models.ranking.calibration import Calibrator
from feedrec.models.ranking.gbdt import GBDTRanker
from feedrec.models.ranking.realtime import NUMERIC_FEATURES, RealtimeRanker
from feedrec.models.retrieval.candidates import CandidateRecommender
from feedrec.monitoring.profile import build_profile
from feedrec.offline.ranking_eval import FeatureBuilder, impression_dataset, impression_gbdt
from feedrec.offline.split import assert_no_leakage
from feedrec.schemas import POSITIVE_EVENT_TYPES

MAX_WARM_TREES = 3000


def fit_realtime_ranker(
    model: FeedRecommender,
    events: pl.DataFrame,
    items: pl.DataFrame | None,
    side: SideInfo | None = None,
    *,
    max_impressions: int | None = 2_000_000,
    pair_sources: Sequence[str] = (),
    rank_sources: Sequence[str] = (),
    window: float = 0.5,
    threads: int = 0,
    seed: int = 42,
    drill_shuffled: bool = False,
    drill_inverted: bool = False,
    builder: FeatureBuilder = build_features,
    warm: RealtimeRanker | None = None,
) -> dict[str, float]:
    """Fit ``model.realtime_`` on ``events`` (the log, impressions included), continuing ``warm``
    where that is allowed (see the module's docstring); returns its test metrics."""
    sources, ranked = list(pair_sources), list(rank_sources)
    unknown = [s for s in [*sources, *ranked] if s not in model.candidates["quotas"]]
    if unknown or not 0 < window < 1:
        raise ValueError(f"pair_sources must be candidate sources (not {unknown}) and window in (0, 1), got {window}")
    cap = max_impressions
    if sources or ranked:
        n_impressions = events.select((pl.col("type") == "impression").sum()).item()
        cap = max(1, int(n_impressions * window)) if cap is None else min(cap, max(1, int(n_impressions * window)))
    data = impression_dataset(events, items, max_impressions=cap, builder=builder)
    if data.height < 1000 or data["label"].n_unique() < 2:
        raise ValueError(f"the real-time ranker needs at least 1000 impressions with clicks; the log has {data.height}")
    cut = data["timestamp"].min()
    positives = events.filter(
        pl.col("type").is_in([t.value for t in POSITIVE_EVENT_TYPES]) & (pl.col("timestamp") < cut)
    ).select("user_id", "item_id", "timestamp")
    pairs = np.full((data.height, len(sources)), np.nan)
    ranks = np.full((data.height, len(ranked) + 1 if ranked else 0), np.nan)
    if (sources or ranked) and positives.height:
        stage = CandidateRecommender(**model.candidates).fit(Interactions.from_frame(positives), side)
        if sources:
            pairs = pair_scores(stage, sources, data["user_id"].to_numpy(), data["item_id"].to_numpy())
        if ranked:
            ranks = _retrieval_ranks(stage, ranked, data, model.n_candidates)

    n = data.height
    cut1, cut2 = data["timestamp"][int(n * 0.70)], data["timestamp"][int(n * 0.85)]
    part = {
        "train": (data["timestamp"] < cut1).to_numpy(),
        "valid": ((data["timestamp"] >= cut1) & (data["timestamp"] < cut2)).to_numpy(),
        "test": (data["timestamp"] >= cut2).to_numpy(),
    }
    assert_no_leakage(data.filter(part["train"]), data.filter(part["valid"]), protocol="global")
    assert_no_leakage(data.filter(part["valid"]), data.filter(part["test"]), protocol="global")
    surfaces = sorted(data.filter(part["train"])["surface"].drop_nulls().unique().to_list())
    shell = RealtimeRanker(GBDTRanker(), Calibrator(), surfaces, sources, ranked)
    x = shell.matrix(
        {name: data[name].cast(pl.Float64).to_numpy() for name in NUMERIC_FEATURES},
        data["surface"].to_list(),
        np.column_stack([pairs, ranks]),
    )
    y = data["label"].to_numpy().astype(np.float32)

    def rows(name: str) -> RankingSet:
        mask = part[name]
        return RankingSet(x[mask], y[mask], np.zeros(int(mask.sum()), np.int64), shell.feature_names)

    refusal = None if warm is None else warm_start_refusal(warm, shell, cut1)
    init = warm.booster if warm is not None and refusal is None else None
    booster = impression_gbdt(seed=seed, threads=threads).fit(rows("train"), rows("valid"), init=init)
    calibrator = Calibrator("isotonic").fit(booster.predict(x[part["valid"]]), y[part["valid"]])
    ranker = RealtimeRanker(
        booster, calibrator, surfaces, sources, ranked, shuffled=drill_shuffled, inverted=drill_inverted
    )
    ranker.fit_end = _iso(data.filter(part["valid"])["timestamp"].max() or cut2)
    if warm is not None:
        ranker.warm_start = {
            "used": init is not None,
            "reason": refusal or f"continued its {warm.booster.n_trees} trees",
            "trees_before": init.n_trees if init is not None else 0,
            "trees": booster.n_trees,
        }
    model.realtime_ = ranker
    y_test, p_test = y[part["test"]], ranker.predict(x[part["test"]])
    # The reference ``feedrec monitor`` compares serving with: the training rows' features, the
    # held-out rows' predictions and calibration (stored in the bundle by ``feedrec train``).
    train_rows = data.filter(part["train"])
    columns = shell.feature_names
    ranker.profile = build_profile(
        {name: x[part["train"], j] for j, name in enumerate(columns) if name != "surface"},
        {"surface": train_rows["surface"].to_list()},
        p_test,
        y_test,
        seed=seed,
    )
    size = {"rows": float(n), "trees": float(booster.n_trees)}
    if y_test.size == 0 or len(np.unique(y_test)) < 2:
        return size
    return {
        "auc": round(roc_auc_score(y_test, p_test), 4),
        "log_loss": round(log_loss(y_test, p_test), 4),
        "ece": round(expected_calibration_error(y_test, p_test), 4),
    } | size


def warm_start_refusal(previous: RealtimeRanker, shell: RealtimeRanker, valid_start: datetime) -> str | None:
    """Why a fit whose validation rows start at ``valid_start`` may not continue ``previous``
    (None: it may)."""
    if previous.fit_end is None:
        return "the earlier ranker does not record what it was fitted on (trained before warm starts)"
    if datetime.fromisoformat(previous.fit_end) >= _aware(valid_start):
        return (
            f"the earlier ranker was fitted on rows up to {previous.fit_end}, not all before this fit's "
            f"validation rows ({_iso(valid_start)}): continuing it would leak the held-out rows"
        )
    if previous.feature_names != shell.feature_names or previous.surfaces != shell.surfaces:
        return "the earlier ranker has other features (its surfaces or sources differ)"
    if previous.booster.n_trees > MAX_WARM_TREES:
        return f"the earlier ranker has {previous.booster.n_trees} trees (over {MAX_WARM_TREES}): a cold fit resets it"
    return None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _iso(t: Any) -> str:
    return _aware(t).isoformat()


def _retrieval_ranks(stage: CandidateRecommender, sources: list[str], data: pl.DataFrame, k: int) -> np.ndarray:
    """(rows, 1 + sources): where ``stage`` retrieves each row's item for its user, fused and by
    each source (NaN where it does not): what the served candidate set says of a candidate."""
    users = np.sort(data["user_id"].unique().to_numpy().astype(str))
    table = stage.candidate_table(users, k)
    table = table.with_columns(pl.Series("user_id", users[table["row"].to_numpy()]))
    table = table.select(
        "user_id",
        pl.col("item").alias("item_id"),
        pl.col("pos").cast(pl.Float64).alias("_pos"),
        *(pl.col(f"rank_{s}").cast(pl.Float64).alias(f"_rank_{s}") for s in sources),
    )
    joined = data.select("user_id", "item_id").join(table, on=["user_id", "item_id"], how="left", maintain_order="left")
    return joined.select("_pos", *(f"_rank_{s}" for s in sources)).fill_null(np.nan).to_numpy().astype(np.float64)
