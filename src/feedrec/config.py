"""Typed configuration, loaded from one YAML file and overridable from the command line.

Every knob lives here. Unknown keys are errors that name the key (``extra="forbid"``), so a typo
never falls back silently to a default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feedrec.schemas import POSITIVE_EVENT_TYPES, EventType


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SimulatorConfig(StrictModel):
    """The built-in feed simulator: the embedded default data source."""

    n_users: int = Field(2_000, ge=1)
    n_items: int = Field(5_000, ge=1)
    days: int = Field(30, ge=1)
    start: date = date(2024, 1, 1)
    seed: int = 42
    n_topics: int = Field(20, ge=1)
    items_per_creator: float = Field(25.0, gt=0)
    new_user_fraction: float = Field(0.2, ge=0, le=1)  # users who join after the start
    new_item_fraction: float = Field(0.3, ge=0, le=1)  # items published after the start
    sessions_per_user_day: float = Field(0.5, gt=0)  # mean feed sessions per active user per day
    slate_size: int = Field(10, ge=1, le=100)  # impressions per session
    taste_shift_fraction: float = Field(0.2, ge=0, le=1)  # users whose tastes shift at a random time
    drift_day: int | None = Field(None, ge=0)  # every user's tastes and the topic mix shift that day
    live_days: int = Field(7, ge=0)  # the world also draws the users and items that arrive this long after the log
    surfaces: list[str] = Field(default_factory=lambda: ["home", "explore"])
    # Each user's own propensity to engage: a logit offset ~ N(0, sd^2) on every item (some people
    # click far more than others). It never changes which slate is best for a user, only how much
    # users differ (what CUPED and interleaving gain from). 0: users equally inclined.
    user_propensity_sd: float = Field(0.0, ge=0)


class IngestConfig(StrictModel):
    """Validation rules for incoming events."""

    min_timestamp: date = date(1990, 1, 1)
    max_future_days: float = Field(1.0, ge=0)  # a timestamp later than now + this is out of range
    timestamp_unit: Literal["s", "ms", "us"] = "s"  # unit of numeric timestamps
    default_type: EventType = EventType.CLICK  # the type of rows that carry none (and no rating)


class SplitConfig(StrictModel):
    """Chronological splits. ``valid_ratio`` is carved from the train part the same way."""

    protocol: Literal["user", "global"] = "user"
    test_ratio: float = Field(0.1, gt=0, lt=1)
    valid_ratio: float = Field(0.1, gt=0, lt=1)


class PopularityParams(StrictModel):
    window_days: float | None = Field(None, gt=0)  # None: all-time counts


class CovisitParams(StrictModel):
    window_hours: float = Field(24.0, gt=0)  # two interactions closer than this co-occur
    max_neighbors: int = Field(20, ge=1)  # look this many interactions ahead in a user's timeline
    gap_half_life_hours: float = Field(6.0, gt=0)  # pair weight halves with this time gap
    history_size: int = Field(20, ge=1)  # a user's most recent items used to score
    history_half_life: float = Field(5.0, gt=0)  # in history positions: the latest item weighs most
    normalize: bool = True  # divide co-counts by sqrt of item popularities


class ALSParams(StrictModel):
    factors: int = Field(64, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, gt=0)  # confidence = alpha * weight
    iterations: int = Field(15, ge=1)
    seed: int = 42


class TwoTowerParams(StrictModel):
    dim: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    history_size: int = Field(20, ge=1)  # the user's latest items fed to the user tower
    temperature: float = Field(0.05, gt=0)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(512, ge=2)
    epochs: int = Field(30, ge=1)
    patience: int = Field(3, ge=1)  # epochs without a better validation NDCG@10 before stopping
    id_dropout: float = Field(0.1, ge=0, lt=1)  # teaches the towers to work without ids (cold start)
    n_random_negatives: int = Field(0, ge=0)  # uniform negatives mixed with the in-batch ones
    logq_correction: bool = True
    valid_ratio: float = Field(0.1, gt=0, lt=1)
    ann: Literal["exact", "flat", "hnsw", "sq8", "hnsw_sq8", "ivf_sq8", "ivf_pq"] = (
        "exact"  # how recommend() searches items
    )
    seed: int = 42


class TrendingParams(StrictModel):
    window_days: float = Field(7.0, gt=0)
    segment_attributes: str = "age_group,age"  # comma-separated; the first attribute users carry


class FreshParams(StrictModel):
    max_age_days: float = Field(14.0, gt=0)
    engagement_weight: float = Field(0.5, ge=0)


class ContentParams(StrictModel):
    history_size: int = Field(50, ge=1)
    history_half_life: float = Field(20.0, gt=0)
    creator_weight: float = Field(0.5, ge=0)


class EASEParams(StrictModel):
    l2: float | None = Field(None, gt=0)  # None: chosen on a validation carve from l2_grid
    l2_grid: list[float] = Field(default_factory=lambda: [10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0])
    valid_ratio: float = Field(0.1, gt=0, lt=1)
    max_items: int = Field(30_000, ge=1)  # EASE's Gram matrix is dense: n_items^2 floats


class CandidatesParams(StrictModel):
    """The merged candidate set: how many items each source contributes, before deduplication."""

    quotas: dict[str, int] = Field(
        default_factory=lambda: {
            "two_tower": 200,
            "als": 150,
            "covisit": 150,
            "trending": 50,
            "fresh": 50,
            "content": 100,
        }
    )
    # Reciprocal-rank fusion weight of each source (1 when absent). Chosen on ML-100K's validation
    # carve: the broad, weaker sources add reach but should not outrank the personalized ones.
    weights: dict[str, float] = Field(
        default_factory=lambda: {"als": 0.7, "trending": 0.2, "fresh": 0.2, "content": 0.2}
    )
    ann: Literal["flat", "hnsw", "sq8", "hnsw_sq8", "ivf_sq8", "ivf_pq"] = (
        "hnsw"  # the two-tower source searches this index
    )
    fusion_k: float = Field(60.0, gt=0)


class GBDTParams(StrictModel):
    objective: Literal["lambdarank", "binary"] = "lambdarank"
    n_estimators: int = Field(500, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: int = Field(50, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    early_stopping_rounds: int = Field(30, ge=1)


class RulesParams(StrictModel):
    pin: dict[str, int] = Field(default_factory=dict)  # item_id -> 0-based slot
    block: list[str] = Field(default_factory=list)
    boost: dict[str, float] = Field(default_factory=dict)  # item_id -> score multiplier


class RerankParams(StrictModel):
    diversity: float = Field(0.1, ge=0, le=1)  # MMR trade-off: 0 = pure relevance
    max_per_creator: int | None = Field(2, ge=1)
    max_per_topic: int | None = Field(None, ge=1)
    freshness_boost: float = Field(0.0, ge=0)
    freshness_half_life_days: float = Field(3.0, gt=0)
    # MMR looks at the best `window_per_slot * k` ranked candidates, not all of them: the rest
    # almost never make the feed, and serving time grows with the window. None = all.
    window_per_slot: float | None = Field(4.0, ge=1)
    rules: RulesParams = Field(default_factory=RulesParams)


class FeedParams(StrictModel):
    """The whole pipeline: ``models.candidates`` retrieves, this ranker orders, ``rerank`` shapes."""

    n_candidates: int = Field(200, ge=1)  # candidates the ranker scores per user
    n_sampled_negatives: int = Field(20, ge=0)  # random items per user added to the ranking set as negatives
    negative_strategy: Literal["uniform", "popularity"] = "uniform"  # how they are drawn (feedrec.models.sampling)
    negative_exponent: float = Field(0.75, ge=0)  # popularity ** exponent, for negative_strategy=popularity
    valid_ratio: float = Field(0.1, gt=0, lt=1)  # the carve the ranker learns from
    max_ranker_users: int | None = Field(20_000, ge=1)  # carved users sampled for the ranking set; None = all
    seed: int = 42
    # What orders the candidates when serving: the real-time impression ranker (when the bundle has
    # one: trained on logged impressions, features from the online store) or the retrieval-feature ranker.
    serve_ranker: Literal["realtime", "retrieval"] = "realtime"
    # Candidates per request the real-time ranker scores (each user's best by fused retrieval score).
    realtime_top: int = Field(200, ge=1)
    ranker: GBDTParams = Field(default_factory=GBDTParams)
    rerank: RerankParams | None = Field(default_factory=RerankParams)  # null: the ranker's order as is


@dataclass(frozen=True)
class ModelDecl:
    """What a model is, besides its hyperparameters: attached to its field of ``ModelsConfig``, so
    that each model is declared once, there (name = the field, config section = the field's type,
    class, whether it takes the thread count, search space, fast settings for the conformance
    suite). Every list of models is derived from it (``model_table``)."""

    cls: str  # "module:Class", imported only when the model is built
    threads: bool = False  # takes ``num_threads`` from ``FeedrecConfig.threads``
    source: bool = True  # may be a source of the candidate set
    space: Callable[[Any], dict[str, Any]] | None = None  # Optuna: trial -> parameters
    test_params: dict[str, Any] = field(default_factory=dict)  # small and fast, for tests/conformance


_TINY_TOWER = {"dim": 8, "hidden": 16, "history_size": 4, "batch_size": 32, "epochs": 2, "num_threads": 1}
_R = "feedrec.models.retrieval"


class ModelsConfig(StrictModel):
    """Hyperparameters of every model, by model name; each field is also the model's declaration."""

    popularity: Annotated[PopularityParams, ModelDecl(f"{_R}.popularity:PopularityRecommender")] = Field(
        default_factory=PopularityParams
    )
    popularity_recent: Annotated[
        PopularityParams,
        ModelDecl(f"{_R}.popularity:PopularityRecommender", test_params={"window_days": 0.5}),
    ] = Field(default_factory=lambda: PopularityParams(window_days=7))
    covisit: Annotated[
        CovisitParams,
        ModelDecl(
            f"{_R}.covisit:CovisitRecommender",
            space=lambda t: {
                "window_hours": t.suggest_float("window_hours", 0.5, 168.0, log=True),
                "gap_half_life_hours": t.suggest_float("gap_half_life_hours", 0.1, 48.0, log=True),
                "history_size": t.suggest_int("history_size", 5, 100, log=True),
                "history_half_life": t.suggest_float("history_half_life", 1.0, 50.0, log=True),
            },
        ),
    ] = Field(default_factory=CovisitParams)
    als: Annotated[
        ALSParams,
        ModelDecl(
            f"{_R}.als:ALSRecommender",
            threads=True,
            space=lambda t: {
                "factors": t.suggest_int("factors", 16, 256, log=True),
                "regularization": t.suggest_float("regularization", 1e-4, 1.0, log=True),
                "alpha": t.suggest_float("alpha", 0.1, 50.0, log=True),
                "iterations": t.suggest_int("iterations", 5, 30),
            },
            test_params={"factors": 8, "iterations": 5, "num_threads": 1},
        ),
    ] = Field(default_factory=ALSParams)
    two_tower: Annotated[
        TwoTowerParams,
        ModelDecl(
            f"{_R}.two_tower:TwoTowerRecommender",
            threads=True,
            space=lambda t: {
                "dim": t.suggest_categorical("dim", [32, 64, 128]),
                "lr": t.suggest_float("lr", 1e-3, 1e-2, log=True),
                "temperature": t.suggest_float("temperature", 0.02, 0.2, log=True),
                "history_size": t.suggest_int("history_size", 5, 50, log=True),
                "id_dropout": t.suggest_float("id_dropout", 0.0, 0.3),
                "n_random_negatives": t.suggest_categorical("n_random_negatives", [0, 256]),
            },
            test_params=_TINY_TOWER,
        ),
    ] = Field(default_factory=TwoTowerParams)
    trending: Annotated[
        TrendingParams, ModelDecl(f"{_R}.trending:TrendingRecommender", test_params={"window_days": 1.0})
    ] = Field(default_factory=TrendingParams)
    fresh: Annotated[FreshParams, ModelDecl(f"{_R}.fresh:FreshRecommender", test_params={"max_age_days": 10})] = Field(
        default_factory=FreshParams
    )
    content: Annotated[ContentParams, ModelDecl(f"{_R}.content:ContentRecommender")] = Field(
        default_factory=ContentParams
    )
    ease: Annotated[EASEParams, ModelDecl(f"{_R}.ease:EASERecommender", test_params={"l2_grid": [1.0, 10.0]})] = Field(
        default_factory=EASEParams
    )
    # The two composites: the merged candidate set (its space: one fusion weight per configured
    # source, built by tuning from the quotas) and the whole pipeline.
    candidates: Annotated[
        CandidatesParams,
        ModelDecl(
            f"{_R}.candidates:CandidateRecommender",
            source=False,
            space=lambda t: {},
            test_params={
                "sources": {
                    "two_tower": {
                        "class": f"{_R}.two_tower.TwoTowerRecommender",
                        "params": {"ann": "hnsw", **_TINY_TOWER},
                    },
                    "covisit": {"class": f"{_R}.covisit.CovisitRecommender", "params": {}},
                    "trending": {"class": f"{_R}.trending.TrendingRecommender", "params": {"window_days": 1.0}},
                },
                "quotas": {"two_tower": 100, "covisit": 100, "trending": 100},
                "weights": {"trending": 0.5},
            },
        ),
    ] = Field(default_factory=CandidatesParams)
    feedrec: Annotated[
        FeedParams,
        ModelDecl(
            "feedrec.models.feed:FeedRecommender",
            threads=True,
            source=False,
            test_params={
                "candidates": {
                    "sources": {
                        "popularity": {"class": f"{_R}.popularity.PopularityRecommender", "params": {}},
                        "covisit": {"class": f"{_R}.covisit.CovisitRecommender", "params": {}},
                    },
                    "quotas": {"popularity": 100, "covisit": 100},
                },
                "ranker": {"n_estimators": 20, "min_data_in_leaf": 5, "num_threads": 1},
                "n_candidates": 100,
                "valid_ratio": 0.3,
            },
        ),
    ] = Field(default_factory=FeedParams)


def model_table() -> dict[str, ModelDecl]:
    """Every model, by name, in declaration order."""
    table: dict[str, ModelDecl] = {}
    for name, info in ModelsConfig.model_fields.items():
        decl = next((m for m in info.metadata if isinstance(m, ModelDecl)), None)
        if decl is None:
            raise TypeError(f"ModelsConfig.{name} carries no ModelDecl")
        table[name] = decl
    return table


#: Every model ``feedrec eval --models`` knows; ``candidates`` merges the retrieval sources and
#: ``feedrec`` is the whole pipeline (candidates, then a learned ranker).
MODEL_NAMES: tuple[str, ...] = tuple(model_table())


class EvalConfig(StrictModel):
    k: int = Field(10, ge=1)
    recall_cutoffs: list[int] = Field(default_factory=lambda: [100, 200, 500])  # candidate-set recall@N
    models: list[str] = Field(
        default_factory=lambda: ["popularity", "covisit", "als", "ease", "two_tower", "candidates", "feedrec"]
    )
    positive_types: list[EventType] = Field(default_factory=lambda: list(POSITIVE_EVENT_TYPES))
    # train, tune and compress score at most this many test users (a fixed random sample); None = all.
    # `feedrec eval` and the benchmarks always score every user (the shared protocol).
    max_test_users: int | None = Field(None, ge=1)


class TrainConfig(StrictModel):
    """``feedrec train``: what it fits, and how long it may tune first (validation only)."""

    model: str = "feedrec"
    tune: list[str] = Field(default_factory=lambda: ["candidates"])  # tuned before fitting; [] skips tuning
    ranker_max_impressions: int | None = Field(2_000_000, ge=1000)  # the latest ones train the impression ranker
    # After the test score, fit the served bundle once more on everything (test part included): what a
    # loop that retrains on its latest days wants; the manifest's test metrics stay those of the held-out fit.
    refit_on_all: bool = False
    # The retrieval's evidence as real-time ranker features (candidate sources' names): each source's
    # pair score, and where the sources rank the item; [] = none (the default: both lowered online CTR).
    realtime_pair_sources: list[str] = Field(default_factory=list)
    realtime_rank_sources: list[str] = Field(default_factory=list)
    tune_trials: int = Field(20, ge=1)
    tune_timeout_s: float = Field(300.0, gt=0)
    # Compare the impression rankers (LightGBM, DCN-v2 multi-task, calibrated) for the bundle's report;
    # the served real-time ranker is fitted either way. A retraining loop turns it off (minutes saved).
    evaluate_rankers: bool = True
    # Train on the latest window_days of events only (a sliding window: what `feedrec loop` retrains
    # on); None = the whole log.
    window_days: float | None = Field(None, gt=0)
    # Continue the production bundle's real-time ranker (LightGBM init_model) instead of boosting from
    # nothing, where that cannot leak (it was fitted before this fit's validation rows) and its features
    # match; otherwise a cold fit, and the manifest says why (feedrec.offline.realtime). What
    # `feedrec loop` retrains with (retrain.warm_start). The retrieval sources always refit.
    warm_start: bool = False
    # A fault drill: the served ranker's scores are shuffled among each request's candidates (what
    # the rollout's shadow and canary stages must stop). Never for a real bundle.
    drill_shuffled_ranker: bool = False
    # A harsher drill: the served ranker's calibrated scores are inverted (1 - p: the least likely
    # click first), as a flipped label or sign would. Never for a real bundle.
    drill_inverted_ranker: bool = False


class MonitorConfig(StrictModel):
    """``feedrec monitor``: the window it judges, and the thresholds that raise an alert."""

    window_hours: float = Field(6.0, gt=0)  # default window: this long before the latest event
    # What drift is measured against: `serving` (the same bundle's logged serving in the
    # baseline_hours before the window: an abrupt change stands out, the slow ones a deployment
    # lives with do not; no drift alerts until it has served that long) or `training` (its
    # training profile: a new policy changes what it is shown, so expect alerts from the first
    # hour). The training comparison is reported either way.
    reference: Literal["serving", "training"] = "serving"
    baseline_hours: float = Field(24.0, gt=0)
    bucket_hours: float = Field(1.0, gt=0)  # the statistics over time are per bucket of this length
    min_rows: int = Field(200, ge=1)  # a bucket (or window) with fewer logged rows is not judged
    # 0.2: the lower of the two common "significant shift" rules of thumb (0.2, 0.25). Over two
    # fresh steady states (20 shifted runs, 20 unshifted) 0.25 raised a feature alert after a
    # taste shift in 3, 0.2 in 8, with no false alarm either way; 0.15 raised 2 in 10
    # (docs/BENCHMARKS.md, "Monitoring")
    psi: float = Field(0.2, gt=0)  # a feature or the prediction drifted when its PSI reaches this ...
    # ... or null_factor times the PSI its windows reach by themselves within the serving baseline
    # (feedrec.monitoring.monitor._null: spans of the window's length starting every bucket; with a
    # day of baseline, the window's own hours a day earlier or the hours just before it, not the
    # day's most unusual hours, except for features counting a week or more: the whole day's),
    # whichever is larger.
    null_factor: float = Field(1.5, ge=0)
    # ... or, when set, its normed Wasserstein distance (numeric features: the values' shift in
    # units of the reference's standard deviation) reaches this, or null_factor times what the
    # baseline's windows reach by themselves. Reported either way; off by default: at Evidently's
    # default of 0.1, two windows of an unshifted world raised alerts (an hour's user features are
    # ~90 requests, and a served item's 1-day CTR moved 0.12 sd over a day; docs/BENCHMARKS.md).
    wasserstein: float | None = Field(None, gt=0)
    # ... or, when set, its mean shift (numeric features: the standardized mean difference between
    # the window and the span of equal length just before it; feedrec.metrics.drift.mean_shift)
    # reaches this, or mean_shift_null_factor times the largest the baseline's own adjacent spans
    # reach. An abrupt move of a counter's mean, which its deciles (mostly zeros) and the day-long
    # reference (its afternoon is not its night) hide. 0.15: between the conventional "negligible"
    # 0.1 and Cohen's "small" 0.2. None: reported, never alerted.
    mean_shift: float | None = Field(0.15, gt=0)
    # 2, not null_factor's 1.5: a day holds ~20 adjacent pairs of a window's length, overlapping,
    # and their largest understated how far an unshifted window strays (at 1.5: 2 false alarms in
    # 10 unshifted runs of a second steady state). Chosen on two steady states (20 + 20 runs), and
    # checked on a third (docs/BENCHMARKS.md, "Monitoring").
    mean_shift_null_factor: float = Field(2.0, ge=0)
    # Calibration alert: the ECE of logged predictions (against the clicks that followed) exceeds the
    # reference's by this much (served items are the ranker's top picks, so some over-prediction is
    # normal in serving; the serving baseline measures how much).
    ece: float = Field(0.03, gt=0)
    # ... and by more than this quantile of the ECE the window's predictions reach by chance were
    # they calibrated (labels drawn from them: at 1,000 rows about 0.04; an hour's window is noisy).
    ece_chance_quantile: float = Field(0.99, gt=0, lt=1)
    # Skew alert: more than this share of recomputed rows differs from what the server used by more
    # than the tolerance (feedrec.monitoring.skew: one event and 5 % for a counter, 5 % otherwise:
    # events in flight when the request was served). A counter that stopped updating differs on most.
    skew_mismatch: float = Field(0.1, gt=0, le=1)
    skew_requests: int = Field(200, ge=1)  # logged requests the skew check recomputes offline
    skew_grace_s: float = Field(600.0, ge=0)  # events this close before the store's as_of may have been in flight
    # Freshness alert: the sampled requests' median lag (their moment minus the latest event the
    # store had folded, in the events' time) passed this: a fold that stopped or runs far behind.
    # None: reported, never alerted. A feed whose events pause that long raises it too.
    max_lag_s: float | None = Field(3600.0, gt=0)
    attribution_s: float = Field(1800.0, gt=0)  # a click within this long of its feed labels the row
    watch_interval_s: float = Field(60.0, gt=0)  # `--watch`: wall seconds between runs
    # Features left out of drift alerts (still reported): the context a request sets (hour, weekday,
    # slot), and the age of the items served, which grows with the clock for a bundle's fixed
    # catalogue (it drifts from any earlier window by construction; a retraining resets it).
    ignore: list[str] = Field(default_factory=lambda: ["hour", "weekday", "position", "item_age_days"])


class BackendsConfig(StrictModel):
    """Which class holds each store, by name (as Feast names its store types): a new backend is one
    class and one line in ``feedrec.workspace.BACKENDS``."""

    event_store: str = "local"  # local (Parquet + DuckDB) | spark (Parquet by date, read with Spark)
    online_store: str = "local"  # local (in process, a snapshot file) | redis (shared by every process)
    registry: str = "local"
    # Redis (online_store: redis): a redis:// URL, and the key prefix (default: one per workspace path).
    redis_url: str | None = None
    redis_namespace: str | None = None
    # The offline engine: the feature build and batch scoring run in DuckDB/polars or as Spark jobs.
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[*]"  # a cluster's master URL (spark://host:7077, yarn, k8s://...)
    spark_conf: dict[str, str] = Field(default_factory=dict)  # extra Spark settings (spark.executor.memory, ...)

    @model_validator(mode="after")
    def _redis_has_a_url(self) -> BackendsConfig:
        if self.online_store == "redis" and not self.redis_url:
            raise ValueError("backends.online_store is redis but backends.redis_url is not set (redis://host:port/db)")
        return self


class FeedrecConfig(StrictModel):
    """The whole configuration: one file, every knob."""

    workspace: Path = Path("workspace")
    backends: BackendsConfig = Field(default_factory=BackendsConfig)
    threads: int = Field(2, ge=1)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    @model_validator(mode="after")
    def _known_models(self) -> FeedrecConfig:
        unknown = [m for m in self.eval.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"eval.models: unknown model(s) {unknown}; known: {sorted(MODEL_NAMES)}")
        if self.train.model not in MODEL_NAMES:
            raise ValueError(f"train.model: unknown model {self.train.model!r}; known: {sorted(MODEL_NAMES)}")
        table = model_table()
        bad = [s for s in self.models.candidates.quotas if s not in table or not table[s].source]
        if bad:
            raise ValueError(f"models.candidates.quotas: unknown source(s) {bad}; known: {sorted(MODEL_NAMES)}")
        quotas = self.models.candidates.quotas
        for key in ("realtime_pair_sources", "realtime_rank_sources"):
            stray = [s for s in getattr(self.train, key) if s not in quotas]
            if stray:
                raise ValueError(f"train.{key}: {stray} are not candidate sources; these are: {sorted(quotas)}")
        return self


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message says what to fix."""


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"split.test_ratio=0.2"`` -> ``("split.test_ratio", 0.2)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    return key.strip(), yaml.safe_load(raw)


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> FeedrecConfig:
    """Load the config from ``path`` (defaults when None), then apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    for item in overrides or []:
        _set_dotted(data, *parse_override(item))
    try:
        return FeedrecConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from exc
