"""``feedrec traffic``: the saved world's users use a running feedrec server over HTTP.

A test harness outside the product: it talks to feedrec only through ``GET /v1/feed`` and
``POST /v1/events`` (and, for the items published meanwhile, a file to ingest). Simulated time
starts at the world's clock (the end of its log, or of the last traffic run) and runs at ``speed``
simulated hours per wall-clock second. Sessions arrive as a Poisson process of ``rps`` per wall
second on average, modulated by the simulated hour of day (the log's diurnal curve); each picks a
user among those who have joined by then, in proportion to their activity. A session asks for a
slate with ``now`` set to its simulated time (how the server learns the world's clock: it never
reads the wall's for anything the world drives), reacts to exactly the items shown by the ground
truth (position bias, freshness, fatigue) and posts the impressions and what followed, with the
feed's ``request_id`` and each item's position, in one batch.

The schedule (arrival times, users, surfaces) comes from ``seed`` alone, and each session draws
its reactions from its own generator (``[seed, session]``): two policies served the same sessions
get the same users at the same moments and the same dice, so their difference is the policy's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pyarrow.parquet as pq

from feedrec.data.simulator import items_table
from feedrec.data.world import DAY, DIURNAL, World
from feedrec.loop.metrics import LoopMetrics
from feedrec.loop.oracle import oracle_slate

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
Progress = Callable[[int, int], None]  # (sessions done, sessions scheduled)


@dataclass(frozen=True)
class TrafficConfig:
    url: str
    seconds: float = 60.0
    rps: float = 20.0  # sessions per wall-clock second, on average over a simulated day
    speed: float = 1.0  # simulated hours per wall-clock second
    k: int = 10
    concurrency: int = 32
    seed: int = 0
    drift_at: str | None = None  # a simulated ISO time, or "now" (this run's start)
    surfaces: tuple[str, ...] = ("home", "explore")
    token: str | None = None  # a bearer token, when the server asks one for events
    max_retries: int = 5  # a busy server (503) is retried after its Retry-After

    def validate(self) -> None:
        host = urlparse(self.url).hostname
        if host not in LOOPBACK:
            raise ValueError(f"traffic goes to loopback only (127.0.0.1, localhost, ::1), not {self.url!r}")
        if self.seconds <= 0 or self.rps <= 0 or self.speed <= 0 or self.k < 1 or self.concurrency < 1:
            raise ValueError("--seconds, --rps, --speed, --k and the concurrency must be positive")


@dataclass
class Session:
    index: int
    offset: float  # wall seconds after the start
    t: int  # simulated time (epoch seconds)
    user: int
    surface: str


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str, *, now: int) -> int:
    """A simulated time: ISO 8601 (UTC when no zone is given), or ``now``."""
    if text == "now":
        return now
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--drift-at must be an ISO time (2024-01-20T00:00:00Z) or 'now', not {text!r}") from exc
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


def schedule(world: World, cfg: TrafficConfig, start: int) -> list[Session]:
    """The sessions of a run: Poisson arrivals thinned by the diurnal curve, users by activity."""
    rng = np.random.default_rng(cfg.seed)
    peak = DIURNAL.max() / DIURNAL.mean()
    n = rng.poisson(cfg.rps * peak * cfg.seconds)
    offsets = np.sort(rng.random(n) * cfg.seconds)
    t = (start + offsets * cfg.speed * 3600).astype(np.int64)
    hour = (t % DAY) // 3600
    keep = rng.random(n) < DIURNAL[hour] / DIURNAL.max()
    offsets, t = offsets[keep], t[keep]
    order = np.argsort(world.user_joined, kind="stable")
    cum = np.cumsum(world.activity[order])
    n_active = np.searchsorted(world.user_joined[order], t, side="right")
    has = n_active > 0
    offsets, t, n_active = offsets[has], t[has], n_active[has]
    pick = np.minimum(np.searchsorted(cum, rng.random(t.size) * cum[n_active - 1], side="right"), n_active - 1)
    users = order[pick]
    surfaces = rng.integers(0, len(cfg.surfaces), t.size)
    return [
        Session(i, float(o), int(tt), int(u), cfg.surfaces[int(s)])
        for i, (o, tt, u, s) in enumerate(zip(offsets, t, users, surfaces, strict=True))
    ]


@dataclass
class TrafficResult:
    summary: dict[str, Any]
    hourly: dict[str, list[dict[str, float]]]
    published: Path | None  # the items published since the log, for `feedrec ingest --kind items`


class _Run:
    def __init__(self, world: World, cfg: TrafficConfig) -> None:
        self.world = world
        self.cfg = cfg
        self.metrics = LoopMetrics()
        self.run_id = uuid.uuid4().hex[:8]
        self.headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}

    async def session(self, client: httpx.AsyncClient, s: Session) -> None:
        cfg, world = self.cfg, self.world
        params: dict[str, str | int] = {"user_id": f"u{s.user}", "k": cfg.k, "surface": s.surface, "now": iso(s.t)}
        began = time.perf_counter()
        try:
            response = await client.get("/v1/feed", params=params)
        except httpx.HTTPError:
            self.metrics.error(latency_ms=(time.perf_counter() - began) * 1e3)
            return
        latency = (time.perf_counter() - began) * 1e3
        if response.status_code != 200:
            self.metrics.error(latency_ms=latency)
            return
        body = response.json()
        shown = _item_indices([i["item_id"] for i in body["items"]], world.n_items)
        shown = shown[world.item_created[shown] <= s.t] if shown.size else shown
        rng = np.random.default_rng([cfg.seed, s.index])
        seen = world.exposures.get(s.user, shown)
        logit = world.logit(np.full(shown.size, s.user), shown, np.full(shown.size, s.t, np.int64), seen)
        reaction = world.react(rng, logit, np.arange(shown.size))  # its p_click: the slate's expected clicks
        _, oracle_p = oracle_slate(world, s.user, s.t, cfg.k)
        self.metrics.feed(
            body["model_version"],
            s.t,
            latency,
            shown,
            cfg.k,
            reaction,
            oracle_p,
            experiment=body.get("experiment"),
            arm=body.get("arm"),
        )
        world.exposures.add(s.user, shown)
        did = reaction["click"] | reaction["hide"]
        if did.any():
            world.engaged.add(s.user, shown[did])
        events = self.events(s, body["request_id"], shown, reaction, rng)
        if events and not await self.post(client, events):
            self.metrics.error(body["model_version"], feed=False)  # its events were not stored

    def events(
        self, s: Session, request_id: str, shown: np.ndarray, r: dict[str, np.ndarray], rng: np.random.Generator
    ) -> list[dict[str, Any]]:
        """The session's events, timed as the log times them (an impression per slot 2 s apart;
        a click 2-9 s later; a like, share and the dwell during and after the read)."""
        out: list[dict[str, Any]] = []

        def event(kind: str, j: int, t: float, value: float | None = None) -> None:
            out.append(
                {
                    "event_id": f"live-{self.run_id}-{s.index}-{len(out)}",
                    "user_id": f"u{s.user}",
                    "item_id": f"i{int(shown[j])}",
                    "timestamp": iso(t),
                    "type": kind,
                    "value": value,
                    "position": j,
                    "surface": s.surface,
                    "request_id": request_id,
                }
            )

        for j in range(shown.size):
            t_imp = s.t + 2 * j
            event("impression", j, t_imp)
            if r["hide"][j]:
                event("hide", j, t_imp + 1)
            if r["click"][j]:
                t_click = t_imp + 2 + int(rng.integers(0, 8))
                dwell = round(float(r["dwell"][j]), 1)
                event("click", j, t_click)
                if r["like"][j]:
                    event("like", j, t_click + max(int(dwell * 0.5), 1))
                if r["share"][j]:
                    event("share", j, t_click + max(int(dwell * 0.7), 1))
                event("dwell", j, t_click + max(int(dwell), 1), dwell)
        return out

    async def post(self, client: httpx.AsyncClient, events: list[dict[str, Any]]) -> bool:
        for _ in range(self.cfg.max_retries + 1):
            try:
                response = await client.post("/v1/events", json={"events": events}, headers=self.headers)
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            if response.status_code == 200:
                self.metrics.events_posted += len(events)
                return True
            if response.status_code != 503:
                return False
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        return False


async def _drive(
    run: _Run, sessions: list[Session], progress: Progress | None, stop: Callable[[], bool] | None = None
) -> int:
    """Run the sessions at their offsets (until ``stop()`` says so); returns how many started.

    Sessions wait for one of ``concurrency`` slots in order; once ``stop()`` is true, those still
    waiting (a backlog when the server is slower than the schedule) never start, so a stop takes
    at most the sessions in flight, and the sessions that ran are the first ``started``."""
    cfg = run.cfg
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    gate = asyncio.Semaphore(cfg.concurrency)
    done = 0
    began = 0

    async def one(client: httpx.AsyncClient, index: int, s: Session) -> None:
        nonlocal done, began
        async with gate:
            if stop is not None and stop():
                return
            began = max(began, index + 1)
            await run.session(client, s)
        done += 1
        if progress:
            progress(done, len(sessions))

    async with httpx.AsyncClient(base_url=cfg.url, limits=limits, timeout=30.0) as client:
        start = time.perf_counter()
        tasks = []
        for index, s in enumerate(sessions):
            delay = s.offset - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            if stop is not None and stop():
                break
            tasks.append(asyncio.create_task(one(client, index, s)))
        await asyncio.gather(*tasks)
    return began


def run_traffic(
    world_dir: Path,
    cfg: TrafficConfig,
    *,
    save: bool = True,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrafficResult:
    """Drive one run of traffic from the world saved under ``world_dir`` (ending early once
    ``stop()`` is true); with ``save``, the world's state (clock, who saw and did what) moves on
    to the run's end, and the items published since the log are written to
    ``world_dir/items_published.parquet``."""
    cfg.validate()
    world = World.load(world_dir)
    start = world.clock
    end = start + int(cfg.seconds * cfg.speed * 3600)
    if cfg.drift_at is not None:
        world.drift_at = parse_time(cfg.drift_at, now=start)
    sessions = schedule(world, cfg, start)
    run = _Run(world, cfg)
    began = time.perf_counter()
    started = asyncio.run(_drive(run, sessions, progress, stop))
    if started < len(sessions):  # stopped early: the world's clock ends at the last session begun
        end = sessions[started - 1].t + 1 if started else start
        sessions = sessions[:started]
    m = run.metrics
    summary = {
        "requests": m.requests,
        "errors": m.errors,
        "events_posted": m.events_posted,
        "sessions": len(sessions),
        "sim_start": iso(start),
        "sim_end": iso(end),
        "wall_seconds": round(time.perf_counter() - began, 1),
        "drift_at": None if world.drift_at is None else iso(world.drift_at),
        **m.summary(int(world.published(end).size)),
    }
    published = None
    if save:
        world.clock = end
        world.save_state(world_dir)
        published = write_published(world, world_dir / "items_published.parquet")
    return TrafficResult(summary, m.hourly(), published)


def write_published(world: World, path: Path) -> Path:
    """The items published after the log and by the world's clock, as an items file."""
    fresh = np.flatnonzero((world.item_created >= world.t_end) & (world.item_created <= world.clock))
    pq.write_table(items_table(world, fresh), path)
    return path


def _item_indices(ids: list[str], n_items: int) -> np.ndarray:
    """Catalogue positions of the world's item ids (``i<n>``); anything else is not the world's."""
    out = []
    for item in ids:
        if item.startswith("i") and item[1:].isdigit() and int(item[1:]) < n_items:
            out.append(int(item[1:]))
    return np.asarray(out, np.int64)
