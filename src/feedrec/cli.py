"""The ``feedrec`` command: each command parses its options, calls one function below it
(``feedrec.offline.jobs``, ``train``, ``tuning``, the registry, ``online.server``, ``online.batch``)
and prints what it returns (``feedrec.render``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from feedrec import render
from feedrec.cli_continuous import loop
from feedrec.cli_experiments import experiment_app, ope
from feedrec.cli_monitor import monitor
from feedrec.config import ConfigError, FeedrecConfig, load_config
from feedrec.console import ConfigOpt, JsonOpt, SetOpt, WorkspaceOpt, err, out
from feedrec.console import emit as _emit
from feedrec.console import fail as _fail
from feedrec.console import progress as _progress
from feedrec.data.sources import FORMATS, SourceError, parse_mapping
from feedrec.logs import setup_logging
from feedrec.models import MODEL_NAMES
from feedrec.offline.split import LeakageError

app = typer.Typer(
    name="feedrec",
    help="A personalized feed recommendation system: ingest, simulate, evaluate.",
    no_args_is_help=True,
    add_completion=False,
)
EventsOpt = Annotated[
    Path | None, typer.Option("--events", "-e", help="Events file; without it, the workspace's store.")
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}.")]
MapOpt = Annotated[str | None, typer.Option("--map", help="Column mapping, e.g. user_id=userId,item_id=movieId.")]


def _config(config: Path | None, overrides: list[str] | None, workspace: Path | None = None) -> FeedrecConfig:
    cfg = load_config(config, overrides)
    if workspace is not None:
        cfg.workspace = workspace
    return cfg


def _model_names(text: str | None, default: list[str]) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()] if text else list(default)
    unknown = [m for m in names if m not in MODEL_NAMES]
    if unknown or not names:
        raise ValueError(f"--models: unknown {unknown or 'empty list'}; choose from {', '.join(MODEL_NAMES)}")
    return names


def _simulator(cfg: FeedrecConfig, **values: int | None) -> FeedrecConfig:
    """The command-line simulator options (given ones only) over the config's."""
    for key, value in values.items():
        if value is not None:
            setattr(cfg.simulator, key, value)
    return cfg


@app.callback()
def main(log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning") -> None:
    setup_logging(log_level)


@app.command()
def simulate(
    users: Annotated[int | None, typer.Option("--users", help="Users (config: simulator.n_users).")] = None,
    items: Annotated[int | None, typer.Option("--items", help="Items (config: simulator.n_items).")] = None,
    days: Annotated[int | None, typer.Option("--days", help="Days of logs (config: simulator.days).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (config: simulator.seed).")] = None,
    drift_day: Annotated[int | None, typer.Option("--drift-day", help="Day on which tastes shift.")] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the Parquet files.")] = Path("simulated"),
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a simulated feed log: events, items, users and the ground truth, as Parquet."""
    from feedrec.offline.jobs import run_simulation

    try:
        cfg = _simulator(
            _config(config, overrides), n_users=users, n_items=items, days=days, seed=seed, drift_day=drift_day
        )
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    with _progress() as bar:
        task = bar.add_task("simulating sessions", total=None)
        feed, files = run_simulation(
            cfg, output, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    n = {"events": feed.events.num_rows, "items": feed.items.num_rows, "users": feed.users.num_rows}
    _emit(
        as_json,
        n | {"files": files},
        f"wrote {n['events']:,} events, {n['items']:,} items, {n['users']:,} users to {output}/",
    )


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="CSV, TSV, Parquet, JSONL or MovieLens ratings file.")],
    fmt: FormatOpt = "auto",
    mapping: MapOpt = None,
    kind: Annotated[str, typer.Option("--kind", help="events, items or users.")] = "events",
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a file and store its good rows; quarantine the rest with the reason."""
    from feedrec.offline import jobs

    try:
        cfg = _config(config, overrides, workspace)
        with err.status(f"ingesting {file} ..."):
            report = jobs.ingest_file(cfg, file, kind=kind, fmt=fmt, mapping=parse_mapping(mapping))
    except (ConfigError, SourceError, ValueError) as exc:
        _fail(str(exc))
    notes = [f"quarantined rows, with the reason: {report.quarantine_file}"] if report.quarantine_file else []
    notes += [f"ignored columns: {', '.join(report.ignored_columns)}"] if report.ignored_columns else []
    _emit(as_json, report.to_dict(), render.ingest_table(report.to_dict()), *notes)


@app.command()
def stats(workspace: WorkspaceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """What the workspace's event store holds."""
    from feedrec.workspace import Workspace

    cfg = _config(config, None, workspace)
    data = Workspace.from_config(cfg).events.stats()
    _emit(as_json, data, render.stats_table(data, f"event store · {cfg.workspace}"))


@app.command("eval")
def eval_(
    events: EventsOpt = None,
    fmt: FormatOpt = "auto",
    mapping: MapOpt = None,
    protocol: Annotated[str | None, typer.Option("--protocol", help="user or global (config: split.protocol).")] = None,
    k: Annotated[int | None, typer.Option("--k", help="Cut-off of the top-k metrics (config: eval.k).")] = None,
    models: Annotated[
        str | None, typer.Option("--models", help=f"Comma-separated, from: {', '.join(MODEL_NAMES)}.")
    ] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the benchmark protocol for the named models and print their metrics."""
    from feedrec.offline import jobs

    try:
        given = {"split.protocol": protocol, "eval.k": k}  # options are config overrides, validated as such
        cfg = _config(
            config, [*(overrides or []), *(f"{key}={v}" for key, v in given.items() if v is not None)], workspace
        )
        names = _model_names(models, cfg.eval.models)
        with _progress() as bar:
            task = bar.add_task("models", total=len(names))
            report = jobs.evaluate_source(
                cfg,
                names,
                events=events,
                fmt=fmt,
                mapping=parse_mapping(mapping),
                on_model=lambda n: bar.update(task, description=f"fit + evaluate {n}", advance=int(n != names[0])),
            )
    except (ConfigError, SourceError, ValueError, LeakageError) as exc:
        _fail(str(exc))
    _emit(as_json, report.to_dict(), render.metrics_table(report.to_dict()))


@app.command()
def tune(
    model: Annotated[
        str, typer.Option("--model", help="Model to tune: als, two_tower, covisit or candidates (fusion weights).")
    ] = "als",
    events: EventsOpt = None,
    fmt: FormatOpt = "auto",
    trials: Annotated[int, typer.Option("--trials", help="Most trials to run.")] = 30,
    timeout: Annotated[float, typer.Option("--timeout", help="Time budget in seconds.")] = 600.0,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a model's hyperparameters with Optuna on the validation split (never the test split)."""
    from feedrec.offline import jobs

    try:
        cfg = _config(config, overrides, workspace)
        with _progress() as bar:
            task = bar.add_task(f"tuning {model}", total=trials)
            best = [0.0]

            def on_trial(number: int, value: float) -> None:
                best[0] = max(best[0], value)
                bar.update(task, advance=1, description=f"tuning {model} (best NDCG {best[0]:.4f})")

            result = jobs.tune_source(
                cfg, model, events=events, fmt=fmt, n_trials=trials, timeout_s=timeout, on_trial=on_trial
            )
    except (ConfigError, SourceError, ValueError) as exc:
        _fail(str(exc))
    _emit(
        as_json,
        result.to_dict(),
        f"{model}: validation {result.metric} {result.best_value:.4f} (defaults {result.default_value:.4f}) "
        f"after {result.n_trials} trials in {result.seconds:.0f}s",
        f"best parameters: {result.best_params or '(the defaults)'}",
        f"study: {result.study_path}; config snippet: {result.params_path}",
    )


@app.command("train")
def train_cmd(
    model: Annotated[
        str | None, typer.Option("--model", help="The model to train and register (config: train.model).")
    ] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on the workspace's events, register a versioned bundle, and promote it if it passes the gate."""
    from feedrec.offline.train import train

    try:
        cfg = _config(config, overrides, workspace)
        name = _model_names(model, [cfg.train.model])[0]
        with _progress() as bar:
            task = bar.add_task("train", total=None)
            result = train(cfg, model_name=name, on_stage=lambda stage: bar.update(task, description=f"train: {stage}"))
    except (ConfigError, ValueError, LeakageError) as exc:
        _fail(str(exc))
    _emit(as_json, render.train_json(result), *render.train_lines(result))


app.add_typer(experiment_app, name="experiment")
app.command("ope")(ope)
app.command("monitor")(monitor)
app.command("loop")(loop)

models_app = typer.Typer(help="The model registry: list, show, promote, roll back bundles.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _registry(workspace: Path | None, config: Path | None) -> Any:
    from feedrec.workspace import Workspace

    return Workspace.from_config(_config(config, None, workspace)).registry


@models_app.command("list")
def models_list(workspace: WorkspaceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every bundle, newest last; the production one is marked."""
    bundles = _registry(workspace, config).list()
    _emit(as_json, render.registry_json(bundles), render.registry_table(bundles))


def _on_registry(workspace: Path | None, config: Path | None, action: Any) -> Any:
    """Run ``action(registry)``; a registry error is a clear message and exit code 2."""
    from feedrec.registry import RegistryError

    try:
        return action(_registry(workspace, config))
    except RegistryError as exc:
        _fail(str(exc))


VersionArg = Annotated[str, typer.Argument(help="Bundle version, e.g. v0003.")]


@models_app.command("show")
def models_show(version: VersionArg, workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """A bundle's manifest, as JSON."""
    from dataclasses import asdict

    manifest = _on_registry(workspace, config, lambda r: r.get(version))
    print(json.dumps(asdict(manifest), indent=2, default=str))


@models_app.command("promote")
def models_promote(version: VersionArg, workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Put a bundle in production by hand (bypasses the gate; recorded in the history)."""
    m = _on_registry(workspace, config, lambda r: r.promote(version, reason="manual promotion"))
    out.print(f"{m.version} is now in production")


@models_app.command("rollback")
def models_rollback(workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Return production to the bundle served before the current one."""
    m = _on_registry(workspace, config, lambda r: r.rollback())
    out.print(f"rolled back: {m.version} is in production again")


@models_app.command("history")
def models_history(workspace: WorkspaceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every transition, oldest first: promotions and rollbacks, and the retraining loop's stages
    (trigger, trained, gate, shadow, canary, approval) with their reasons."""
    entries = _on_registry(workspace, config, lambda r: r.history())
    _emit(as_json, entries, render.history_table(entries))


ReasonOpt = Annotated[str | None, typer.Option(help="Why (recorded in the history).")]


def _decide(version: str, action: str, reason: str | None, workspace: Path | None, config: Path | None) -> None:
    _on_registry(workspace, config, lambda r: r.record(version, action, reason or f"{action} by hand"))


@models_app.command("approve")
def models_approve(
    version: VersionArg, reason: ReasonOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None
) -> None:
    """Approve a candidate the loop holds for approval (deploy: approval); the loop promotes it."""
    _decide(version, "approve", reason, workspace, config)
    out.print(f"{version} approved: `feedrec loop` promotes it at its next look")


@models_app.command("reject")
def models_reject(
    version: VersionArg, reason: ReasonOpt = None, workspace: WorkspaceOpt = None, config: ConfigOpt = None
) -> None:
    """Reject a candidate the loop holds for approval; it is not promoted."""
    _decide(version, "reject", reason, workspace, config)
    out.print(f"{version} rejected")


@models_app.command("compress")
def models_compress(
    version: Annotated[str, typer.Argument(help="Bundle version to compress.")],
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="int8 index: sq8 (exact scan) or hnsw_sq8; default: the twin of the current one."),
    ] = None,
    max_loss: Annotated[float, typer.Option("--max-loss", help="Largest relative NDCG@k loss accepted.")] = 0.01,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register an int8 twin of a bundle (8-bit item vectors in its ANN index) if it keeps NDCG@k
    within --max-loss of the original on the held-out test part; exit 1 when the gate refuses."""
    from feedrec.offline.compression import compress_bundle
    from feedrec.registry import RegistryError

    try:
        result = compress_bundle(_config(config, None, workspace), version, kind=kind, max_loss=max_loss)
    except (ConfigError, RegistryError, ValueError) as exc:
        _fail(str(exc))
    (out if result.version else err).print(render.compress_line(result, version))
    if result.version is None:
        raise typer.Exit(1)


@app.command()
def serve(
    workspace: WorkspaceOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default 127.0.0.1, loopback).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8000).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Server processes (default 1); each tails the event store.")
    ] = None,
) -> None:
    """Serve feeds from the production bundle (FastAPI + uvicorn); docs at /docs."""
    from feedrec.online.server import run_server
    from feedrec.online.settings import ServeSettings

    given = {"workspace": workspace, "host": host, "port": port, "workers": workers}
    overrides = {key: v for key, v in given.items() if v is not None}
    settings = ServeSettings(**overrides)  # type: ignore[arg-type]
    err.print(f"serving {settings.workspace} on http://{settings.host}:{settings.port}, {settings.workers} worker(s)")
    run_server(settings, overrides)


@app.command()
def traffic(
    world: Annotated[Path, typer.Option("--world", help="A `feedrec simulate --out` folder (or its world/).")],
    url: Annotated[str, typer.Option("--url", help="The feedrec server (loopback only).")] = "http://127.0.0.1:8000",
    seconds: Annotated[float, typer.Option("--seconds", help="Wall-clock seconds to run.")] = 60.0,
    rps: Annotated[float, typer.Option("--rps", help="Sessions per wall-clock second, on average.")] = 20.0,
    speed: Annotated[float, typer.Option("--speed", help="Simulated hours per wall-clock second.")] = 1.0,
    drift_at: Annotated[
        str | None,
        typer.Option("--drift-at", help="Shift tastes and the topic mix at this simulated ISO time, or 'now'."),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Items per feed.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the sessions (the same seed: the same sessions).")] = 0,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight at most.")] = 32,
    save: Annotated[
        bool, typer.Option("--save/--no-save", help="Move the world's clock and state on to the run's end.")
    ] = True,
    report: Annotated[Path | None, typer.Option("--report", help="Write an HTML report of the run here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Drive the saved world's users against a running server over HTTP and measure the feed online
    against the oracle (CTR, expected and oracle CTR, regret, coverage, concentration, latency)."""
    from feedrec.loop.traffic import TrafficConfig, run_traffic

    folder = world / "world" if (world / "world" / "world.json").exists() else world
    cfg = TrafficConfig(url, seconds, rps, speed, k, concurrency, seed, drift_at)
    try:
        with _progress() as bar:
            task = bar.add_task("traffic: sessions", total=None)
            result = run_traffic(
                folder, cfg, save=save, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if report is not None:
        from feedrec.loop.report import render_loop_report

        report.write_text(render_loop_report(result.summary, result.hourly))
    _emit(as_json, result.summary, render.traffic_table(result.summary))


@app.command("recommend-batch")
def recommend_batch_cmd(
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the Parquet parts.")] = Path(
        "recommendations"
    ),
    k: Annotated[int, typer.Option("--k", help="Items per user.")] = 50,
    users_file: Annotated[Path | None, typer.Option("--users", help="A file of user ids, one per line.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 2,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Users per part file.")] = 2000,
    engine: Annotated[
        str | None, typer.Option("--engine", help="duckdb (worker processes) or spark; default: backends.engine.")
    ] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Precompute the top-k of every user (or a list) from the production bundle; rerun to resume."""
    from feedrec.online.batch import recommend_production
    from feedrec.registry import RegistryError
    from feedrec.workspace import Workspace

    try:
        cfg = _config(config, None, workspace)
        wanted = [u.strip() for u in users_file.read_text().splitlines() if u.strip()] if users_file else None
        chosen = engine or cfg.backends.engine
        if chosen not in ("duckdb", "spark"):
            raise ValueError(f"--engine must be duckdb or spark, not {chosen!r}")
        if chosen == "spark":  # one Spark job: the bundle broadcast to the executors
            from feedrec.spark.batch import recommend_production_spark

            result = recommend_production_spark(
                Workspace.from_config(cfg).registry, output, cfg.backends, users=wanted, k=k, chunk_size=chunk_size
            )
            _emit(as_json, result, f"{result['scored_users']:,} users scored by Spark into {output}/")
            return
        with _progress() as bar:
            task = bar.add_task("recommending", total=None)
            result = recommend_production(
                Workspace.from_config(cfg).registry,
                output,
                users=wanted,
                k=k,
                chunk_size=chunk_size,
                workers=workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (ConfigError, ValueError, RegistryError, OSError) as exc:
        _fail(str(exc))
    _emit(
        as_json,
        result,
        f"{result['users']:,} users in {result['chunks']} parts under {output}/ ({result['written']} written, "
        f"{result['skipped']} already there); serve them with FEEDREC_PRECOMPUTED={output} feedrec serve",
    )


@app.command("cold-start")
def cold_start(
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated models to compare on the cold-start slices.")
    ] = "popularity,two_tower,content,candidates",
    k: Annotated[int, typer.Option("--k", help="Cut-off for the user slices.")] = 10,
    new_item_cutoff: Annotated[int, typer.Option("--new-item-k", help="Cut-off for new-item recall.")] = 100,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare models on cold start: sparse users, brand-new users, and items published after the cut."""
    from feedrec.offline import jobs

    try:
        cfg = _config(config, overrides, workspace)
        names = _model_names(models, [])
        with _progress() as bar:
            task = bar.add_task("models", total=len(names))
            report = jobs.cold_start_report(
                cfg,
                names,
                k=k,
                new_item_cutoff=new_item_cutoff,
                on_model=lambda name: bar.update(task, description=f"fit + evaluate {name}", advance=1),
            )
    except (ConfigError, ValueError, LeakageError) as exc:
        _fail(str(exc))
    _emit(as_json, report.to_dict(), render.cold_start_table(report))


@app.command()
def demo(
    users: Annotated[int | None, typer.Option("--users", help="Simulated users.")] = None,
    items: Annotated[int | None, typer.Option("--items", help="Simulated items.")] = None,
    days: Annotated[int | None, typer.Option("--days", help="Simulated days.")] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="End by serving the trained pipeline (Ctrl-C stops it).")
    ] = True,
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 8000,
    live: Annotated[
        bool, typer.Option("--live", help="Then drive one simulated day of the world's traffic at the server.")
    ] = False,
) -> None:
    """The main job: simulate a feed, ingest it, train and evaluate every model and the whole
    pipeline, register the pipeline, then serve it (after a simulated day of live traffic, with --live)."""
    from feedrec.offline import jobs

    try:
        cfg = _simulator(_config(config, overrides, workspace), n_users=users, n_items=items, days=days)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    stages = jobs.demo_stages(cfg)
    with _progress() as bar:
        overall = bar.add_task("demo", total=len(stages))
        sessions = bar.add_task("simulate: sessions", total=None)

        def on_stage(name: str) -> None:
            if name in stages and name != stages[0]:
                bar.advance(overall)
            bar.update(overall, description=f"demo: {name}")

        result = jobs.demo(
            cfg,
            on_stage=on_stage,
            progress=lambda done, total: bar.update(sessions, completed=done, total=total),
        )
        bar.advance(overall)
    if not as_json:
        err.print(f"simulated {result.n_events:,} events -> {result.simulated['events']}")
    if not as_json:
        _emit(False, None, *render.demo_lines(result, cfg.split.protocol))
    day = None
    if live and result.served is not None and result.version is not None:
        from feedrec.loop.demo import live_day

        with _progress() as bar:
            task = bar.add_task("live: one simulated day", total=None)
            day = live_day(
                result.served,
                Path(result.simulated["world"]),
                port,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if not as_json:
            _emit(False, None, render.traffic_table(day.summary))
    if as_json:
        _emit(True, render.demo_json(result) | ({"live": day.summary} if day is not None else {}))
        return
    if serve_after and result.served is not None and result.version is not None:
        from feedrec.online.server import serve_demo

        serve_demo(result.served, result.version, port, say=out.print)


def run() -> None:  # pragma: no cover - console entry
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # python -m feedrec.cli
    run()
