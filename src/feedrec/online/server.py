"""Start the API under uvicorn: one process, or several workers sharing the port."""

from __future__ import annotations

import os
from collections.abc import Mapping

import uvicorn

from feedrec.online.http import TimedHttpToolsProtocol
from feedrec.online.settings import ServeSettings
from feedrec.online.telemetry import MULTIPROC_ENV, prepare_multiprocess_dir


def run_server(settings: ServeSettings, overrides: Mapping[str, object] | None = None) -> None:
    """Serve until stopped. With several workers, metrics are kept in prometheus_client's
    multiprocess mode (one set for all of them); connections whose headers do not arrive within
    ``header_timeout_s`` are closed."""
    if settings.workers > 1:
        prepare_multiprocess_dir(settings.workspace / "serving" / "metrics")
    else:  # one process: the in-process registry (the variable is read when prometheus_client is imported)
        os.environ.pop(MULTIPROC_ENV, None)
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
