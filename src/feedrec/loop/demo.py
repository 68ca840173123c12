"""``feedrec demo --live``: one simulated day of traffic at a server started for it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from feedrec.loop.traffic import Progress, TrafficConfig, TrafficResult, run_traffic


def live_day(workspace: Path, world: Path, port: int, *, progress: Progress | None = None) -> TrafficResult:
    """Start ``feedrec serve`` on ``workspace``, drive one simulated day (24 s at one simulated hour
    per second) of the world's traffic through it, stop it."""
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedrec.cli", "serve", "-w", str(workspace), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ | {"FEEDREC_WATCH_INTERVAL_S": "0"},
    )
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"the server stopped: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        cfg = TrafficConfig(url=url, seconds=24, rps=10, speed=1.0)
        return run_traffic(world, cfg, save=True, progress=progress)
    finally:
        proc.terminate()
        proc.wait(30)
