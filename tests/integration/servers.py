"""Helpers for tests that start the real server: a small workspace, and uvicorn in a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl

from feedrec.config import SimulatorConfig
from feedrec.data.interactions import Interactions
from feedrec.data.simulator import SimulatedFeed, simulate
from feedrec.data.store import LocalEventStore
from feedrec.features.definitions import schema_hash
from feedrec.models.retrieval.covisit import CovisitRecommender
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.registry import LocalRegistry, Manifest

TOKEN = "s3cret"


def _manifest(version: str, model: str) -> Manifest:
    return Manifest(
        version=version,
        model=model,
        created_at="now",
        data_window={},
        feature_schema=schema_hash(),
        params={},
        metrics={"valid": {"ndcg@10": 0.1}},
        code_version="test",
    )


def build_workspace(ws: Path) -> Path:
    """A small simulated workspace: events and items stored, popularity (v0001, production) and
    covisitation (v0002) registered."""
    feed = simulate(SimulatorConfig(n_users=100, n_items=200, days=5, seed=1))
    store = LocalEventStore(ws)
    store.append(feed.events)
    store.put_items(feed.items)
    positives = pl.DataFrame(pl.from_arrow(feed.events)).filter(pl.col("type") == "click")
    model = PopularityRecommender().fit(Interactions.from_frame(positives))
    registry = LocalRegistry(ws / "registry")
    registry.register(model, _manifest("v0001", "popularity"))
    registry.promote("v0001")
    registry.register(CovisitRecommender().fit(Interactions.from_frame(positives)), _manifest("v0002", "covisit"))
    return ws


def live_workspace(root: Path, seed: int, **sizes: int) -> tuple[Path, Path, SimulatedFeed]:
    """A small world for live traffic (150 users, 300 items, 6 logged days; ``sizes`` override
    the simulator's) under ``root``: its log and items stored in ``root/ws``, the world saved to
    ``root/world``. Returns (workspace, world, the simulated feed); the caller registers the bundles."""
    config = {"n_users": 150, "n_items": 300, "days": 6, "seed": seed, "sessions_per_user_day": 2.0} | sizes
    feed = simulate(SimulatorConfig(**config))
    files = feed.write(root / "sim")
    ws = root / "ws"
    store = LocalEventStore(ws)
    store.append(feed.events)
    store.put_items(feed.items)
    shutil.copytree(files["world"], root / "world")
    return ws, root / "world", feed


def _start_server(workspace: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedrec.cli", "serve", "-w", str(workspace), "--port", str(port)],
        env=os.environ | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "server did not start")


@contextmanager
def serving(workspace: Path, **env: str) -> Iterator[str]:
    """``feedrec serve`` on ``workspace`` for the block (its URL), stopped with SIGTERM after it."""
    proc, url = _start_server(workspace, **env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
