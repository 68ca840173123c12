"""Entry functions of the offline stages, one per CLI command. Each reads top to bottom."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from feedrec.config import FeedrecConfig
from feedrec.data.ingest import IngestReport, ingest_entities, ingest_events
from feedrec.data.movielens import side_tables
from feedrec.data.side import SideInfo
from feedrec.data.simulator import SimulatedFeed, simulate
from feedrec.data.sources import read_events
from feedrec.data.validation import validate_events
from feedrec.logs import get_logger
from feedrec.models.base import Recommender
from feedrec.models.feed import FeedRecommender
from feedrec.monitoring.profile import profile_artifacts
from feedrec.offline.cold_start import ColdStartReport, evaluate_cold_start
from feedrec.offline.protocol import EvalReport, dedupe_earliest, run_protocol
from feedrec.offline.ranking_eval import RankerReport, evaluate_rankers
from feedrec.offline.realtime import fit_realtime_ranker
from feedrec.offline.report import render_report
from feedrec.offline.split import Protocol, Split, train_valid_test
from feedrec.offline.tuning import TuneResult, tune
from feedrec.registry import build_manifest
from feedrec.workspace import Workspace

log = get_logger("jobs")
SERVED_MODEL = "feedrec"  # the model `feedrec demo` registers and serves
Progress = Callable[[int, int], None]


def load_file_events(path: Path, *, fmt: str, mapping: dict[str, str] | None, cfg: FeedrecConfig) -> pl.DataFrame:
    """Positive interactions of a file, validated (refused rows are counted in the log, not used)."""
    raw = read_events(path, fmt=fmt, mapping=mapping)
    checked = validate_events(raw.table, cfg.ingest)
    refused = checked.quarantined.num_rows + len(raw.rejects)
    if refused:
        log.warning("refused rows", extra={"fields": {"source": str(path), "rows": refused}})
    df = pl.from_arrow(checked.events)
    assert isinstance(df, pl.DataFrame)
    return df.filter(pl.col("type").is_in([t.value for t in cfg.eval.positive_types]))


def load_file_side(path: Path, *, fmt: str) -> SideInfo:
    """Item and user side information for an events file: for MovieLens, the files beside it."""
    if fmt == "movielens" or path.name in ("u.data", "ratings.dat"):
        items, users = side_tables(path)
        return SideInfo(items=items, users=users)
    return SideInfo()


def split_interactions(events: pl.DataFrame, cfg: FeedrecConfig) -> Split:
    """The one split of a log of positive events: deduplicated to each (user, item)'s earliest
    interaction, then train / validation / test by ``cfg.split``."""
    return train_valid_test(dedupe_earliest(events.select("user_id", "item_id", "timestamp")), cfg.split)


def load_store_side(workspace: Workspace) -> SideInfo:
    store = workspace.events
    return SideInfo(items=store.items(), users=store.users())


def load_events_and_side(
    cfg: FeedrecConfig, *, events: Path | None, fmt: str = "auto", mapping: dict[str, str] | None = None
) -> tuple[pl.DataFrame, SideInfo, str]:
    """(positive interactions, side information, data set name) from a file, or the workspace's store."""
    if events is not None:
        frame = load_file_events(events, fmt=fmt, mapping=mapping, cfg=cfg)
        return frame, load_file_side(events, fmt=fmt), f"{events.parent.name}/{events.name}"
    space = Workspace.from_config(cfg)
    return load_store_events(space, cfg), load_store_side(space), str(cfg.workspace)


def load_store_events(workspace: Workspace, cfg: FeedrecConfig) -> pl.DataFrame:
    """Positive interactions from the workspace's event store."""
    table = workspace.events.scan(
        columns=["user_id", "item_id", "timestamp", "type"], types=[t.value for t in cfg.eval.positive_types]
    )
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


def evaluate(
    events: pl.DataFrame,
    *,
    dataset: str,
    protocol: Protocol,
    k: int,
    models: list[str],
    cfg: FeedrecConfig,
    side: SideInfo | None = None,
    on_model: Callable[[str], None] | None = None,
    on_fitted: Callable[[str, Recommender], None] | None = None,
    split: Split | None = None,
) -> EvalReport:
    """``feedrec eval``: the benchmark protocol over the named models (on ``split`` when the caller
    made it already, with the same protocol)."""
    if events.height == 0:
        raise ValueError(f"{dataset}: no positive interactions of types {[t.value for t in cfg.eval.positive_types]}")
    return run_protocol(
        events,
        dataset=dataset,
        protocol=protocol,
        k=k,
        model_names=models,
        cfg=cfg,
        side=side,
        on_model=on_model,
        on_fitted=on_fitted,
        split=split,
    )


@dataclass
class DemoResult:
    simulated: dict[str, str]
    n_events: int
    ingest: IngestReport
    split_sizes: dict[str, int]
    report: EvalReport
    rankers: RankerReport
    served: Path | None = None  # the workspace whose registry holds the demo's production bundle
    version: str | None = None


def demo_stages(cfg: FeedrecConfig) -> list[str]:
    """The stages ``demo`` reports through ``on_stage``, in order (for a progress bar)."""
    return [
        "simulate",
        "ingest",
        "split",
        *[f"fit + evaluate: {m}" for m in cfg.eval.models],
        "rank impressions",
        "register the bundle",
    ]


def demo(cfg: FeedrecConfig, *, on_stage: Callable[[str], None], progress: Progress) -> DemoResult:
    """``feedrec demo``: simulate -> ingest -> split -> fit and evaluate retrieval and the whole
    pipeline -> train the impression ranker (with calibration) on point-in-time features."""
    workspace = cfg.workspace / "demo"
    on_stage("simulate")
    feed: SimulatedFeed = simulate(cfg.simulator, progress=progress)
    files = feed.write(workspace / "simulated")

    on_stage("ingest")
    space = Workspace(workspace / "store", cfg.backends)
    store = space.events
    ingested = ingest_events(files["events"], store, space.root, cfg.ingest)
    store.put_items(feed.items)
    store.put_users(feed.users)

    on_stage("split")
    events = load_store_events(space, cfg)
    split = split_interactions(events, cfg)  # raises LeakageError if a split saw the future
    sizes = {"train": split.train.height, "valid": split.valid.height, "test": split.test.height}

    on_stage("fit + evaluate")
    fitted: dict[str, Recommender] = {}
    report = evaluate(
        events,
        dataset=f"simulated ({cfg.simulator.n_users} users, {cfg.simulator.n_items} items, {cfg.simulator.days} days)",
        protocol=cfg.split.protocol,
        k=cfg.eval.k,
        models=cfg.eval.models,
        cfg=cfg,
        side=load_store_side(space),
        on_model=lambda name: on_stage(f"fit + evaluate: {name}"),
        on_fitted=lambda name, model: fitted.update({name: model}) if name == SERVED_MODEL else None,
        split=split,
    )

    on_stage("rank impressions")
    store_events = pl.DataFrame(pl.from_arrow(store.scan()))
    items = pl.DataFrame(pl.from_arrow(store.items()))
    rankers = evaluate_rankers(store_events, items, threads=cfg.threads)
    served = fitted.get(SERVED_MODEL)
    if isinstance(served, FeedRecommender):  # the bundle ranks with real-time features when served
        fit_realtime_ranker(served, store_events, items, load_store_side(space), threads=cfg.threads)

    version = None
    if SERVED_MODEL in fitted:  # the whole pipeline, as evaluated, becomes the bundle the demo serves
        on_stage("register the bundle")
        registry = space.registry
        manifest = build_manifest(
            registry.next_version(), SERVED_MODEL, events, cfg, {"test": report.models[SERVED_MODEL]}
        )
        model = fitted[SERVED_MODEL]
        registry.register(model, manifest, render_report(manifest, rankers), artifacts=profile_artifacts(model))
        registry.promote(manifest.version, reason="feedrec demo")
        version = manifest.version
    return DemoResult(files, feed.events.num_rows, ingested, sizes, report, rankers, space.root, version)


def run_simulation(cfg: FeedrecConfig, out: Path, *, progress: Progress) -> tuple[SimulatedFeed, dict[str, str]]:
    """``feedrec simulate``: write a simulated feed log (events, items, users, ground truth) to ``out``."""
    feed = simulate(cfg.simulator, progress=progress)
    return feed, feed.write(out)


def ingest_file(
    cfg: FeedrecConfig, path: Path, *, kind: str = "events", fmt: str = "auto", mapping: dict[str, str] | None = None
) -> IngestReport:
    """``feedrec ingest``: validate ``path`` and store its good rows in the workspace (events, items
    or users); the refused ones go to the quarantine with their reasons."""
    if kind not in ("events", "items", "users"):
        raise ValueError(f"--kind must be events, items or users, not {kind!r}")
    space = Workspace.from_config(cfg)
    if kind == "events":
        return ingest_events(path, space.events, space.root, cfg.ingest, fmt=fmt, mapping=mapping)
    return ingest_entities(path, space.events, space.root, kind=kind)


def evaluate_source(
    cfg: FeedrecConfig,
    models: list[str],
    *,
    events: Path | None = None,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    on_model: Callable[[str], None] | None = None,
) -> EvalReport:
    """``feedrec eval``: load the events (a file, or the workspace) and run the protocol on ``models``."""
    frame, side, dataset = load_events_and_side(cfg, events=events, fmt=fmt, mapping=mapping)
    return evaluate(
        frame,
        dataset=dataset,
        protocol=cfg.split.protocol,
        k=cfg.eval.k,
        models=models,
        cfg=cfg,
        side=side,
        on_model=on_model,
    )


def tune_source(
    cfg: FeedrecConfig,
    model: str,
    *,
    events: Path | None = None,
    fmt: str = "auto",
    n_trials: int = 30,
    timeout_s: float = 600.0,
    on_trial: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """``feedrec tune``: load, split once, and search ``model``'s parameters on train vs validation."""
    frame, side, _ = load_events_and_side(cfg, events=events, fmt=fmt)
    return tune(
        model,
        split_interactions(frame, cfg),
        side,
        cfg,
        out_dir=cfg.workspace / "tuning",
        n_trials=n_trials,
        timeout_s=timeout_s,
        k=cfg.eval.k,
        on_trial=on_trial,
    )


def cold_start_report(
    cfg: FeedrecConfig,
    models: list[str],
    *,
    k: int = 10,
    new_item_cutoff: int = 100,
    on_model: Callable[[str], None] | None = None,
) -> ColdStartReport:
    """``feedrec cold-start``: the workspace's events and items, evaluated on the cold-start slices."""
    frame, side, _ = load_events_and_side(cfg, events=None)
    if side.items is None or side.items.num_rows == 0:
        raise ValueError(f"{cfg.workspace} holds no items: ingest them with `feedrec ingest FILE --kind items`")
    return evaluate_cold_start(
        frame, side, models=models, cfg=cfg, k=k, new_item_cutoff=new_item_cutoff, on_model=on_model
    )
