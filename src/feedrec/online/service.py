"""The feed service: the production model, the event store and the online features, behind one object.

``feed()`` runs features -> retrieve -> rank -> re-rank, each stage within its budget (``Budgets``),
and never fails a valid request: a stage that raises or overruns is abandoned for its fallback
(retrieve -> popularity, rank -> the retrieval order, re-rank -> the ranked order unshaped), and
the feed says so (``fallback``, ``fallback_reason``). ``ingest()`` appends events durably (fsync
before it returns) and idempotently by event_id, then folds them into the online features and the
recent actions (what a user engaged with or hid leaves their next feed); ``catch_up()`` folds in
what other processes stored. ``reload()`` loads a bundle and swaps it in with one reference
assignment, so requests in flight finish on the bundle they started with.
"""

from __future__ import annotations

import gc
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from feedrec.config import BackendsConfig, IngestConfig
from feedrec.data.store import AppendResult, EventStore
from feedrec.experiments.assignment import Assigner, Assignment
from feedrec.experiments.definition import ExperimentError, ExperimentsState
from feedrec.experiments.exposures import ExposureLog
from feedrec.features.definitions import WINDOWS
from feedrec.logs import get_logger
from feedrec.models.base import PAD_ID, Recommender, RequestContext
from feedrec.monitoring.featurelog import FeatureLog
from feedrec.online import routing
from feedrec.online.batch import Precomputed
from feedrec.online.ingest import EventWriter, Outcome, Rejected
from feedrec.online.servedlog import RotatingLog
from feedrec.registry import RegistryError
from feedrec.schemas import Event
from feedrec.workspace import Workspace

T = TypeVar("T")
log = get_logger("service")


class NoModelError(RuntimeError):
    """No bundle is in production yet."""


class EventsRejected(ValueError):
    """Events that break the ingestion rules; ``errors`` are (index, field, reason)."""

    def __init__(self, rejected: Rejected) -> None:
        self.errors = rejected.errors
        super().__init__("; ".join(f"event {n} {field}: {reason}" for n, field, reason in rejected.errors))


class StageLate(TimeoutError):
    """A pipeline stage overran its latency budget."""


@dataclass(frozen=True)
class Budgets:
    """Latency budget of each online stage, in seconds; a stage that overruns it is abandoned."""

    retrieve: float = 0.05
    rank: float = 0.05
    rerank: float = 0.025


@dataclass(frozen=True)
class Bundle:
    version: str
    model: Recommender


@dataclass
class FeedItem:
    item_id: str
    score: float
    source: str
    reason: str


@dataclass
class Feed:
    request_id: str
    user_id: str
    model_version: str
    items: list[FeedItem]
    fallback: bool
    latency_ms: float
    fallback_reason: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)
    experiment: str | None = None
    arm: str | None = None


class FeedService:
    def __init__(
        self,
        workspace: Path,
        precomputed: Path | None = None,
        *,
        budgets: Budgets | None = None,
        snapshot_every_s: float = 300.0,
        stage_workers: int = 8,
        rules: IngestConfig | None = None,
        backends: BackendsConfig | None = None,
        max_pending_batches: int = 256,
        served_log_max_bytes: int = 64 * 2**20,
        served_log_keep: int = 5,
        start_position: int | None = None,
        clock: str = "events",
        feature_log_rate: float = 0.0,
        feature_log_max_bytes: int = 256 * 2**20,
        frozen_counters: Collection[str] = (),
    ) -> None:
        self.workspace = Path(workspace)
        self.space = Workspace(self.workspace, backends)
        self.precomputed: Precomputed | None = self.space.precomputed(precomputed) if precomputed is not None else None
        self.registry = self.space.registry
        self.store = self.space.events
        items = pl.DataFrame(pl.from_arrow(self.store.items()))
        self.features = self.space.online_store(items if items.height else None)
        # Events already reflected here: the history (in the bundle and the feature snapshot) up to
        # this position (``start_position``: where the server as a whole started), and the appends
        # this process made itself (``_own``). catch_up() folds in what other processes stored since.
        self._position = self.store.position() if start_position is None else start_position
        self._own: set[int] = set()
        self._event_time: float | None = None  # the shared store's clock as last read (when it is away)
        self._backfill()
        if frozen_counters:  # fault injection: from here on these counters stop updating
            self.features.freeze(list(frozen_counters))
        self.budgets = budgets or Budgets()
        self.snapshot_every_s = snapshot_every_s
        self._last_snapshot = time.monotonic()  # the first snapshot waits its interval too
        self._bundle: Bundle | None = None
        self._held: dict[str, Bundle] = {}
        self._preview: Bundle | None = None  # a bundle the feed explorer previews (not served)
        self._stop = threading.Event()
        self._on_swap: Callable[[str], None] | None = None
        # Guards the online state; the writer holds it from an append until the append is folded and
        # marked as this process's own, so the tail can never fold it a second time.
        self._write_lock = threading.RLock()
        self._reload_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=stage_workers, thread_name_prefix="feedrec-stage")
        # Start every worker now: a worker started by a request's first stage runs that stage before
        # the request can begin waiting on it, so its budget would not hold.
        barrier = threading.Barrier(stage_workers)
        for future in [self._pool.submit(barrier.wait) for _ in range(stage_workers)]:
            future.result()
        self.served_log = RotatingLog(
            self.space.serving_dir / "impressions.jsonl", max_bytes=served_log_max_bytes, keep=served_log_keep
        )
        self.fallbacks = 0
        if clock not in ("wall", "events"):
            raise ValueError(f"clock must be wall or events, not {clock!r}")
        self.clock = clock
        self.feature_log_rate = feature_log_rate
        self.feature_log = FeatureLog(self.space.serving_dir / "features", max_bytes=feature_log_max_bytes)
        self._feature_rng = random.Random(0)
        self.writer = EventWriter(
            self.store, self._fold_own, rules=rules, max_pending=max_pending_batches, append_lock=self._write_lock
        )
        self.experiments = self.space.experiments
        self.assigner = Assigner(ExperimentsState())
        self._experiments_seen: tuple[int, int] | None = None
        self.exposures = ExposureLog(self.experiments.exposures_dir)

    def _backfill(self) -> None:
        """Bring the online features up to the event store: the snapshot records the position it
        reflects (and this process's own appends past it); everything stored after that, within
        the longest feature window of the latest event, is folded in. Without it a server started
        on an ingested log would rank with counters that miss the log (a training-serving skew)."""
        if self.features.shared:  # one store for every process: it records what it has folded
            try:
                self.features.catch_up(self.store.read_since)
            except Exception:  # the store is away: serve anyway (fallbacks); the tail catches up later
                log.exception("the shared online store could not catch up with the event store")
            self._position = self.store.position()
            return
        meta = self.features.meta
        since = int(meta.get("position", 0))
        table, position = self.store.read_since(since, skip=set(meta.get("own", [])))
        if table.num_rows:
            events = pl.DataFrame(pl.from_arrow(table))
            horizon = events["timestamp"].max() - timedelta(seconds=max(WINDOWS.values()))  # type: ignore[operator]
            events = events.filter(pl.col("timestamp") >= horizon)
            self.features.update(events)
        self._position = max(self._position, position)

    def _snapshot_meta(self) -> dict[str, Any]:
        return {"position": self._position, "own": sorted(self._own)}

    # -- background loops ------------------------------------------------------------------------
    def start_background(
        self, *, watch_interval_s: float, tail_interval_s: float, on_swap: Callable[[str], None] | None = None
    ) -> None:
        """Start the two loops a server runs beside its requests: the watcher (every
        ``watch_interval_s``: load a bundle that became production in any process, then call
        ``on_swap`` with its version) and the tail (every ``tail_interval_s``: ``catch_up``). 0
        turns a loop off; ``close`` stops both."""
        loops = [
            (self._watch_once, watch_interval_s, "feedrec-watch"),
            (self.catch_up, tail_interval_s, "feedrec-tail"),
        ]
        self._on_swap = on_swap
        for step, interval, name in loops:
            if interval > 0:
                threading.Thread(target=run_every, args=(step, interval, self._stop), name=name, daemon=True).start()

    def _watch_once(self) -> None:
        self.refresh_experiments()
        manifest = self.registry.production()
        current = self._bundle
        if manifest is not None and (current is None or current.version != manifest.version):
            # reload() reads production again under the reload lock: a promotion or rollback that
            # took effect since the read above is not undone by this (then stale) look.
            bundle = self.reload()
            if self._on_swap is not None and (current is None or bundle.version != current.version):
                self._on_swap(bundle.version)

    def close(self) -> None:
        """Store the queued events, persist the online features and stop the workers (the server
        calls this on shutdown)."""
        self._stop.set()
        self.writer.close()
        self.store.close()
        with self._write_lock:
            self.features.save(meta=self._snapshot_meta())
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.served_log.close()
        self.feature_log.close()
        self.exposures.close()

    # -- model -----------------------------------------------------------------------------------
    @property
    def bundle(self) -> Bundle | None:
        """The production bundle."""
        return self._bundle

    @property
    def bundles(self) -> dict[str, Bundle]:
        """Every bundle held, by version: production and those pinned with ``hold``."""
        held = dict(self._held)
        if self._bundle is not None:
            held[self._bundle.version] = self._bundle
        return held

    def _load(self, version: str) -> Bundle:
        held = self.bundles.get(version)
        if held is not None:
            return held
        bundle = Bundle(version, self.registry.load_model(version))
        self._warm(bundle.model)  # first-call costs (lazy caches) are paid here, not by a request
        return bundle

    def hold(self, versions: Collection[str]) -> dict[str, Bundle]:
        """Keep exactly ``versions`` loaded beside production (what experiments and shadow scoring
        serve); loads the missing ones and releases the others. Requests in flight keep theirs."""
        with self._reload_lock:
            held = {v: self._load(v) for v in versions}
            self._held = held  # one reference assignment
            _freeze_heap()
            return held

    def reload(self, version: str | None = None) -> Bundle:
        """Load the production bundle (or ``version``) and swap it in atomically: requests in flight
        finish on the bundle they started with, later ones get the new one; none waits for the load."""
        with self._reload_lock:  # one load at a time; feeds are served from the old bundle meanwhile
            if version is None:
                manifest = self.registry.production()
                if manifest is None:
                    raise NoModelError("no bundle in production: train one with `feedrec train`")
                version = manifest.version
            if self._bundle is not None and self._bundle.version == version:
                return self._bundle
            bundle = self._load(version)
            self._bundle = bundle  # one reference assignment: readers see the old or the new bundle, whole
            _freeze_heap()
            return bundle

    def promote(self, version: str, *, reason: str, key: str | None = None) -> Bundle:
        """Load ``version``, make it production and serve it, as one step under the reload lock (the
        watcher cannot swap in the old production between the load and the registry's change). A
        bundle that cannot load raises before the registry changes."""
        with self._reload_lock:
            bundle = self._load(version)
            self.registry.promote(version, reason=reason, key=key)
            production = self.registry.production()  # a repeated idempotency key changes nothing
            if production is not None and production.version != version:
                bundle = self._load(production.version)
            self._bundle = bundle
            _freeze_heap()
            return bundle

    def rollback(self, *, key: str | None = None) -> Bundle:
        """Roll production back in the registry and serve that bundle, under the reload lock."""
        with self._reload_lock:
            manifest = self.registry.rollback(key=key)
            bundle = self._load(manifest.version)
            self._bundle = bundle
            _freeze_heap()
            return bundle

    def try_reload(self) -> Bundle | None:
        try:
            return self.reload()
        except (NoModelError, RegistryError):
            return None

    def refresh_experiments(self) -> bool:
        """Pick up a change of the experiments (``feedrec experiment start|stop``): load every
        bundle the running ones serve, then swap in the new routing (one reference assignment), so
        no request is routed to a bundle that is not loaded. A state that does not parse, or names
        a bundle that does not load, leaves the current routing in place (retried next time)."""
        seen = self.experiments.signature()
        if seen == self._experiments_seen:
            return False
        try:
            assigner = Assigner(self.experiments.load())
            self.hold(assigner.versions)
        except (ExperimentError, RegistryError, OSError) as exc:
            log.error("experiments not applied: %s", exc)
            return False
        self.assigner, self._experiments_seen = assigner, seen
        log.info("experiments: %s", sorted(e.name for e in assigner.state.running()) or "none running")
        return True

    def _warm(self, model: Recommender) -> None:
        if model.user_ids_.size:
            try:
                context = RequestContext(now=self.now(), features=self.features)
                self._recommend(model, str(model.user_ids_[0]), 10, [], {}, context)
            except Exception:  # a bundle that cannot serve still loads: its requests take the fallback
                return

    # -- feed ------------------------------------------------------------------------------------
    def now(self) -> float | None:
        """The request time when a request brings none: the wall clock, or (``clock="events"``)
        the latest event time seen (None before any: the bundle's training time)."""
        if self.clock == "wall":
            return time.time()
        try:
            self._event_time = self.features.event_time() or self._event_time
        except Exception:  # a shared store that is away: the time it last told
            log.warning("the online store did not answer its clock; using the last known")
        return self._event_time

    def recent_items(self, user_id: str) -> list[str]:
        """What the user engaged with or hid (online state): not shown again. Empty when a shared
        store does not answer (the feed is then served without it, as a fallback would be)."""
        try:
            return self.features.recent_items(user_id)
        except Exception:
            log.warning("the online store did not answer the recent actions of %s", user_id)
            return []

    def feed(
        self,
        user_id: str,
        k: int,
        surface: str | None = None,
        *,
        version: str | None = None,
        now: float | None = None,
    ) -> Feed:
        """``user_id``'s feed as of ``now`` (epoch seconds; default: the server's clock, see
        ``now()``): from the held bundle ``version`` when given, else from the arm of a running
        experiment the user is assigned to (the exposure is logged), else from production."""
        start = time.perf_counter()
        at = self.now() if now is None else now
        held = self.bundles
        assignment = self._assignment(user_id) if version is None else None
        if assignment is not None and assignment.arm.interleave is not None:
            return routing.interleaved(self, assignment, user_id, k, surface, at, start)
        if assignment is not None:
            version = assignment.arm.version
        bundle = self._bundle if version is None else held.get(version)
        if bundle is None:
            if version is not None:
                raise NoModelError(f"bundle {version} is not held by this server; held: {sorted(held)}")
            raise NoModelError("no bundle in production: train one with `feedrec train`")
        stored = self._precomputed(user_id, k) if assignment is None else None
        if stored is not None:
            request_id, (version, items) = uuid.uuid4().hex, stored
            self.log_served(request_id, user_id, surface, items, version, at)
            return Feed(request_id, user_id, version, items, False, (time.perf_counter() - start) * 1e3)
        record: dict[str, Any] | None = {} if self._feature_rng.random() < self.feature_log_rate else None
        request_id = uuid.uuid4().hex
        arm = assignment.arm if assignment is not None else None
        extra: dict[str, Any] = {}
        if arm is not None and (arm.explore is not None or arm.shadow):
            items, why, stages, extra = routing.for_ope(self, bundle, arm, user_id, k, surface, at, request_id, record)
        else:
            items, why, stages = self.personal(bundle, user_id, k, surface, at, record)
        self.log_served(request_id, user_id, surface, items, bundle.version, at, fallback=why)
        if record and "matrix" in record:
            self._log_features(request_id, user_id, surface, items, bundle.version, at, record)
        feed = Feed(request_id, user_id, bundle.version, items, why is not None, 0.0, why, stages)
        return self.finish(feed, assignment, at, start, extra=extra)

    def preview(
        self,
        user_id: str,
        k: int,
        surface: str | None = None,
        *,
        version: str | None = None,
        now: float | None = None,
    ) -> Feed:
        """What ``feed`` would serve ``user_id`` now (the dashboard's feed explorer), without serving
        it: the same routing (the user's experiment arm, else production, else the precomputed
        feed) and pipeline, but nothing is logged and no exposure is recorded. ``version`` previews
        that bundle instead (loaded into a one-slot cache when this server does not hold it). An
        interleaving arm previews its first version; an exploring arm, its ranking before sampling."""
        start = time.perf_counter()
        at = self.now() if now is None else now
        assignment = self._assignment(user_id) if version is None else None
        if assignment is not None:
            arm = assignment.arm
            version = arm.interleave[0] if arm.interleave is not None else arm.version
        stored = self._precomputed(user_id, k) if version is None else None
        if stored is not None:
            return Feed("preview", user_id, stored[0], stored[1], False, (time.perf_counter() - start) * 1e3)
        bundle = self._bundle if version is None else self._previewed(version)
        if bundle is None:
            raise NoModelError("no bundle in production: train one with `feedrec train`")
        items, why, stages = self.personal(bundle, user_id, k, surface, at, None)
        feed = Feed("preview", user_id, bundle.version, items, why is not None, 0.0, why, stages)
        if assignment is not None:
            feed.experiment, feed.arm = assignment.experiment.name, assignment.arm.name
        feed.latency_ms = (time.perf_counter() - start) * 1e3
        return feed

    def _assignment(self, user_id: str) -> Assignment | None:
        """The running experiment's arm that serves the user, once every bundle it needs is held
        (between a stop and the next refresh it may not be: production serves)."""
        assignment = self.assigner.assign(user_id)
        if assignment is not None and not all(v in self.bundles for v in assignment.arm.versions):
            return None
        return assignment

    def _precomputed(self, user_id: str, k: int) -> tuple[str, list[FeedItem]] | None:
        """The user's precomputed feed (batch mode) with its version, when there is one."""
        try:
            stored = self.precomputed.get(user_id, k) if self.precomputed is not None else None
        except Exception:  # a shared store that is away: the model serves the user instead
            log.warning("the precomputed feeds did not answer for %s", user_id)
            stored = None
        if stored is None or self.precomputed is None:
            return None
        items = [FeedItem(i, float(s), "precomputed", "precomputed") for i, s in zip(*stored, strict=True)]
        return self.precomputed.version, items

    def _previewed(self, version: str) -> Bundle:
        held = self.bundles.get(version) or self._preview
        if held is not None and held.version == version:
            return held
        with self._reload_lock:
            self._preview = Bundle(version, self.registry.load_model(version))
            return self._preview

    def personal(
        self, bundle: Bundle, user_id: str, k: int, surface: str | None, at: float | None, record: dict[str, Any] | None
    ) -> tuple[list[FeedItem], str | None, dict[str, float]]:
        """One bundle's feed for the user: (items, fallback reason, stage timings)."""
        model = bundle.model
        known = bool(model.user_index().lookup([user_id])[0] >= 0)
        reason = "personalized" if known else "cold_start"
        stages: dict[str, float] = {}
        t = time.perf_counter()
        exclude = self.recent_items(user_id)
        stages["features"] = (time.perf_counter() - t) * 1e3
        context = RequestContext(now=at, surface=surface, features=self.features, record=record)
        try:
            ids, scores, sources, why = self._recommend(model, user_id, k, exclude, stages, context)
        except Exception as exc:  # retrieval failed or was late: the most popular items, minus the excluded
            why = f"retrieve: {_describe(exc)}"
            ids, scores, sources = model.serving().popular(k, exclude=exclude)
        if why is not None:
            self.fallbacks += 1
        items = [
            FeedItem(str(i), float(s) if np.isfinite(s) else 0.0, str(src), reason)
            for i, s, src in zip(ids, scores, sources, strict=True)
            if i != PAD_ID
        ]
        return items, why, stages

    def finish(
        self,
        feed: Feed,
        assignment: Assignment | None,
        at: float | None,
        start: float,
        teams: list[str] | None = None,
        *,
        extra: dict[str, Any] | None = None,
    ) -> Feed:
        """Stamp the latency; for an experiment's feed, its arm, and the exposure (on disk first),
        with ``extra`` (exploration and shadow slates)."""
        feed.latency_ms = (time.perf_counter() - start) * 1e3
        if assignment is not None:
            feed.experiment, feed.arm = assignment.experiment.name, assignment.arm.name
            self.exposures.write(
                {
                    "request_id": feed.request_id,
                    "user_id": feed.user_id,
                    "experiment": feed.experiment,
                    "arm": feed.arm,
                    "version": feed.model_version,
                    "items": [i.item_id for i in feed.items],
                    "positions": list(range(len(feed.items))),
                    "teams": teams,
                    "time": datetime.fromtimestamp(time.time() if at is None else at, UTC).isoformat(),
                    "served_at": datetime.now(UTC).isoformat(),
                    "latency_ms": round(feed.latency_ms, 3),
                    **(extra or {}),
                }
            )
        return feed

    def _stage(self, name: str, budget: float, stages: dict[str, float], fn: Callable[..., T], *args: Any) -> T:
        """Run one stage on a worker and wait at most ``budget`` seconds for it; a late stage is
        abandoned (its result ignored) and raises ``StageLate``."""
        t = time.perf_counter()
        future = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=budget)
        except FutureTimeout:
            future.cancel()
            raise StageLate(f"over its {budget * 1e3:.0f} ms budget") from None
        finally:
            stages[name] = (time.perf_counter() - t) * 1e3

    def _recommend(
        self,
        model: Recommender,
        user_id: str,
        k: int,
        exclude: list[str],
        stages: dict[str, float],
        context: RequestContext,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None]:
        """retrieve -> rank -> re-rank through the model's served pipeline, each within its budget:
        (ids, scores, sources, fallback reason)."""
        b = self.budgets
        users = np.asarray([user_id])
        pipeline = model.serving()
        candidates = self._stage("retrieve", b.retrieve, stages, partial(pipeline.retrieve, exclude=exclude), users, k)
        why = None
        try:
            scores = self._stage("rank", b.rank, stages, pipeline.rank, users, candidates, context)
        except Exception as exc:  # the ranker failed or is late: serve the retrieval order
            why, scores = f"rank: {_describe(exc)}", candidates.rrf
        try:
            arrange = partial(pipeline.arrange, now=context.now)
            ids, out, sources = self._stage("rerank", b.rerank, stages, arrange, 1, candidates, scores, k)
        except Exception as exc:  # the re-ranker failed or is late: the ranked order, unshaped
            why = why or f"rerank: {_describe(exc)}"
            ids, out, sources = pipeline.arrange(1, candidates, scores, k, rerank=False)
        return ids[0], out[0], sources[0], why

    def log_served(
        self,
        request_id: str,
        user_id: str,
        surface: str | None,
        items: list[FeedItem],
        version: str,
        at: float | None,
        *,
        fallback: str | None = None,
    ) -> None:
        """Append what was served (the impressions to come) for monitoring; not fsync'ed, not events.
        ``time`` is the request's moment (the world's clock in a simulation), ``served_at`` the wall's;
        ``fallback`` why a stage fell back (None: every stage answered)."""
        record: dict[str, Any] = {
            "time": None if at is None else datetime.fromtimestamp(at, UTC).isoformat(),
            "served_at": datetime.now(UTC).isoformat(),
            "request_id": request_id,
            "user_id": user_id,
            "surface": surface,
            "model_version": version,
            "items": [i.item_id for i in items],
            "fallback": fallback,
        }
        self.served_log.write(json.dumps(record) + "\n")

    def _log_features(
        self,
        request_id: str,
        user_id: str,
        surface: str | None,
        items: list[FeedItem],
        version: str,
        at: float | None,
        record: dict[str, Any],
    ) -> None:
        """Queue a sampled feed's ranker inputs for the feature log (``feedrec.monitoring.featurelog``):
        the served items the real-time ranker scored (not a pinned one, nor one past ``realtime_top``)."""
        row_of = {item: n for n, item in enumerate(record["items"])}
        slots = [n for n, i in enumerate(items) if i.item_id in row_of]
        served = [items[n].item_id for n in slots]
        self.feature_log.add(
            request_id=request_id,
            time=time.time() if at is None else at,
            user_id=user_id,
            version=version,
            surface=surface,
            items=served,
            slots=slots,
            names=list(record["names"]),
            matrix=record["matrix"][[row_of[i] for i in served]],
            predict=record["predict"],
            as_of=self._features_as_of(),
        )

    def _features_as_of(self) -> float | None:
        """The online store's latest folded event time, for the feature log (None when it cannot
        tell: a shared store that is away)."""
        try:
            return self.features.event_time()
        except Exception:
            return None

    # -- events ----------------------------------------------------------------------------------
    def submit_events(self, events: list[Event], *, timeout_s: float = 5.0) -> Future[Outcome | Rejected]:
        """Queue a batch for the writer (``feedrec.online.ingest``); raises ``Busy`` when it is full."""
        return self.writer.submit([e.model_dump() for e in events], timeout_s=timeout_s)

    def ingest(self, events: list[Event]) -> tuple[int, int]:
        """Store new events (durable when this returns) and update the online features; (stored,
        duplicates). Raises ``EventsRejected`` when an event breaks the ingestion rules."""
        outcome = self.submit_events(events).result()
        if isinstance(outcome, Rejected):
            raise EventsRejected(outcome)
        return outcome.stored, outcome.duplicates

    def _fold_own(self, events: pa.Table, result: AppendResult) -> None:
        if self.features.shared:  # whoever folds next folds these too, exactly once
            self.features.catch_up(partial(_read_since_own, self.store, result))
            return
        with self._write_lock:
            if result.position is not None:  # first: a snapshot written by this fold must skip it
                self._own.add(result.position)
            self._fold(pl.DataFrame(pl.from_arrow(events)))

    def catch_up(self) -> int:
        """Fold in the events other processes (other server workers, ``feedrec ingest``) stored since
        this one last looked; returns how many. The server calls it every FEEDREC_TAIL_INTERVAL_S.
        A shared store (Redis) folds what no process has folded yet, once for all of them."""
        if self.features.shared:
            return self.features.catch_up(self.store.read_since)
        with self._write_lock:
            table, position = self.store.read_since(self._position, skip=self._own)
            self._position = position
            self._own = {p for p in self._own if p > position}
            if table.num_rows == 0:
                return 0
            events = pl.DataFrame(pl.from_arrow(table))
            self._fold(events)
            return events.height

    def _fold(self, events: pl.DataFrame) -> None:
        """Update the online features, recent actions and clock with new events (under the write lock)."""
        self.features.update(events)
        now = time.monotonic()
        if now - self._last_snapshot >= self.snapshot_every_s:  # the events are durable already; the
            self.features.save(meta=self._snapshot_meta())  # feature snapshot is a cache of them
            self._last_snapshot = now


def _read_since_own(store: EventStore, own: AppendResult, position: int) -> tuple[pa.Table, int]:
    """``store.read_since(position)``, answered from memory when what follows ``position`` starts
    with the writer's own append ``own`` (the rows just written; a later append is read next time):
    a POST's fold then skips reading its own part back (~4 ms of a one-event fold)."""
    if own.written is not None and own.position is not None and position == own.since:
        return own.written, own.position
    return store.read_since(position)


def run_every(step: Callable[[], object], interval: float, stop: threading.Event, *, remind_s: float = 60.0) -> None:
    """Call ``step`` every ``interval`` seconds until ``stop`` is set. A failure must not stop
    serving (a broken bundle, registry or part; Redis away): it is retried next time, logged with
    its traceback when it starts, then once every ``remind_s`` while the same failure repeats (not
    twice a second), and its end is logged too."""
    name = threading.current_thread().name
    failing: str | None = None
    repeats, reminded = 0, 0.0
    while not stop.wait(interval):
        try:
            step()
        except Exception as exc:
            what = _describe(exc)
            if what != failing:
                log.exception("%s failed", name)
                failing, repeats, reminded = what, 1, time.monotonic()
                continue
            repeats += 1
            if time.monotonic() - reminded >= remind_s:
                log.warning("%s still failing (%d times so far): %s", name, repeats, what)
                reminded = time.monotonic()
        else:
            if failing is not None:
                log.info("%s works again after %d failed tries (%s)", name, repeats, failing)
                failing = None


def _freeze_heap() -> None:
    """Move the long-lived objects (libraries, the bundle) out of the cyclic GC's sight: a full
    collection over them took ~120 ms, a stall every few seconds under load. Requests' garbage is
    still collected; a swapped-out bundle is freed by reference counting (its arrays hold no cycles)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
