"""``feedrec train``: the training pipeline, top to bottom.

load events -> split (train / valid / test) -> tune (Optuna, budgeted, on train vs valid only) ->
fit on train, score on valid (the gate's evidence)
-> refit on train + valid, score on test -> train the impression ranker on point-in-time features
(when the log has impressions) -> write a versioned bundle with its manifest and HTML report ->
promotion gate (production changes only if the new bundle beats it on validation NDCG@10 without
losing AUC or calibration).
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl

from feedrec.config import FeedrecConfig
from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.logs import get_logger
from feedrec.models import build_model
from feedrec.models.base import Recommender
from feedrec.models.feed import FeedRecommender
from feedrec.models.ranking.realtime import RealtimeRanker
from feedrec.models.retrieval.candidates import reusing_fits
from feedrec.monitoring.profile import profile_artifacts
from feedrec.offline.jobs import load_store_side
from feedrec.offline.protocol import (
    dedupe_earliest,
    evaluate_recommender,
    item_topics,
    sample_test_users,
    targets_after,
)
from feedrec.offline.ranking_eval import RankerReport, evaluate_rankers, feature_builder, served_ranker_metrics
from feedrec.offline.realtime import fit_realtime_ranker
from feedrec.offline.report import render_report
from feedrec.offline.split import Split, train_valid_test
from feedrec.offline.tuning import tune
from feedrec.registry import (
    GatePolicy,
    IncompatibleBundle,
    Manifest,
    ModelRegistry,
    build_manifest,
    check_feature_schema,
    gate_decision,
)
from feedrec.schemas import EVENT_SCHEMA
from feedrec.workspace import Workspace

log = get_logger("train")


@dataclass
class TrainResult:
    manifest: Manifest
    promoted: bool
    reason: str
    bundle: str
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage, in order


@dataclass
class _StageClock:
    """Passes each stage on to ``report``, logs it, and times it (until the next one starts)."""

    report: Callable[[str], None]
    seconds: dict[str, float] = field(default_factory=dict)
    _current: tuple[str, float] | None = None

    def start(self, stage: str) -> None:
        self.stop()
        log.info("train stage", extra={"fields": {"stage": stage}})
        self._current = (stage, time.perf_counter())
        self.report(stage)

    def stop(self) -> None:
        if self._current is not None:
            stage, began = self._current
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - began, 1)
            peak_gib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB on Linux
            fields = {"stage": stage, "seconds": self.seconds[stage], "peak_rss_gib_so_far": peak_gib}
            log.info("train stage done", extra={"fields": fields})
            self._current = None


def _fit_and_score(
    model_name: str, train_df: pl.DataFrame, score_df: pl.DataFrame, side: SideInfo, cfg: FeedrecConfig
) -> tuple[Recommender, dict[str, float], dict[str, float]]:
    """Fit ``model_name`` on ``train_df`` and score it on ``score_df`` under the benchmark protocol:
    (model, its ranking metrics, the metrics of the ranker it serves)."""
    data = sample_test_users(targets_after(train_df, score_df), cfg.eval.max_test_users)
    model = build_model(model_name, cfg).fit(data.train, side)
    if data.test_users.size == 0:
        return model, {}, {}
    metrics = evaluate_recommender(
        model, data, k=cfg.eval.k, recall_cutoffs=tuple(cfg.eval.recall_cutoffs), item_topics=item_topics(side, data)
    )
    return model, {key: round(value, 6) for key, value in metrics.items()}, served_ranker_metrics(model, data)


def train(
    cfg: FeedrecConfig,
    *,
    model_name: str = "feedrec",
    policy: GatePolicy | None = None,
    on_stage: Callable[[str], None] = lambda _: None,
    promote: bool = True,
) -> TrainResult:
    """Train, register, gate; with ``promote`` (the default), promote when the gate says so (a
    continuous-training loop passes False and takes the bundle through shadow and canary first)."""
    cfg = cfg.model_copy(deep=True)  # tuning writes its best parameters here, not into the caller's config
    clock = _StageClock(on_stage)
    on_stage = clock.start
    on_stage("load events")
    # One scan: impressions feed the ranker, the positive types feed retrieval.
    columns = [c for c in EVENT_SCHEMA.names if c != "event_id"]
    space = Workspace.from_config(cfg)
    all_events = pl.DataFrame(pl.from_arrow(space.events.scan(columns=columns)))
    if cfg.train.window_days is not None and all_events.height:
        horizon = all_events["timestamp"].max() - timedelta(days=cfg.train.window_days)  # type: ignore[operator]
        all_events = all_events.filter(pl.col("timestamp") >= horizon)
    events = all_events.filter(pl.col("type").is_in([t.value for t in cfg.eval.positive_types]))
    side = load_store_side(space)
    if events.height == 0:
        raise ValueError(f"{cfg.workspace} holds no positive interactions: ingest events first (feedrec ingest)")

    on_stage("split")
    df = dedupe_earliest(events.select("user_id", "item_id", "timestamp"))
    split = train_valid_test(df, cfg.split)  # the one split: tuning, the gate and the test all take it

    registry = space.registry
    version = registry.next_version()
    # Tuning fits the candidate sources on the training part, and so does the pipeline's fit scored on
    # validation (for serving, after its ranker's stage 1): the second reuses the first, lists included.
    # The fits are released when the block ends, before the impression ranker builds its features.
    with reusing_fits():
        tuned = _tune(cfg, split, side, version, on_stage)
        on_stage(f"fit {model_name} on train, score on validation")
        _, valid_metrics, served_ranker = _fit_and_score(model_name, split.train, split.valid, side, cfg)
        on_stage(f"refit {model_name} on train + validation, score on test")
        model, test_metrics, _ = _fit_and_score(model_name, split.rest, split.test, side, cfg)
        if cfg.train.refit_on_all:
            on_stage(f"refit {model_name} on everything (train.refit_on_all)")
            model = build_model(model_name, cfg).fit(Interactions.from_frame(df), side)

    cuts = split.cuts
    del events, split  # the retrieval stages' frames: the ranker needs the memory
    gc.collect()
    ranker: RankerReport | None = None
    realtime: dict[str, float] = {}
    warm_start: dict[str, Any] | None = None
    if all_events.filter(pl.col("type") == "impression").height > 1000:
        items = pl.DataFrame(pl.from_arrow(side.items)) if side.items is not None else None
        builder = feature_builder(cfg.backends)  # the configured engine builds the ranking set
        if cfg.train.evaluate_rankers:
            on_stage("impression ranker")
            ranker = evaluate_rankers(
                all_events,
                items,
                threads=cfg.threads,
                max_impressions=cfg.train.ranker_max_impressions,
                builder=builder,
            )
        if isinstance(model, FeedRecommender):
            source, warm, why_not = _warm_ranker(registry) if cfg.train.warm_start else (None, None, None)
            on_stage("real-time ranker (served)" + (f", warm from {source}" if warm else ""))
            realtime = fit_realtime_ranker(
                model,
                all_events,
                items,
                side,
                max_impressions=cfg.train.ranker_max_impressions,
                pair_sources=cfg.train.realtime_pair_sources,
                rank_sources=cfg.train.realtime_rank_sources,
                threads=cfg.threads,
                drill_shuffled=cfg.train.drill_shuffled_ranker,
                drill_inverted=cfg.train.drill_inverted_ranker,
                builder=builder,
                warm=warm,
            )
            if cfg.train.warm_start:
                info = model.realtime_.warm_start if model.realtime_ is not None and warm else None
                warm_start = {"from": source, "used": False} | (info or {"reason": why_not})

    on_stage("register the bundle")
    manifest = build_manifest(
        version,
        model_name,
        df,
        cfg,
        # The gate judges the pipeline's validation metrics and its retrieval-feature ranker on
        # validation candidates. The real-time ranker the server ranks with (when the log has
        # impressions) is scored on its own latest slice of impressions, reported beside them.
        {"valid": valid_metrics, "test": test_metrics, "ranker": served_ranker}
        | ({"impression_ranker": ranker.models["lightgbm_calibrated"]} if ranker else {})
        | ({"realtime_ranker": realtime} if realtime else {}),
        extra_params={"tuning": tuned} | ({"warm_start": warm_start} if warm_start else {}),
    )
    manifest.data_window["split"] = cuts  # where train, validation and test began and ended
    decision = gate_decision(manifest, registry.production(), policy or GatePolicy(metric=f"ndcg@{cfg.eval.k}"))
    manifest.gate = decision
    registry.register(model, manifest, render_report(manifest, ranker), artifacts=profile_artifacts(model))
    if decision["promote"] and promote:
        registry.promote(manifest.version, reason=decision["reason"])
    clock.stop()
    return TrainResult(
        manifest,
        bool(decision["promote"]),
        str(decision["reason"]),
        str(registry.model_dir(manifest.version).parent),
        clock.seconds,
    )


def _warm_ranker(registry: ModelRegistry) -> tuple[str | None, RealtimeRanker | None, str | None]:
    """The production bundle's real-time ranker, what a warm start continues: (its version, the
    ranker, None), or why there is none to continue (the version may still be named)."""
    production = registry.production()
    if production is None:
        return None, None, "no production bundle"
    folder = registry.model_dir(production.version) / "realtime"
    if not folder.is_dir():
        return production.version, None, "production has no real-time ranker"
    try:
        check_feature_schema(production)
        return production.version, RealtimeRanker.load(folder), None
    except (IncompatibleBundle, ValueError) as exc:
        return production.version, None, f"production's ranker cannot be continued: {exc}"


def _tune(
    cfg: FeedrecConfig, split: Split, side: SideInfo, version: str, on_stage: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Tune each model in ``train.tune`` on the split's train vs validation parts and put the best
    parameters into ``cfg`` (train's own copy)."""
    tuned: dict[str, dict[str, Any]] = {}
    for name in cfg.train.tune:
        on_stage(f"tune {name} (validation only, {cfg.train.tune_trials} trials or {cfg.train.tune_timeout_s:.0f} s)")
        result = tune(
            name,
            split,
            side,
            cfg,
            out_dir=cfg.workspace / "tuning",
            n_trials=cfg.train.tune_trials,
            timeout_s=cfg.train.tune_timeout_s,
            k=cfg.eval.k,
            seed=42,
            study_name=f"{name}-{version}",  # a fresh study per training run
        )
        if result.best_params:
            section = getattr(cfg.models, name)
            setattr(cfg.models, name, section.model_copy(update=result.best_params))
        tuned[name] = {
            "best_params": result.best_params,
            "validation": result.best_value,
            "defaults": result.default_value,
            "trials": result.n_trials,
        }
    return tuned
