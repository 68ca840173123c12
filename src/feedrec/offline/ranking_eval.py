"""Rankers on logged impressions: did the user click what was shown? (pointwise, with features).

Impressions are labelled by a click on the same item in the same request. Features are built point
in time (``feedrec.features``). The impressions are cut by time into train (70 %), validation (15 %)
and test (15 %). LightGBM (binary) is compared with a logistic-regression baseline on the same
features; the LightGBM scores are then calibrated on validation (isotonic) and the expected
calibration error on test is reported before and after. The deep multi-task ranker (DCN-v2 with
click, like, dwell and hide heads) is trained on the same rows; its click head is scored like the
others, and its like and hide heads by their own AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from feedrec.config import BackendsConfig
from feedrec.features.definitions import FEATURE_NAMES
from feedrec.features.offline import build_features
from feedrec.metrics import expected_calibration_error, log_loss, roc_auc_score
from feedrec.models.base import Recommender
from feedrec.models.ranking.base import RankingSet
from feedrec.models.ranking.calibration import Calibrator
from feedrec.models.ranking.gbdt import GBDTRanker
from feedrec.models.ranking.multitask import MultiTaskRanker, MultiTaskSet
from feedrec.offline.protocol import ProtocolData
from feedrec.offline.split import assert_no_leakage

NUMERIC_FEATURES = [f for f in FEATURE_NAMES if f != "surface"]


@dataclass
class RankerReport:
    rows: dict[str, int] = field(default_factory=dict)
    click_rate: float = 0.0
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    top_features: list[tuple[str, float]] = field(default_factory=list)
    reliability: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # for the report's plots
    score_histograms: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "click_rate": self.click_rate,
            "models": self.models,
            "top_features": self.top_features,
        }


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Mean prediction and observed rate per equal-width bin (non-empty bins only)."""
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    keep = count > 0
    mean_p = np.bincount(bins, weights=p, minlength=n_bins)[keep] / count[keep]
    rate = np.bincount(bins, weights=y, minlength=n_bins)[keep] / count[keep]
    return {"mean_predicted": mean_p.tolist(), "observed_rate": rate.tolist()}


FeatureBuilder = Callable[[pl.DataFrame, pl.DataFrame, pl.DataFrame | None], pl.DataFrame]


def feature_builder(backends: BackendsConfig | None = None) -> FeatureBuilder:
    """The point-in-time feature build of the configured engine: ``build_features`` (DuckDB/polars,
    in process) or the same features as Spark jobs (``backends.engine: spark``)."""
    if backends is None or backends.engine == "duckdb":
        return build_features
    from feedrec.spark.features import features_with_spark
    from feedrec.spark.session import session_for

    spark = session_for(backends)
    return lambda queries, events, items: features_with_spark(queries, events, items, spark)


def impression_dataset(
    events: pl.DataFrame,
    items: pl.DataFrame | None,
    *,
    max_impressions: int | None = None,
    builder: FeatureBuilder = build_features,
) -> pl.DataFrame:
    """Impressions with point-in-time features and what followed them in the same request:
    ``label`` (clicked), ``like``, ``hide`` (0/1) and ``dwell`` (seconds, 0 when none). With
    ``max_impressions``, only the latest ones (their features still count every earlier event)."""
    is_impression = pl.col("type") == "impression"
    if max_impressions is not None:
        # The cut-off time first, from one column: a sorted copy of every impression is gigabytes.
        times = events.select(pl.col("timestamp").filter(is_impression)).to_series()
        if times.len() > max_impressions:
            is_impression &= pl.col("timestamp") >= times.sort()[times.len() - max_impressions]
    impressions = events.filter(is_impression)
    if max_impressions is not None and impressions.height > max_impressions:  # ties at the cut-off
        impressions = impressions.sort("timestamp", maintain_order=True).tail(max_impressions)
    keys = ["request_id", "item_id"]
    labelled = impressions
    for etype, column in (("click", "label"), ("like", "like"), ("hide", "hide")):
        flags = events.filter(pl.col("type") == etype).select(keys).unique().with_columns(pl.lit(1).alias(column))
        labelled = labelled.join(flags, on=keys, how="left", maintain_order="left")
    dwell = events.filter(pl.col("type") == "dwell").group_by(keys).agg(pl.col("value").sum().alias("dwell"))
    labelled = labelled.join(dwell, on=keys, how="left", maintain_order="left")
    features = builder(labelled, events, items)
    return features.with_columns(
        labelled["request_id"].alias("request_id"),  # the slate: ranking metrics group by it
        labelled["label"].fill_null(0).alias("label"),
        labelled["like"].fill_null(0).alias("like"),
        labelled["hide"].fill_null(0).alias("hide"),
        labelled["dwell"].fill_null(0.0).alias("dwell"),
    ).sort("timestamp")


def _matrix(frame: pl.DataFrame, surfaces: list[str]) -> np.ndarray:
    surface = frame["surface"].replace_strict(
        {s: float(i) for i, s in enumerate(surfaces)}, default=None, return_dtype=pl.Float64
    )
    return np.column_stack([frame.select(NUMERIC_FEATURES).to_numpy().astype(np.float64), surface.to_numpy()])


@dataclass
class ImpressionSplits:
    """Labelled impressions with point-in-time features, cut by time into 70 / 15 / 15 %, and their
    feature matrices (numeric features, then the surface code)."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    x_train: np.ndarray
    x_valid: np.ndarray
    x_test: np.ndarray


def impression_splits(
    events: pl.DataFrame,
    items: pl.DataFrame | None,
    *,
    max_impressions: int | None = None,
    builder: FeatureBuilder = build_features,
) -> ImpressionSplits:
    data = impression_dataset(events, items, max_impressions=max_impressions, builder=builder)
    n = data.height
    cut1, cut2 = data["timestamp"][int(n * 0.70)], data["timestamp"][int(n * 0.85)]
    train = data.filter(pl.col("timestamp") < cut1)
    valid = data.filter((pl.col("timestamp") >= cut1) & (pl.col("timestamp") < cut2))
    test = data.filter(pl.col("timestamp") >= cut2)
    assert_no_leakage(train, valid, protocol="global")
    assert_no_leakage(valid, test, protocol="global")
    surfaces = sorted(train["surface"].drop_nulls().unique().to_list())
    x_train, x_valid, x_test = (_matrix(f, surfaces) for f in (train, valid, test))
    return ImpressionSplits(train, valid, test, x_train, x_valid, x_test)


def multitask_set(frame: pl.DataFrame, x: np.ndarray) -> MultiTaskSet:
    """The deep ranker's view of impressions: numeric features, surface code, one label per head."""
    return MultiTaskSet(
        numeric=x[:, :-1],
        surface=np.nan_to_num(x[:, -1], nan=-1.0).astype(np.int64) + 1,
        labels={
            "click": frame["label"].to_numpy(),
            "like": frame["like"].to_numpy(),
            "hide": frame["hide"].to_numpy(),
            "dwell": frame["dwell"].to_numpy(),
        },
    )


def impression_gbdt(*, seed: int, threads: int) -> GBDTRanker:
    """The gradient-boosted click model of logged impressions (pointwise, early-stopped): what
    ``evaluate_rankers`` reports and what the served real-time ranker uses."""
    return GBDTRanker(
        objective="binary",
        n_estimators=1000,
        learning_rate=0.05,
        num_leaves=63,
        min_data_in_leaf=100,
        seed=seed,
        num_threads=threads,
    )


def evaluate_rankers(
    events: pl.DataFrame,
    items: pl.DataFrame | None,
    *,
    seed: int = 42,
    threads: int = 0,
    max_impressions: int | None = None,
    builder: FeatureBuilder = build_features,
) -> RankerReport:
    splits = impression_splits(events, items, max_impressions=max_impressions, builder=builder)
    train, valid, test = splits.train, splits.valid, splits.test
    names = [*NUMERIC_FEATURES, "surface"]
    x_train, x_valid, x_test = splits.x_train, splits.x_valid, splits.x_test
    y_train, y_valid, y_test = (f["label"].to_numpy() for f in (train, valid, test))

    def one_group(rows: int) -> np.ndarray:
        return np.zeros(rows, np.int64)

    gbdt = impression_gbdt(seed=seed, threads=threads)
    gbdt.fit(
        RankingSet(x_train.astype(np.float32), y_train.astype(np.float32), one_group(len(y_train)), names),
        RankingSet(x_valid.astype(np.float32), y_valid.astype(np.float32), one_group(len(y_valid)), names),
    )
    p_valid, p_test = gbdt.predict(x_valid.astype(np.float32)), gbdt.predict(x_test.astype(np.float32))
    calibrated = Calibrator("isotonic").fit(p_valid, y_valid).transform(p_test)

    lr = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=2000))
    lr.fit(x_train, y_train)
    p_lr = lr.predict_proba(x_test)[:, 1]

    def scores(p: np.ndarray) -> dict[str, float]:
        return {
            "auc": round(roc_auc_score(y_test, p), 4),
            "log_loss": round(log_loss(y_test, p), 4),
            "ece": round(expected_calibration_error(y_test, p), 4),
        }

    # The deep multi-task ranker, on the same features: one head per engagement.
    deep = MultiTaskRanker(seed=seed, num_threads=threads).fit(
        multitask_set(train, x_train), multitask_set(valid, x_valid)
    )
    heads = deep.predict_heads(multitask_set(test, x_test))
    head_auc = {
        f"{h}_auc": round(roc_auc_score(test[col].to_numpy(), heads[h]), 4)
        for h, col in (("like", "like"), ("hide", "hide"))
        if 0 < test[col].sum() < test.height
    }

    predictions = {
        "logistic_regression": p_lr,
        "lightgbm": p_test,
        "lightgbm_calibrated": calibrated,
        "multitask_click_head": heads["click"],
    }
    edges = np.linspace(0, 1, 41)
    return RankerReport(
        reliability={name: reliability_curve(y_test, p) for name, p in predictions.items()},
        score_histograms={
            name: {"density": np.histogram(p, bins=edges, density=True)[0].tolist(), "edges": edges.tolist()}
            for name, p in predictions.items()
        },
        rows={"train": train.height, "valid": valid.height, "test": test.height},
        click_rate=round(float(y_test.mean()), 4),
        models={
            "logistic_regression": scores(p_lr),
            "lightgbm": scores(p_test),
            "lightgbm_calibrated": scores(calibrated),
            "multitask_click_head": scores(heads["click"]) | head_auc,
        },
        top_features=[(k, round(v, 1)) for k, v in list(gbdt.feature_importance().items())[:8]],
    )


def served_ranker_metrics(model: Recommender, data: ProtocolData, *, block: int = 2048) -> dict[str, float]:
    """The ranker a bundle serves, judged as it serves: for each evaluation user, the candidates its
    pipeline retrieves, scored by its ranking stage, against whether the user engaged with each in
    the held-out part (``data.targets``). AUC over every (user, candidate); the calibration error
    only when the scores are probabilities (a pointwise ranker): a learning-to-rank score is not.
    Empty when no candidate is a target (nothing to separate)."""
    pipeline = model.serving()
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for lo in range(0, data.test_users.size, block):
        users = data.test_users[lo : lo + block]
        candidates = pipeline.retrieve(users, 10)
        ranked = np.asarray(pipeline.rank(users, candidates), np.float64)
        targets = data.targets[lo : lo + block]
        wanted = pl.DataFrame(
            {
                "row": np.repeat(np.arange(len(targets)), [t.size for t in targets]).astype(np.int64),
                "item": data.train.items.ids[np.concatenate(targets)] if targets else np.array([], str),
                "hit": True,
            },
            schema={"row": pl.Int64, "item": pl.Utf8, "hit": pl.Boolean},
        )
        proposed = pl.DataFrame(
            {"row": candidates.row.astype(np.int64), "item": model.item_ids_[candidates.item].astype(str)},
            schema={"row": pl.Int64, "item": pl.Utf8},
        )
        hit = proposed.join(wanted, on=["row", "item"], how="left", maintain_order="left")["hit"]
        labels.append(hit.fill_null(False).to_numpy())
        scores.append(ranked)
    y = np.concatenate(labels) if labels else np.zeros(0, bool)
    s = np.concatenate(scores) if scores else np.zeros(0)
    if y.size == 0 or y.all() or not y.any():
        return {}
    metrics = {"auc": round(roc_auc_score(y.astype(np.float64), s), 6), "candidates": float(y.size)}
    if s.min() >= 0 and s.max() <= 1:
        metrics["ece"] = round(expected_calibration_error(y.astype(np.float64), s), 6)
    return metrics
