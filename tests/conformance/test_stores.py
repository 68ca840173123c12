"""Every store passes the same shipped suite (``feedrec.testing``): the event stores, the online
feature stores and the model registries. A new backend adds one line to its dictionary here (or
runs the same checks from its own tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feedrec.data.store import LocalEventStore
from feedrec.features.online import LocalOnlineStore
from feedrec.redis import namespace_for
from feedrec.redis.online import RedisOnlineStore
from feedrec.registry import LocalRegistry
from feedrec.spark.store import SparkEventStore
from feedrec.testing import (
    EVENT_STORE_CHECKS,
    ITEMS,
    ONLINE_STORE_CHECKS,
    REGISTRY_CHECKS,
    SHARED_ONLINE_STORE_CHECKS,
    Check,
    sample_events,
)

events = sample_events  # the other tests' name for it

EVENT_STORES: dict[str, Callable[[Path], Any]] = {
    "local": LocalEventStore,
    "spark": lambda path: SparkEventStore(path, master="local[2]"),
}
ONLINE_STORES: dict[str, Callable[[Path], Any]] = {
    "local": lambda path: LocalOnlineStore(ITEMS, path=path / "online.parquet"),
    "redis": lambda path: RedisOnlineStore(ITEMS, url=_REDIS[0], namespace=namespace_for(path)),
}
SHARED_ONLINE_STORES = {"redis": ONLINE_STORES["redis"]}
_REDIS: list[str] = []  # the URL of this test process's redis-server (the fixture below)


@pytest.fixture(autouse=True)
def _redis_url(request: pytest.FixtureRequest) -> None:
    if "redis" in request.node.name:  # only the Redis cases start a server
        _REDIS[:] = [request.getfixturevalue("redis_server").url]


REGISTRIES: dict[str, Callable[[Path], Any]] = {"local": lambda path: LocalRegistry(path / "registry")}


def _cases(makers: dict[str, Callable[[Path], Any]], checks: list[Check]) -> list[Any]:
    return [
        pytest.param(make, check, id=f"{name}-{check.__name__}") for name, make in makers.items() for check in checks
    ]


@pytest.mark.parametrize(("make", "check"), _cases(EVENT_STORES, EVENT_STORE_CHECKS))
def test_event_store(make, check, tmp_path: Path):
    check(make, tmp_path)


@pytest.mark.parametrize(("make", "check"), _cases(ONLINE_STORES, ONLINE_STORE_CHECKS))
def test_online_store(make, check, tmp_path: Path):
    check(make, tmp_path)


@pytest.mark.parametrize(("make", "check"), _cases(SHARED_ONLINE_STORES, SHARED_ONLINE_STORE_CHECKS))
def test_shared_online_store(make, check, tmp_path: Path):
    check(make, tmp_path)


@pytest.mark.parametrize(("make", "check"), _cases(REGISTRIES, REGISTRY_CHECKS))
def test_registry(make, check, tmp_path: Path):
    check(make, tmp_path)


def test_a_check_can_fail(tmp_path: Path):
    """The suite is not vacuous: a store that forgets what it was given fails it."""

    class Forgetful(LocalEventStore):
        def scan(self, **kwargs: Any) -> Any:
            return super().scan(**kwargs).slice(1)

    with pytest.raises(AssertionError):
        EVENT_STORE_CHECKS[0](Forgetful, tmp_path)
