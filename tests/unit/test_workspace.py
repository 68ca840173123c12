"""The workspace builds every store from the backends: config section, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedrec.config import BackendsConfig, FeedrecConfig
from feedrec.data.store import LocalEventStore
from feedrec.features.online import LocalOnlineStore
from feedrec.registry import LocalRegistry
from feedrec.workspace import BACKENDS, BackendError, Workspace


def test_the_embedded_default_and_its_layout(tmp_path: Path):
    space = Workspace.from_config(FeedrecConfig(workspace=tmp_path))
    assert isinstance(space.events, LocalEventStore) and space.events is space.events  # built once
    assert isinstance(space.registry, LocalRegistry) and space.registry.root == tmp_path / "registry"
    online = space.online_store()
    assert isinstance(online, LocalOnlineStore) and online.path == tmp_path / "online" / "features.parquet"
    assert (tmp_path / "events" / "catalog.sqlite").exists()
    space.close()


def test_an_unknown_backend_is_a_clear_error_and_a_new_one_is_one_line(tmp_path: Path, monkeypatch):
    with pytest.raises(
        BackendError, match=r"backends.event_store: unknown backend 'hbase'; known: \['local', 'spark'\]"
    ):
        _ = Workspace(tmp_path, BackendsConfig(event_store="hbase")).events

    class Counting(LocalEventStore):
        pass

    monkeypatch.setitem(BACKENDS["event_store"], "counting", f"{__name__}:Counting")
    monkeypatch.setitem(globals(), "Counting", Counting)  # importable by its path for the test's length
    assert type(Workspace(tmp_path, BackendsConfig(event_store="counting")).events) is Counting


def test_the_scale_out_backends_come_from_config(tmp_path: Path, redis_server):
    from pydantic import ValidationError

    from feedrec.redis.online import RedisOnlineStore

    with pytest.raises(ValidationError, match="redis_url is not set"):
        BackendsConfig(online_store="redis")
    with pytest.raises(ValidationError, match="engine"):
        BackendsConfig(engine="hive")  # type: ignore[arg-type]
    space = Workspace(tmp_path, BackendsConfig(online_store="redis", redis_url=redis_server.url))
    store = space.online_store()
    assert isinstance(store, RedisOnlineStore) and store.shared and store.ns.startswith("feedrec:")
    other = Workspace(tmp_path / "other", space.backends).online_store()
    assert isinstance(other, RedisOnlineStore) and other.ns != store.ns
