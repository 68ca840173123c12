"""``feedrec monitor``: drift, calibration and skew of serving against the production bundle's
reference. The command parses, calls ``feedrec.monitoring.monitor.run_monitor`` (once, or on a
schedule with ``--watch``) and prints the result."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from feedrec import render
from feedrec.config import ConfigError, load_config
from feedrec.console import ConfigOpt, JsonOpt, SetOpt, WorkspaceOpt, err, fail, out

TimeOpt = Annotated[str | None, typer.Option(help="ISO time (the events' clock); default: see --help.")]


def parse_time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{option} takes an ISO time like 2024-01-07T06:00:00Z, not {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def monitor(
    since: TimeOpt = None,
    until: TimeOpt = None,
    reference: Annotated[
        str | None, typer.Option(help="Bundle whose profile is the reference; default: production.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Run every monitor.watch_interval_s, on the latest window.")
    ] = False,
    runs: Annotated[int | None, typer.Option(help="With --watch: stop after this many runs.")] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge a window of serving (default: the monitor.window_hours before the latest logged feed)
    against the production bundle's reference profile: per-feature drift (PSI, KL, JS, KS or
    chi-square), prediction drift, calibration, online engagement and training-serving skew.
    Breached thresholds (monitor: in config) become alerts: log lines, monitoring/alerts.jsonl,
    and gauges on the server's /metrics."""
    from feedrec.monitoring.monitor import MonitorError, run_monitor
    from feedrec.monitoring.report import render_monitor_report
    from feedrec.workspace import Workspace

    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    if workspace is not None:
        cfg.workspace = workspace
    space = Workspace.from_config(cfg)
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    done = 0
    while True:
        try:
            result = run_monitor(
                space,
                cfg.monitor,
                since=start if not watch else None,
                until=end if not watch else None,
                reference=reference,
            )
        except MonitorError as exc:
            if not watch:
                fail(str(exc))
            err.print(f"[yellow]monitor: {exc}[/yellow]")
            result = None
        if result is not None:
            if report is not None:
                report.write_text(render_monitor_report(result, cfg.monitor))
            _print(result, as_json)
        done += 1
        if not watch or (runs is not None and done >= runs):
            return
        time.sleep(cfg.monitor.watch_interval_s)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=str))
    else:
        for table in render.monitor_tables(result):
            out.print(table)
