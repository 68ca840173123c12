"""``feedrec experiment ...``: define, start, stop and analyze online experiments. Each command
parses, calls the experiment store or ``feedrec.experiments.analysis``, and prints the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from feedrec import render
from feedrec.config import ConfigError, load_config
from feedrec.console import ConfigOpt, JsonOpt, WorkspaceOpt, emit, fail, out
from feedrec.experiments.definition import ExperimentError

experiment_app = typer.Typer(
    help="Online experiments: A/B tests and interleaving between bundles, and their analysis.", no_args_is_help=True
)
NameArg = Annotated[str, typer.Argument(help="The experiment's name.")]


def _space(workspace: Path | None, config: Path | None) -> Any:
    from feedrec.workspace import Workspace

    try:
        cfg = load_config(config, None)
    except ConfigError as exc:
        fail(str(exc))
    if workspace is not None:
        cfg.workspace = workspace
    return Workspace.from_config(cfg)


def _per_arm(option: str, values: list[str] | None) -> dict[str, str]:
    out_map: dict[str, str] = {}
    for text in values or []:
        arm, sep, what = text.partition("=")
        if not sep or not arm or not what:
            raise ExperimentError(f"{option} takes ARM=VALUE, not {text!r}")
        out_map[arm] = what
    return out_map


def parse_arms(
    arms: list[str], weights: str | None, explore: list[str] | None = None, shadow: list[str] | None = None
) -> list[dict[str, Any]]:
    """``NAME=VERSION`` (an A/B arm) or ``NAME=VERSION+VERSION`` (an interleaving of two), with
    ``--weights 50,50`` in the same order; ``--explore NAME=TEMPERATURE[:TOP]`` and
    ``--shadow NAME=VERSION[,VERSION]`` for off-policy evaluation."""
    out_arms: list[dict[str, Any]] = []
    for text in arms:
        name, sep, what = text.partition("=")
        if not sep or not name or not what:
            raise ExperimentError(f"--arm takes NAME=VERSION or NAME=VERSION+VERSION, not {text!r}")
        versions = what.split("+")
        if len(versions) > 2:
            raise ExperimentError(f"--arm {text!r}: interleave at most two versions")
        out_arms.append(
            {"name": name, "interleave": versions} if len(versions) == 2 else {"name": name, "version": what}
        )
    if weights is not None:
        try:
            values = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ExperimentError(f"--weights takes numbers like 50,50, not {weights!r}") from None
        if len(values) != len(out_arms):
            raise ExperimentError(f"--weights gives {len(values)} weights for {len(out_arms)} arms")
        for arm, w in zip(out_arms, values, strict=True):
            arm["weight"] = w
    names = {a["name"] for a in out_arms}
    temperatures, shadowed = _per_arm("--explore", explore), _per_arm("--shadow", shadow)
    for option, given in (("--explore", temperatures), ("--shadow", shadowed)):
        unknown = sorted(set(given) - names)
        if unknown:
            raise ExperimentError(f"{option} names arm {unknown[0]!r}, which is not an --arm")
    for arm in out_arms:
        temperature = temperatures.get(arm["name"])
        if temperature is not None:
            t, _, top = temperature.partition(":")
            try:
                arm["explore"] = float(t)
                if top:
                    arm["explore_top"] = int(top)
            except ValueError:
                raise ExperimentError(f"--explore takes ARM=TEMPERATURE[:TOP], not {temperature!r}") from None
        shadows = shadowed.get(arm["name"])
        if shadows is not None:
            arm["shadow"] = [v for v in shadows.split(",") if v]
    return out_arms


@experiment_app.command("create")
def create(
    name: NameArg,
    arm: Annotated[
        list[str], typer.Option("--arm", help="NAME=VERSION (A/B), or NAME=VERSION+VERSION to interleave two.")
    ],
    weights: Annotated[str | None, typer.Option("--weights", help="Relative arm weights, e.g. 50,50.")] = None,
    layer: Annotated[str, typer.Option("--layer", help="Experiments in one layer never share a user.")] = "default",
    traffic: Annotated[float, typer.Option("--traffic", help="The share of the layer's users it takes.")] = 1.0,
    metric: Annotated[str, typer.Option("--metric", help="The decision metric.")] = "ctr",
    guardrail: Annotated[
        str | None, typer.Option("--guardrail", help="Comma-separated, e.g. hides_per_impression,latency_p99.")
    ] = None,
    salt: Annotated[str | None, typer.Option("--salt", help="The assignment hash's salt (default: the name).")] = None,
    explore: Annotated[
        list[str] | None,
        typer.Option("--explore", help="ARM=TEMPERATURE[:TOP]: the arm shows a Plackett-Luce sample of its top items."),
    ] = None,
    shadow: Annotated[
        list[str] | None, typer.Option("--shadow", help="ARM=VERSION[,VERSION]: log those versions' slates too (OPE).")
    ] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Define an experiment (a draft until `start`); arms must name registered bundles."""
    space = _space(workspace, config)
    try:
        definition: dict[str, Any] = {
            "name": name,
            "arms": parse_arms(arm, weights, explore, shadow),
            "layer": layer,
            "traffic": traffic,
            "metric": metric,
            "guardrails": [g.strip() for g in guardrail.split(",") if g.strip()] if guardrail else [],
        }
        if salt:
            definition["salt"] = salt
        known = [m.version for m in space.registry.list()]
        created = space.experiments.create(definition, known_versions=known)
    except ExperimentError as exc:
        fail(str(exc))
    out.print(f"created experiment {created.name} (draft): start it with `feedrec experiment start {created.name}`")


def _act(workspace: Path | None, config: Path | None, action: str, name: str) -> Any:
    store = _space(workspace, config).experiments
    try:
        return getattr(store, action)(name)
    except ExperimentError as exc:
        fail(str(exc))


@experiment_app.command("start")
def start(name: NameArg, workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Start routing users to the experiment's arms (servers pick it up without a restart)."""
    e = _act(workspace, config, "start", name)
    out.print(f"started {e.name}: layer {e.layer}, buckets {e.buckets[0]}-{e.buckets[1]}")


@experiment_app.command("stop")
def stop(name: NameArg, workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Stop it: its users go back to production (its exposures stay for analysis)."""
    e = _act(workspace, config, "stop", name)
    out.print(f"stopped {e.name}")


@experiment_app.command("list")
def list_(workspace: WorkspaceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every experiment with its status, layer and arms."""
    state = _space(workspace, config).experiments.load()
    rows = [e.model_dump() for e in state.experiments.values()]
    emit(as_json, {"holdout": state.holdout, "experiments": rows}, render.experiments_table(rows, state.holdout))


@experiment_app.command("show")
def show(name: NameArg, workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """An experiment's definition and its history, as JSON."""
    store = _space(workspace, config).experiments
    experiment = _act(workspace, config, "get", name)
    print(json.dumps({"definition": experiment.model_dump(), "history": store.history(name)}, indent=2))


@experiment_app.command("holdout")
def holdout(
    share: Annotated[float, typer.Argument(help="The share of all users kept on production, e.g. 0.05.")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Keep a share of all users out of every experiment (a global holdout)."""
    try:
        _space(workspace, config).experiments.set_holdout(share)
    except ExperimentError as exc:
        fail(str(exc))
    out.print(f"holdout: {share:.1%} of users stay on production")


@experiment_app.command("analyze")
def analyze(
    name: NameArg,
    window_s: Annotated[float, typer.Option("--window-s", help="Attribution window after an exposure.")] = 3600,
    pre_days: Annotated[float, typer.Option("--pre-days", help="Days before the first exposure for CUPED.")] = 7,
    look_every_s: Annotated[float, typer.Option("--look-every-s", help="Seconds between sequential looks.")] = 3600,
    report: Annotated[Path | None, typer.Option("--report", help="Write an HTML report here.")] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per arm: users, exposures, CTR and engagement per user with 95 % intervals, lifts, p-values,
    CUPED, the sample-ratio check, the sequential decision and the guardrails (or, for an
    interleaving, each team's wins and the binomial test)."""
    from feedrec.experiments.analysis import analyze as run

    space = _space(workspace, config)
    try:
        result = run(
            space.events, space.experiments, name, window_s=window_s, pre_days=pre_days, look_every_s=look_every_s
        )
    except ExperimentError as exc:
        fail(str(exc))
    if report is not None:
        from feedrec.experiments.report import render_experiment_report

        report.write_text(render_experiment_report(result))
    emit(as_json, result, *render.experiment_tables(result))


def ope(
    policy: Annotated[str, typer.Option("--policy", help="The bundle whose CTR to estimate (logged as a shadow).")],
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only this experiment's exposures.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time: exposures from then on.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time: exposures before then.")] = None,
    estimators: Annotated[
        str, typer.Option("--estimators", help="Comma-separated: ips,snips,dr,pbm.")
    ] = "ips,snips,dr,pbm",
    boot: Annotated[int, typer.Option("--boot", help="Bootstrap draws over users.")] = 1000,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Estimate a bundle's CTR from feeds an exploring arm served (off-policy evaluation): IPS,
    self-normalized IPS, doubly robust, and the position-based model's slate estimator, with
    bootstrap intervals, effective sample sizes and support."""
    from datetime import UTC, datetime

    from feedrec.experiments import ope as offpolicy

    def when(text: str | None) -> datetime | None:
        if text is None:
            return None
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    space = _space(workspace, config)
    try:
        log = offpolicy.load(
            space.events, space.experiments, policy, experiment=experiment, since=when(since), until=when(until)
        )
        result = offpolicy.estimate(log, tuple(e.strip() for e in estimators.split(",") if e.strip()), boot=boot)
    except (offpolicy.OpeError, ValueError) as exc:
        fail(str(exc))
    emit(as_json, {"policy": policy, **result}, render.ope_table(policy, result))
