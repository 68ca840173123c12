"""The workspace: one folder, its layout, and the stores built from the ``backends:`` config section.

Everything that reads or writes a workspace goes through ``Workspace``: nothing else constructs a
store, so a new backend (Spark, Redis) is one class and one line in ``BACKENDS``, and every caller
gets it from config. Layout::

    <root>/events/          the event store's parts and catalog      (event_store: local)
    <root>/events_by_date/  the Spark event store's Parquet dataset  (event_store: spark)
    <root>/items.parquet, users.parquet
    <root>/registry/        bundles, production.json, history.jsonl  (registry: local)
    <root>/online/          the online feature snapshot              (online_store: local)
    <root>/serving/         served-feed log, metrics of the workers
    <root>/quarantine/      refused rows, with their reasons
    <root>/experiments/     experiment definitions, their history, the exposure log
"""

from __future__ import annotations

import importlib
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from feedrec.config import BackendsConfig, FeedrecConfig
from feedrec.data.store import EventStore
from feedrec.experiments.store import ExperimentStore
from feedrec.features.online import OnlineFeatureStore
from feedrec.registry import ModelRegistry

#: kind -> backend name -> "module:Class". Classes are imported when asked for, so a backend's
#: heavy dependency (pyspark, redis) is needed only by workspaces that use it.
BACKENDS: dict[str, dict[str, str]] = {
    "event_store": {"local": "feedrec.data.store:LocalEventStore", "spark": "feedrec.spark.store:SparkEventStore"},
    "online_store": {
        "local": "feedrec.features.online:LocalOnlineStore",
        "redis": "feedrec.redis.online:RedisOnlineStore",
    },
    # Batch mode's precomputed feeds: in each server process, or once in Redis for all of them.
    "precomputed": {
        "local": "feedrec.online.batch:PrecomputedFeeds",
        "redis": "feedrec.redis.feeds:RedisPrecomputedFeeds",
    },
    "registry": {"local": "feedrec.registry:LocalRegistry"},
}


class BackendError(ValueError):
    """A backend name the config asks for is not known."""


def backend_class(kind: str, name: str) -> type[Any]:
    known = BACKENDS[kind]
    if name not in known:
        raise BackendError(f"backends.{kind}: unknown backend {name!r}; known: {sorted(known)}")
    module, _, cls = known[name].partition(":")
    found: type[Any] = getattr(importlib.import_module(module), cls)
    return found


class Workspace:
    def __init__(self, root: Path | str, backends: BackendsConfig | None = None) -> None:
        self.root = Path(root)
        self.backends = backends or BackendsConfig()

    @classmethod
    def from_config(cls, cfg: FeedrecConfig) -> Workspace:
        return cls(cfg.workspace, cfg.backends)

    # -- layout ----------------------------------------------------------------------------------
    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def online_snapshot(self) -> Path:
        return self.root / "online" / "features.parquet"

    @property
    def serving_dir(self) -> Path:
        return self.root / "serving"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def experiments(self) -> ExperimentStore:
        return ExperimentStore(self.root / "experiments")

    # -- stores ----------------------------------------------------------------------------------
    @cached_property
    def events(self) -> EventStore:
        """The event store (built once per Workspace)."""
        name = self.backends.event_store
        options = {"master": self.backends.spark_master, "conf": self.backends.spark_conf} if name == "spark" else {}
        store: EventStore = backend_class("event_store", name)(self.root, **options)
        return store

    @cached_property
    def registry(self) -> ModelRegistry:
        registry: ModelRegistry = backend_class("registry", self.backends.registry)(self.registry_dir)
        return registry

    def _redis(self) -> dict[str, Any]:
        from feedrec.redis.client import namespace_for

        return {"url": self.backends.redis_url, "namespace": self.backends.redis_namespace or namespace_for(self.root)}

    def online_store(self, items: pl.DataFrame | None = None) -> OnlineFeatureStore:
        """A new online feature store over ``items``: restored from this workspace's snapshot (local),
        or this workspace's namespace of a shared Redis."""
        name = self.backends.online_store
        options = self._redis() if name == "redis" else {}
        store: OnlineFeatureStore = backend_class("online_store", name)(items, path=self.online_snapshot, **options)
        return store

    def precomputed(self, folder: Path) -> Any:
        """Batch mode's feeds from a ``feedrec recommend-batch`` folder: read into each process
        (local), or loaded once into Redis and read from there by every process (redis)."""
        if self.backends.online_store == "redis":
            return backend_class("precomputed", "redis")(folder, **self._redis())
        return backend_class("precomputed", "local")(folder)

    def close(self) -> None:
        if "events" in self.__dict__:
            close = getattr(self.events, "close", None)
            if close is not None:
                close()
