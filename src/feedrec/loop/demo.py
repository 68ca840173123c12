"""A ``feedrec serve`` subprocess for the loop to drive (``serving``), and ``feedrec demo --live``:
one simulated day of traffic at a server started for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from feedrec.loop.traffic import Progress, TrafficConfig, TrafficResult, run_traffic


@contextmanager
def serving(
    workspace: Path,
    port: int,
    *,
    workers: int = 1,
    log: IO[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``feedrec serve`` on ``workspace`` (no watcher: the bundle promoted before it starts serves
    throughout; ``env``: more FEEDREC_* settings) for the block; yields its URL once it is ready,
    stops it after."""
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "feedrec.cli", "serve", "-w", str(workspace), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)],
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
        env=os.environ | {"FEEDREC_WATCH_INTERVAL_S": "0"} | (env or {}),
    )
    try:
        for _ in range(1200):
            if proc.poll() is not None:
                said = proc.stderr.read().decode()[-2000:] if proc.stderr else "see its log"
                raise RuntimeError(f"the server stopped: {said}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        else:
            raise RuntimeError("the server did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(60)


def live_day(workspace: Path, world: Path, port: int, *, progress: Progress | None = None) -> TrafficResult:
    """Start ``feedrec serve`` on ``workspace``, drive one simulated day (24 s at one simulated hour
    per second) of the world's traffic through it, stop it."""
    with serving(workspace, port) as url:
        return run_traffic(world, TrafficConfig(url=url, seconds=24, rps=10, speed=1.0), save=True, progress=progress)
