"""``feedrec loop``: the continuous-training cycle (``feedrec.continuous``). The command parses,
builds the loop from the config and the policy file, and runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from feedrec.config import ConfigError, load_config
from feedrec.console import ConfigOpt, SetOpt, WorkspaceOpt, err, fail, out


def loop(
    policy: Annotated[
        Path | None, typer.Option("--policy", help="A loop policy YAML (trigger, shadow, canary, deploy).")
    ] = None,
    cycles: Annotated[
        int | None, typer.Option(help="Stop after this many finished cycles (promoted or rejected).")
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after this many wall-clock seconds.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Look once, advance what can be advanced, and exit.")] = False,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Run the retraining cycle beside a serving workspace: a trigger (hours or events since the
    production data, or a monitor alert), retraining on a sliding window, the offline gate, a
    shadow stage, a canary experiment with the sequential test and guardrails, then promotion
    (deploy: auto) or `feedrec models approve` (deploy: approval). Every transition and its reason
    is in `feedrec models history`."""
    from feedrec.continuous.cycle import ContinuousLoop
    from feedrec.continuous.policy import load_policy

    try:
        rules = load_policy(policy)
        cfg = load_config(config, overrides)
        train_cfg = load_config(config, [*(overrides or []), *rules.retrain.overrides])
    except ConfigError as exc:
        fail(str(exc))
    if workspace is not None:
        cfg.workspace = train_cfg.workspace = workspace
    cycle = ContinuousLoop(cfg, rules, train_cfg=train_cfg, on_stage=lambda s: err.print(f"[cyan]loop[/cyan] {s}"))
    if once:
        out.print(f"stage: {cycle.step()}")
        return
    try:
        state = cycle.run(cycles=cycles, seconds=seconds)
    except RuntimeError as exc:
        fail(str(exc))
    out.print(f"stage: {state.stage} · cycles finished: {state.cycles}")
