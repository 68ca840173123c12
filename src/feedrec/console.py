"""What every command prints through: results on stdout (tables, or one JSON object with
``--json``), progress and errors on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Off a terminal (pipes, CI logs) Rich would wrap tables at 80 columns; give them room instead.
out = Console(width=None if sys.stdout.isatty() else 160)  # results
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # progress, summaries, errors

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (configs/default.yaml).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set split.test_ratio=0.2.")
]
WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder (config: workspace).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def fail(message: str) -> None:
    """A clear message and exit code 2 (a usage or state error, not a crash)."""
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def emit(as_json: bool, payload: Any, *shown: Any) -> None:
    """``--json``: the payload as one JSON object on stdout; otherwise the tables and lines shown."""
    if as_json:
        print(json.dumps(payload, default=str))
        return
    for item in shown:
        out.print(item)


def progress() -> Progress:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err, transient=True)
