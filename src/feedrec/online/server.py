"""Start the API under uvicorn: one process, or several workers sharing the port."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import uvicorn

from feedrec.online.http import TimedHttpToolsProtocol
from feedrec.online.settings import ServeSettings
from feedrec.online.telemetry import MULTIPROC_ENV, prepare_multiprocess_dir
from feedrec.workspace import Workspace


def run_server(settings: ServeSettings, overrides: Mapping[str, object] | None = None) -> None:
    """Serve until stopped. With several workers, metrics are kept in prometheus_client's
    multiprocess mode (one set for all of them); connections whose headers do not arrive within
    ``header_timeout_s`` are closed."""
    if settings.workers > 1:
        prepare_multiprocess_dir(settings.workspace / "serving" / "metrics")
    else:  # one process: the in-process registry (the variable is read when prometheus_client is imported)
        os.environ.pop(MULTIPROC_ENV, None)
    if settings.start_position is None:  # events stored while a worker starts are folded in by it too
        overrides = {**(overrides or {}), "start_position": Workspace(settings.workspace).events.position()}
        settings = settings.model_copy(update={"start_position": overrides["start_position"]})
    TimedHttpToolsProtocol.header_timeout_s = settings.header_timeout_s
    for key, value in (overrides or {}).items():  # worker processes build their settings from the environment
        os.environ[f"FEEDREC_{key.upper()}"] = str(value)
    os.environ["FEEDREC_HEADER_TIMEOUT_S"] = str(settings.header_timeout_s)
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "http": "feedrec.online.http:TimedHttpToolsProtocol",
        "timeout_keep_alive": 5,
    }
    if settings.workers == 1:
        from feedrec.online.api import create_app

        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    uvicorn.run("feedrec.online.api:create_app_from_env", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]


def serve_demo(workspace: Path, version: str, port: int, *, say: Callable[[str], object] = print) -> None:
    """The demo's last step: serve the bundle it just registered, after saying how to call it."""
    settings = ServeSettings(workspace=workspace, port=port)
    users = Workspace(workspace).events.scan(columns=["user_id"], types=["click"])
    user = users.column("user_id")[0].as_py() if users.num_rows else "u0"
    base = f"http://{settings.host}:{settings.port}"
    event = (
        f'{{"events": [{{"event_id": "e1", "user_id": "{user}", "item_id": "i1", '
        f'"timestamp": "2024-01-30T12:00:00Z", "type": "hide"}}]}}'
    )
    for line in (
        f"\n[bold]serving bundle {version}[/bold] from {workspace} on {base}  (Ctrl-C stops it)",
        f"  a feed:  curl '{base}/v1/feed?user_id={user}&k=10'",
        f"  events:  curl -X POST {base}/v1/events -H 'content-type: application/json' -d '{event}'",
        f"  dashboard: {base}/dashboard    explorer: {base}/dashboard/explorer?user_id={user}",
        f"  docs:    {base}/docs    metrics: {base}/metrics",
    ):
        say(line)
    sys.stdout.flush()
    run_server(settings)
