"""The workspace: one folder, its layout, and the stores built from the ``backends:`` config section.

Everything that reads or writes a workspace goes through ``Workspace``: nothing else constructs a
store, so a new backend (Spark, Redis) is one class and one line in ``BACKENDS``, and every caller
gets it from config. Layout::

    <root>/events/          the event store's parts and catalog      (event_store: local)
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
    "event_store": {"local": "feedrec.data.store:LocalEventStore"},
    "online_store": {"local": "feedrec.features.online:LocalOnlineStore"},
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
        store: EventStore = backend_class("event_store", self.backends.event_store)(self.root)
        return store

    @cached_property
    def registry(self) -> ModelRegistry:
        registry: ModelRegistry = backend_class("registry", self.backends.registry)(self.registry_dir)
        return registry

    def online_store(self, items: pl.DataFrame | None = None) -> OnlineFeatureStore:
        """A new online feature store over ``items``, restored from this workspace's snapshot."""
        store: OnlineFeatureStore = backend_class("online_store", self.backends.online_store)(
            items, path=self.online_snapshot
        )
        return store

    def close(self) -> None:
        if "events" in self.__dict__:
            close = getattr(self.events, "close", None)
            if close is not None:
                close()
