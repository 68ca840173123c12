"""The feed service: the production model, the event store and the online features, behind one object.

``feed()`` never fails a valid request: if the model raises, it serves the candidate set's order
(for the full pipeline) or popularity, and says so (``fallback``). ``ingest()`` appends events
durably (fsync before it returns) and idempotently by event_id, then folds them into the online
features. ``reload()`` loads the production bundle and swaps it in with one reference assignment,
so requests in flight finish on the bundle they started with.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from feedrec.data.store import LocalEventStore
from feedrec.features.online import LocalOnlineStore
from feedrec.models.base import PAD_ID, Recommender
from feedrec.models.feed import FeedRecommender
from feedrec.models.retrieval.candidates import CandidateRecommender
from feedrec.online.batch import PrecomputedFeeds
from feedrec.registry import LocalRegistry, RegistryError
from feedrec.schemas import EVENT_SCHEMA, Event


class NoModelError(RuntimeError):
    """No bundle is in production yet."""


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


class FeedService:
    def __init__(self, workspace: Path, precomputed: Path | None = None) -> None:
        self.workspace = Path(workspace)
        self.precomputed = PrecomputedFeeds(precomputed) if precomputed is not None else None
        self.registry = LocalRegistry(self.workspace / "registry")
        self.store = LocalEventStore(self.workspace)
        items = pl.DataFrame(pl.from_arrow(self.store.items()))
        self.features = LocalOnlineStore(
            items if items.height else None, path=self.workspace / "online" / "features.parquet"
        )
        self._bundle: Bundle | None = None
        self._write_lock = threading.Lock()
        self._served_log = self.workspace / "serving" / "impressions.jsonl"
        self.fallbacks = 0

    # -- model -----------------------------------------------------------------------------------
    @property
    def bundle(self) -> Bundle | None:
        return self._bundle

    def reload(self) -> Bundle:
        """Load the production bundle and swap it in atomically."""
        manifest = self.registry.production()
        if manifest is None:
            raise NoModelError("no bundle in production: train one with `feedrec train`")
        bundle = Bundle(manifest.version, self.registry.load_model(manifest.version))
        self._bundle = bundle  # one reference assignment: readers see the old or the new bundle, whole
        return bundle

    def try_reload(self) -> Bundle | None:
        try:
            return self.reload()
        except (NoModelError, RegistryError):
            return None

    # -- feed ------------------------------------------------------------------------------------
    def feed(self, user_id: str, k: int, surface: str | None = None) -> Feed:
        start = time.perf_counter()
        bundle = self._bundle
        if bundle is None:
            raise NoModelError("no bundle in production: train one with `feedrec train`")
        model = bundle.model
        stored = self.precomputed.get(user_id, k) if self.precomputed is not None else None
        if stored is not None:
            items = [FeedItem(i, float(s), "precomputed", "precomputed") for i, s in zip(*stored, strict=True)]
            request_id = uuid.uuid4().hex
            version = self.precomputed.version if self.precomputed is not None else bundle.version
            self._log_served(request_id, user_id, surface, items, version)
            return Feed(request_id, user_id, version, items, False, (time.perf_counter() - start) * 1e3)
        known = bool(model.user_index().lookup([user_id])[0] >= 0)
        reason = "personalized" if known else "cold_start"
        fallback = False
        try:
            ids, scores, sources = self._recommend(model, user_id, k)
        except Exception:  # a failing ranker must not fail the request: serve retrieval order
            fallback = True
            self.fallbacks += 1
            ids, scores, sources = self._fallback(model, user_id, k)
        items = [
            FeedItem(str(i), float(s) if np.isfinite(s) else 0.0, str(src), reason)
            for i, s, src in zip(ids, scores, sources, strict=True)
            if i != PAD_ID
        ]
        request_id = uuid.uuid4().hex
        self._log_served(request_id, user_id, surface, items, bundle.version)
        return Feed(request_id, user_id, bundle.version, items, fallback, (time.perf_counter() - start) * 1e3)

    @staticmethod
    def _recommend(model: Recommender, user_id: str, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(model, FeedRecommender | CandidateRecommender):
            ids, scores, sources = model.recommend_with_sources([user_id], k)
            return ids[0], scores[0], sources[0]
        ids, scores = model.recommend([user_id], k)
        return ids[0], scores[0], np.full(ids.shape[1], type(model).__name__)

    @staticmethod
    def _fallback(model: Recommender, user_id: str, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(model, FeedRecommender):
            ids, scores, sources = model.candidates_.recommend_with_sources([user_id], k)
            return ids[0], scores[0], sources[0]
        order = np.argsort(-model.item_counts_, kind="stable")[:k]
        return model.item_ids_[order], model.item_counts_[order], np.full(order.size, "popularity")

    def _log_served(
        self, request_id: str, user_id: str, surface: str | None, items: list[FeedItem], version: str
    ) -> None:
        """Append what was served (the impressions to come) for monitoring; not fsync'ed, not events."""
        self._served_log.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "time": datetime.now(UTC).isoformat(),
            "request_id": request_id,
            "user_id": user_id,
            "surface": surface,
            "model_version": version,
            "items": [i.item_id for i in items],
        }
        with self._served_log.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    # -- events ----------------------------------------------------------------------------------
    def ingest(self, events: list[Event]) -> tuple[int, int]:
        """Store new events (durable when this returns) and update the online features; (stored, duplicates)."""
        rows = [e.model_dump() for e in events]
        for row in rows:
            row["type"] = str(row["type"])
            row["timestamp"] = row["timestamp"].astimezone(UTC)
        table = pa.Table.from_pylist(rows, EVENT_SCHEMA)
        with self._write_lock:
            result = self.store.append(table)
            if result.stored:  # only what is new: a retried batch must not count twice
                fresh = pl.DataFrame(pl.from_arrow(table)).filter(pl.col("event_id").is_in(list(result.stored_ids)))
                self.features.update(fresh)
                self.features.save()
        return result.stored, result.already_stored
