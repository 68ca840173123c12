"""The ``feedrec`` command: parse, then call one entry function per stage (feedrec.offline.jobs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from feedrec.config import ConfigError, FeedrecConfig, load_config
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
# Off a terminal (pipes, CI logs) Rich would wrap tables at 80 columns; give them room instead.
out = Console(width=None if sys.stdout.isatty() else 160)  # results
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # progress, summaries, errors

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (configs/default.yaml).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set split.test_ratio=0.2.")
]
WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder (config: workspace).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
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


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def _metrics_table(report: dict[str, Any]) -> Table:
    models: dict[str, dict[str, float]] = report["models"]
    columns = list(next(iter(models.values())).keys()) if models else []
    table = Table(
        title=f"{report['dataset']} · protocol={report['protocol']} · "
        f"{report['n_test_users']} test users · {report['n_items']} items"
    )
    table.add_column("model", style="bold")
    for col in columns:
        table.add_column(col, justify="right")
    best = {c: max(m[c] for m in models.values()) for c in columns if c != "fit_seconds"}
    for name, metrics in models.items():
        cells = []
        for col in columns:
            text = f"{metrics[col]:.4f}" if col != "fit_seconds" else f"{metrics[col]:.2f}s"
            cells.append(f"[green]{text}[/]" if col in best and metrics[col] == best[col] else text)
        table.add_row(name, *cells)
    return table


def _ingest_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"ingest {report['kind']}", caption=f"{report['source']} ({report['dialect']})", min_width=50)
    table.add_column("rows")
    table.add_column("count", justify="right")
    for key in ("read", "stored", "already_stored", "quarantined"):
        table.add_row(key.replace("_", " "), f"{report[key]:,}")
    for reason, count in report["reasons"].items():
        table.add_row(f"  quarantined: {reason}", f"{count:,}", style="yellow")
    return table


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
        cfg = _config(config, overrides)
        for key, value in {
            "n_users": users,
            "n_items": items,
            "days": days,
            "seed": seed,
            "drift_day": drift_day,
        }.items():
            if value is not None:
                setattr(cfg.simulator, key, value)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    with _progress() as bar:
        task = bar.add_task("simulating sessions", total=None)
        feed, files = run_simulation(
            cfg, output, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    summary = {
        "events": feed.events.num_rows,
        "items": feed.items.num_rows,
        "users": feed.users.num_rows,
        "files": files,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        out.print(
            f"wrote {summary['events']:,} events, {summary['items']:,} items, {summary['users']:,} users to {output}/"
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
    from feedrec.data.ingest import ingest_entities, ingest_events
    from feedrec.workspace import Workspace

    try:
        cfg = _config(config, overrides, workspace)
        if kind not in ("events", "items", "users"):
            raise ValueError(f"--kind must be events, items or users, not {kind!r}")
        store = Workspace.from_config(cfg).events
        with err.status(f"ingesting {file} ..."):
            if kind == "events":
                report = ingest_events(file, store, cfg.workspace, cfg.ingest, fmt=fmt, mapping=parse_mapping(mapping))
            else:
                report = ingest_entities(file, store, cfg.workspace, kind=kind)
    except (ConfigError, SourceError, ValueError) as exc:
        _fail(str(exc))
    data = report.to_dict()
    if as_json:
        print(json.dumps(data))
    else:
        out.print(_ingest_table(data))
        if report.quarantine_file:
            out.print(f"quarantined rows, with the reason: {report.quarantine_file}")
        if report.ignored_columns:
            out.print(f"ignored columns: {', '.join(report.ignored_columns)}")


@app.command()
def stats(workspace: WorkspaceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """What the workspace's event store holds."""
    from feedrec.workspace import Workspace

    cfg = _config(config, None, workspace)
    data = Workspace.from_config(cfg).events.stats()
    if as_json:
        print(json.dumps(data, default=str))
        return
    table = Table(title=f"event store · {cfg.workspace}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("events", "users", "items", "first", "last"):
        table.add_row(key, f"{data[key]:,}" if isinstance(data[key], int) else str(data[key]))
    for etype, count in data["by_type"].items():  # type: ignore[attr-defined]
        table.add_row(f"  {etype}", f"{count:,}")
    out.print(table)


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
        cfg = _config(config, overrides, workspace)
        if protocol is not None:
            cfg.split.protocol = protocol  # type: ignore[assignment]
        if k is not None:
            cfg.eval.k = k
        names = _model_names(models, cfg.eval.models)
        frame, side, dataset = jobs.load_events_and_side(cfg, events=events, fmt=fmt, mapping=parse_mapping(mapping))
        with _progress() as bar:
            task = bar.add_task("models", total=len(names))

            def on_model(name: str) -> None:
                bar.update(task, description=f"fit + evaluate {name}", advance=0 if name == names[0] else 1)

            report = jobs.evaluate(
                frame,
                dataset=dataset,
                protocol=cfg.split.protocol,
                k=cfg.eval.k,
                models=names,
                cfg=cfg,
                side=side,
                on_model=on_model,
            )
    except (ConfigError, SourceError, ValueError, LeakageError) as exc:
        _fail(str(exc))
    data = report.to_dict()
    if as_json:
        print(json.dumps(data))
    else:
        out.print(_metrics_table(data))


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
    from feedrec.offline.tuning import tune as run_tune

    try:
        cfg = _config(config, overrides, workspace)
        frame, side, _ = jobs.load_events_and_side(cfg, events=events, fmt=fmt)
        with _progress() as bar:
            task = bar.add_task(f"tuning {model}", total=trials)
            best = [0.0]

            def on_trial(number: int, value: float) -> None:
                best[0] = max(best[0], value)
                bar.update(task, advance=1, description=f"tuning {model} (best NDCG {best[0]:.4f})")

            result = run_tune(
                model,
                jobs.split_interactions(frame, cfg),
                side,
                cfg,
                out_dir=cfg.workspace / "tuning",
                n_trials=trials,
                timeout_s=timeout,
                k=cfg.eval.k,
                on_trial=on_trial,
            )
    except (ConfigError, SourceError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    out.print(
        f"{model}: validation {result.metric} {result.best_value:.4f} (defaults {result.default_value:.4f}) "
        f"after {result.n_trials} trials in {result.seconds:.0f}s"
    )
    out.print(f"best parameters: {result.best_params or '(the defaults)'}")
    out.print(f"study: {result.study_path}; config snippet: {result.params_path}")


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
    m = result.manifest
    if as_json:
        print(
            json.dumps(
                {
                    "version": m.version,
                    "promoted": result.promoted,
                    "reason": result.reason,
                    "bundle": result.bundle,
                    "metrics": m.metrics,
                    "seconds": result.seconds,
                }
            )
        )
        return
    table = Table(title=f"bundle {m.version} · {m.model} · {result.bundle}")
    table.add_column("split", style="bold")
    columns = sorted({c for split in m.metrics.values() for c in split})
    for col in columns:
        table.add_column(col, justify="right")
    for split, metrics in m.metrics.items():
        table.add_row(split, *[f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns])
    out.print(table)
    verdict = "[green]promoted to production[/]" if result.promoted else "[yellow]not promoted[/]"
    out.print(f"{verdict}: {result.reason}")
    out.print(f"report: {result.bundle}/report.html")
    out.print("time per stage: " + ", ".join(f"{stage} {sec:.0f} s" for stage, sec in result.seconds.items()))


models_app = typer.Typer(help="The model registry: list, show, promote, roll back bundles.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _registry(workspace: Path | None, config: Path | None) -> Any:
    from feedrec.workspace import Workspace

    return Workspace.from_config(_config(config, None, workspace)).registry


@models_app.command("list")
def models_list(workspace: WorkspaceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every bundle, newest last; the production one is marked."""
    bundles = _registry(workspace, config).list()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "version": b.version,
                        "model": b.model,
                        "created_at": b.created_at,
                        "production": b.promoted,
                        "valid": b.metrics.get("valid", {}),
                        "test": b.metrics.get("test", {}),
                    }
                    for b in bundles
                ]
            )
        )
        return
    table = Table(title="model registry")
    for col in ("version", "model", "created", "valid ndcg@10", "test ndcg@10", "production"):
        table.add_column(col)
    for b in bundles:
        table.add_row(
            b.version,
            b.model,
            b.created_at[:19],
            f"{b.metrics.get('valid', {}).get('ndcg@10', float('nan')):.4f}",
            f"{b.metrics.get('test', {}).get('ndcg@10', float('nan')):.4f}",
            "★" if b.promoted else "",
        )
    out.print(table)


@models_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="Bundle version, e.g. v0003.")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A bundle's manifest, as JSON."""
    from dataclasses import asdict

    from feedrec.registry import RegistryError

    try:
        print(json.dumps(asdict(_registry(workspace, config).get(version)), indent=2, default=str))
    except RegistryError as exc:
        _fail(str(exc))


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Bundle version to serve.")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Put a bundle in production by hand (bypasses the gate; recorded in the history)."""
    from feedrec.registry import RegistryError

    try:
        m = _registry(workspace, config).promote(version, reason="manual promotion")
    except RegistryError as exc:
        _fail(str(exc))
    out.print(f"{m.version} is now in production")


@models_app.command("rollback")
def models_rollback(workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Return production to the bundle served before the current one."""
    from feedrec.registry import RegistryError

    try:
        m = _registry(workspace, config).rollback()
    except RegistryError as exc:
        _fail(str(exc))
    out.print(f"rolled back: {m.version} is in production again")


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
    from feedrec.models.compress import CompressionGate
    from feedrec.offline.compression import compress_bundle
    from feedrec.registry import RegistryError

    try:
        cfg = _config(config, None, workspace)
        gate = CompressionGate(max_relative_loss=max_loss, metric=f"ndcg@{cfg.eval.k}")
        result = compress_bundle(cfg, version, kind=kind, gate=gate)
    except (ConfigError, RegistryError, ValueError) as exc:
        _fail(str(exc))
    size = f"index {result.bytes_before / 2**20:.2f} MiB -> {result.bytes_after / 2**20:.2f} MiB"
    if result.version is None:
        err.print(f"[red]refused[/red]: {result.gate.reason}; {size}")
        raise typer.Exit(1)
    out.print(f"registered {result.version} (int8 twin of {version}): {result.gate.reason}; {size}")
    out.print(f"serve it with: feedrec models promote {result.version}")


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
    err.print(
        f"serving {settings.workspace} on http://{settings.host}:{settings.port} with {settings.workers} "
        f"worker(s) (docs: /docs)"
    )
    run_server(settings, overrides)


@app.command("recommend-batch")
def recommend_batch_cmd(
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the Parquet parts.")] = Path(
        "recommendations"
    ),
    k: Annotated[int, typer.Option("--k", help="Items per user.")] = 50,
    users_file: Annotated[Path | None, typer.Option("--users", help="A file of user ids, one per line.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 2,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Users per part file.")] = 2000,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Precompute the top-k of every user (or a list) from the production bundle; rerun to resume."""
    from feedrec.online.batch import recommend_batch
    from feedrec.registry import RegistryError
    from feedrec.workspace import Workspace

    try:
        cfg = _config(config, None, workspace)
        registry = Workspace.from_config(cfg).registry
        manifest = registry.production()
        if manifest is None:
            raise RegistryError("no bundle in production: train one with `feedrec train`")
        if users_file is not None:
            users = [line.strip() for line in users_file.read_text().splitlines() if line.strip()]
        else:
            users = registry.load_model(manifest.version).user_ids_.tolist()
        if not users or k < 1 or workers < 1 or chunk_size < 1:
            raise ValueError("need at least one user, and k, --workers and --chunk-size of at least 1")
        with _progress() as bar:
            task = bar.add_task("recommending", total=len(users))
            result = recommend_batch(
                registry.model_dir(manifest.version),
                manifest.version,
                users,
                output,
                k=k,
                chunk_size=chunk_size,
                workers=workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (ConfigError, ValueError, RegistryError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(result))
    else:
        out.print(
            f"{result['users']:,} users in {result['chunks']} parts under {output}/ "
            f"({result['written']} written, {result['skipped']} already there); serve them with "
            f"FEEDREC_PRECOMPUTED={output} feedrec serve"
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
    from feedrec.offline.cold_start import evaluate_cold_start

    try:
        cfg = _config(config, overrides, workspace)
        names = _model_names(models, [])
        frame, side, _ = jobs.load_events_and_side(cfg, events=None)
        if side.items is None or side.items.num_rows == 0:
            raise ValueError(f"{cfg.workspace} holds no items: ingest them with `feedrec ingest FILE --kind items`")
        with _progress() as bar:
            task = bar.add_task("models", total=len(names))
            report = evaluate_cold_start(
                frame,
                side,
                models=names,
                cfg=cfg,
                k=k,
                new_item_cutoff=new_item_cutoff,
                on_model=lambda name: bar.update(task, description=f"fit + evaluate {name}", advance=1),
            )
    except (ConfigError, ValueError, LeakageError) as exc:
        _fail(str(exc))
    data = report.to_dict()
    if as_json:
        print(json.dumps(data))
        return
    table = Table(title="cold start · " + ", ".join(f"{s}: {n} users" for s, n in report.slices.items()))
    columns = sorted({c for m in report.models.values() for c in m})
    table.add_column("model", style="bold")
    for col in columns:
        table.add_column(col, justify="right")
    for name, metrics in report.models.items():
        table.add_row(name, *[f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns])
    out.print(table)


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
) -> None:
    """The main job: simulate a feed, ingest it, train and evaluate every model and the whole
    pipeline, register the pipeline, then serve it."""
    from feedrec.offline import jobs

    try:
        cfg = _config(config, overrides, workspace)
        for key, value in {"n_users": users, "n_items": items, "days": days}.items():
            if value is not None:
                setattr(cfg.simulator, key, value)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    stages = [
        "simulate",
        "ingest",
        "split",
        *[f"fit + evaluate: {m}" for m in cfg.eval.models],
        "rank impressions",
        "register the bundle",
    ]
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
    if as_json:
        print(
            json.dumps(
                {
                    "ingest": result.ingest.to_dict(),
                    "split": result.split_sizes,
                    "eval": result.report.to_dict(),
                }
            )
        )
        return
    err.print(f"simulated {result.n_events:,} events -> {result.simulated['events']}")
    out.print(_ingest_table(result.ingest.to_dict()))
    out.print(
        f"split ({cfg.split.protocol}): "
        + ", ".join(f"{name} {size:,}" for name, size in result.split_sizes.items())
        + " positive interactions; no training row sees its user's future (checked)"
    )
    out.print(_metrics_table(result.report.to_dict()))
    rankers = Table(
        title=f"impression ranker · point-in-time features · {result.rankers.rows['test']:,} test impressions, "
        f"click rate {result.rankers.click_rate:.3f}"
    )
    for col in ("model", "AUC", "log loss", "ECE"):
        rankers.add_column(col, justify="left" if col == "model" else "right")
    for name, m in result.rankers.models.items():
        rankers.add_row(name, f"{m['auc']:.4f}", f"{m['log_loss']:.4f}", f"{m['ece']:.4f}")
    out.print(rankers)
    if serve_after and result.served is not None and result.version is not None:
        _serve_demo(result.served, result.version, port)


def _serve_demo(workspace: Path, version: str, port: int) -> None:
    """The demo's last step: serve the bundle it just registered, and say how to call it."""
    from feedrec.online.server import run_server
    from feedrec.online.settings import ServeSettings
    from feedrec.workspace import Workspace

    settings = ServeSettings(workspace=workspace, port=port)
    users = Workspace(workspace).events.scan(columns=["user_id"], types=["click"])
    user = users.column("user_id")[0].as_py() if users.num_rows else "u0"
    base = f"http://{settings.host}:{settings.port}"
    out.print(f"\n[bold]serving bundle {version}[/bold] from {workspace} on {base}  (Ctrl-C stops it)")
    out.print(f"  a feed:  curl '{base}/v1/feed?user_id={user}&k=10'")
    out.print(
        f"""  events:  curl -X POST {base}/v1/events -H 'content-type: application/json' -d '{{"events": """
        f"""[{{"event_id": "e1", "user_id": "{user}", "item_id": "i1", "timestamp": "2024-01-30T12:00:00Z", "type": "hide"}}]}}'"""
    )
    out.print(f"  docs:    {base}/docs    metrics: {base}/metrics")
    sys.stdout.flush()
    run_server(settings)


def run() -> None:  # pragma: no cover - console entry
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # python -m feedrec.cli
    run()
