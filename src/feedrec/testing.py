"""Conformance suites that every backend passes, shipped with the package (as scikit-learn ships
``parametrize_with_checks``) so that a backend's own tests can import them.

Each suite is a list of checks ``check(make, tmp_path)``; ``make(tmp_path)`` builds a fresh
backend over a folder (or ignores it, for a server-backed store). A backend's test module reads::

    from feedrec.testing import ONLINE_STORE_CHECKS

    @pytest.mark.parametrize("check", ONLINE_STORE_CHECKS, ids=lambda c: c.__name__)
    def test_my_store(check, tmp_path):
        check(lambda path: MyOnlineStore(items, ...), tmp_path)

The checks use only the abstract interfaces (``EventStore``, ``OnlineFeatureStore``,
``ModelRegistry``) and compare against the embedded default or a naive computation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from feedrec.data.interactions import Interactions
from feedrec.data.store import EventStore
from feedrec.features.definitions import FEATURE_NAMES
from feedrec.features.offline import build_features
from feedrec.features.online import OnlineFeatureStore
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.registry import Manifest, ModelRegistry, RegistryError
from feedrec.schemas import EVENT_SCHEMA, ITEM_SCHEMA

T0 = datetime(2024, 1, 1, tzinfo=UTC)
Check = Callable[[Callable[[Path], Any], Path], None]


def _raises(error: type[Exception], fn: Callable[[], object], match: str) -> None:
    try:
        fn()
    except error as exc:
        assert match in str(exc), f"{match!r} not in {exc!r}"
        return
    raise AssertionError(f"{error.__name__} not raised")


# -- event stores ---------------------------------------------------------------------------------
def sample_events(ids: list[str], t0: int = 0) -> pa.Table:
    """Events with the given ids, a second apart from 2023-11-14 22:13:20 UTC + ``t0`` seconds."""
    n = len(ids)
    return pa.table(
        {
            "event_id": ids,
            "user_id": [f"u{i % 3}" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "timestamp": pa.array(
                [datetime.fromtimestamp(1_700_000_000 + t0 + i, UTC) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
            "type": ["click" if i % 2 else "impression" for i in range(n)],
            "value": [None] * n,
            "position": [i % 10 for i in range(n)],
            "surface": ["home"] * n,
            "request_id": ["r1"] * n,
        },
        schema=EVENT_SCHEMA,
    )


def check_write_then_read(make: Callable[[Path], EventStore], tmp_path: Path) -> None:
    store = make(tmp_path)
    assert store.count() == 0 and store.scan().num_rows == 0
    assert store.append(sample_events(["a", "b", "c"])).stored == 3
    table = store.scan()
    assert table.schema == EVENT_SCHEMA
    assert table.column("event_id").to_pylist() == ["a", "b", "c"]


def check_appends_are_idempotent(make: Callable[[Path], EventStore], tmp_path: Path) -> None:
    store = make(tmp_path)
    store.append(sample_events(["a", "b"]))
    result = store.append(sample_events(["b", "c", "c"], t0=10))
    assert (result.stored, result.already_stored, store.count()) == (1, 2, 3)


def check_scan_filters(make: Callable[[Path], EventStore], tmp_path: Path) -> None:
    store = make(tmp_path)
    store.append(sample_events([f"e{i}" for i in range(10)]))
    assert store.scan(types=["click"]).num_rows == 5
    start = datetime.fromtimestamp(1_700_000_005, UTC)
    assert store.scan(start=start).num_rows == 5
    assert store.scan(end=start, columns=["event_id"]).column_names == ["event_id"]
    # users u0, u1, u2 in turn: u1 has e1, e4, e7; with a start, only e7.
    assert store.scan(users=["u1"], columns=["event_id"]).column("event_id").to_pylist() == ["e1", "e4", "e7"]
    assert store.scan(users=["u1"], start=start, types=["click"]).column("event_id").to_pylist() == ["e7"]
    assert store.scan(users=[]).num_rows == 0
    _raises(ValueError, lambda: store.scan(columns=["nope"]), "unknown event column")


def check_read_since(make: Callable[[Path], EventStore], tmp_path: Path) -> None:
    store = make(tmp_path)
    store.append(sample_events(["a", "b"]))
    position = store.position()
    own = store.append(sample_events(["c"], t0=5)).position
    store.append(sample_events(["d", "e"], t0=10))
    table, after = store.read_since(position, skip=[own] if own is not None else [])
    assert sorted(table.column("event_id").to_pylist()) == ["d", "e"]
    assert store.read_since(after)[0].num_rows == 0


def check_persists_across_instances(make: Callable[[Path], EventStore], tmp_path: Path) -> None:
    make(tmp_path).append(sample_events(["a"]))
    assert make(tmp_path).count() == 1


def check_items_upsert_and_missing(make: Callable[[Path], EventStore], tmp_path: Path) -> None:
    store = make(tmp_path)
    assert store.items().num_rows == 0 and store.users().num_rows == 0
    row = {"item_id": "i1", "created_at": None, "topics": ["a"], "creator_id": "c1", "text": None}
    store.put_items(pa.Table.from_pylist([row], ITEM_SCHEMA))
    store.put_items(pa.Table.from_pylist([row | {"topics": ["b"]}, row | {"item_id": "i2"}], ITEM_SCHEMA))
    items = store.items()
    assert items.column("item_id").to_pylist() == ["i1", "i2"]
    assert items.column("topics").to_pylist() == [["b"], ["a"]]


EVENT_STORE_CHECKS: list[Check] = [
    check_write_then_read,
    check_appends_are_idempotent,
    check_scan_filters,
    check_read_since,
    check_persists_across_instances,
    check_items_upsert_and_missing,
]


# -- online feature stores ------------------------------------------------------------------------
ITEMS = pl.DataFrame(
    {
        "item_id": ["a", "b", "c"],
        "creator_id": ["x", "x", None],
        "topics": [["t1"], ["t1", "t2"], ["t2"]],
        "created_at": [T0 - timedelta(days=3), T0, None],
    },
    schema={
        "item_id": pl.Utf8,
        "creator_id": pl.Utf8,
        "topics": pl.List(pl.Utf8),
        "created_at": pl.Datetime("us", "UTC"),
    },
)


def sample_stream(n: int = 300, seed: int = 0) -> pl.DataFrame:
    """``n`` events by two users on ITEMS over three days, in time order."""
    rng = np.random.default_rng(seed)
    minutes = np.sort(rng.integers(0, 3 * 24 * 60, n))
    return pl.DataFrame(
        {
            "user_id": rng.choice(["u1", "u2"], n).tolist(),
            "item_id": rng.choice(["a", "b", "c"], n).tolist(),
            "type": rng.choice(["impression", "click", "like", "hide"], n).tolist(),
            "timestamp": [T0 + timedelta(minutes=int(m)) for m in minutes],
            "surface": ["home"] * n,
            "position": rng.integers(0, 10, n).tolist(),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "position": pl.Int32},
    )


def _after(events: pl.DataFrame) -> datetime:
    """A minute after the last event."""
    last: datetime = events["timestamp"].max()  # type: ignore[assignment]
    return last + timedelta(minutes=1)


def _queries(at: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "nobody"],
            "item_id": ["a", "b", "c", "a"],
            "timestamp": [at] * 4,
            "surface": ["home"] * 4,
            "position": [0, 1, 2, 3],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "position": pl.Int32},
    )


def check_online_equals_offline(make: Callable[[Path], OnlineFeatureStore], tmp_path: Path) -> None:
    """Fed in two batches, the store answers what the offline builder computes at the same moment."""
    events = sample_stream()
    store = make(tmp_path)
    store.update(events.head(100))
    store.update(events.tail(events.height - 100))
    at = _after(events)
    queries = _queries(at)
    online = store.get_online_features(queries)
    offline = build_features(queries, events, ITEMS)
    assert online.select(FEATURE_NAMES).equals(offline.select(FEATURE_NAMES))


def check_request_features_equal_offline(make: Callable[[Path], OnlineFeatureStore], tmp_path: Path) -> None:
    """A server's request (one user, several candidates, one an unknown item) gets the offline
    builder's features, whichever way the store answers it (all counts at once, or call by call)."""
    events = sample_stream()
    store = make(tmp_path)
    store.update(events)
    at = _after(events)
    candidates = ["a", "b", "c", "no-such-item"]
    served = store.request_features("u1", np.asarray(candidates), int(at.timestamp() * 1_000_000), "home", 0)
    queries = (
        _queries(at).head(1).select(pl.exclude("item_id")).join(pl.DataFrame({"item_id": candidates}), how="cross")
    )
    offline = build_features(queries.select("user_id", "item_id", "timestamp", "surface", "position"), events, ITEMS)
    assert sum(served["user_clicks_30d"]) > 0 and sum(served["item_impressions_7d"][:3]) > 0  # counts, not zeros
    for name in FEATURE_NAMES:
        if name != "surface":
            np.testing.assert_array_equal(served[name], offline[name].cast(pl.Float64).to_numpy(), err_msg=name)


def check_online_survives_a_restart(make: Callable[[Path], OnlineFeatureStore], tmp_path: Path) -> None:
    events = sample_stream(seed=1)
    store = make(tmp_path)
    store.update(events)
    store.save()
    at = _after(events)
    again = make(tmp_path)
    assert again.get_online_features(_queries(at)).equals(store.get_online_features(_queries(at)))


def check_online_missing_keys_and_names(make: Callable[[Path], OnlineFeatureStore], tmp_path: Path) -> None:
    store = make(tmp_path)
    rows = store.get_online_features(_queries(T0))
    assert rows.height == 4 and set(FEATURE_NAMES) <= set(rows.columns)
    _raises(ValueError, lambda: store.get_online_features(_queries(T0), ["user_ctr_forever"]), "unknown feature")


def check_online_recent_actions_and_clock(make: Callable[[Path], OnlineFeatureStore], tmp_path: Path) -> None:
    """Engaged and hidden items come back oldest first, once each; impressions are not actions; the
    clock is the latest event time folded in."""
    store = make(tmp_path)
    assert store.recent_items("u1") == [] and store.event_time() is None
    events = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2"],
            "item_id": ["a", "b", "c", "a", "c"],
            "type": ["click", "impression", "hide", "like", "click"],
            "timestamp": [T0 + timedelta(minutes=m) for m in (1, 2, 3, 4, 9)],
            "surface": ["home"] * 5,
            "position": [0] * 5,
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "position": pl.Int32},
    )
    store.update(events)
    assert store.recent_items("u1") == ["c", "a"] and store.recent_items("u2") == ["c"]
    assert store.event_time() == (T0 + timedelta(minutes=9)).timestamp()


ONLINE_STORE_CHECKS: list[Check] = [
    check_online_equals_offline,
    check_request_features_equal_offline,
    check_online_survives_a_restart,
    check_online_missing_keys_and_names,
    check_online_recent_actions_and_clock,
]


def check_shared_store_folds_each_event_once(make: Callable[[Path], OnlineFeatureStore], tmp_path: Path) -> None:
    """Two processes' handles on one shared store, catching up from one event log in turns, fold
    each event once: the features equal the offline builder's over the whole log."""
    events = sample_stream(seed=2)
    log: list[pa.Table] = [events.head(120).to_arrow(), events.tail(events.height - 120).to_arrow()]
    seen = [0]

    def read_since(position: int) -> tuple[pa.Table, int]:
        stop = seen[0]
        batches = log[position:stop]
        return (pa.concat_tables(batches) if batches else log[0].slice(0, 0)), max(stop, position)

    first, second = make(tmp_path), make(tmp_path)
    assert first.shared and second.shared
    seen[0] = 1
    assert first.catch_up(read_since) == 120
    assert second.catch_up(read_since) == 0  # nothing new: already folded by the first
    seen[0] = 2
    assert second.catch_up(read_since) == events.height - 120
    assert first.catch_up(read_since) == 0
    queries = _queries(_after(events))
    expected = build_features(queries, events, ITEMS).select(FEATURE_NAMES)
    assert first.get_online_features(queries).select(FEATURE_NAMES).equals(expected)
    assert second.get_online_features(queries).select(FEATURE_NAMES).equals(expected)


SHARED_ONLINE_STORE_CHECKS: list[Check] = [check_shared_store_folds_each_event_once]


# -- model registries -----------------------------------------------------------------------------
def sample_manifest(version: str, ndcg: float = 0.1) -> Manifest:
    from feedrec.features.definitions import schema_hash

    return Manifest(
        version=version,
        model="popularity",
        created_at="2024-01-01T00:00:00+00:00",
        data_window={},
        feature_schema=schema_hash(),
        params={},
        metrics={"valid": {"ndcg@10": ndcg}},
        code_version="test",
    )


def _model() -> PopularityRecommender:
    frame = pl.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "timestamp": [T0, T0, T0]},
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    return PopularityRecommender().fit(Interactions.from_frame(frame))


def check_register_list_load(make: Callable[[Path], ModelRegistry], tmp_path: Path) -> None:
    registry = make(tmp_path)
    model = _model()
    for _ in range(2):
        registry.register(model, sample_manifest(registry.next_version()))
    assert [m.version for m in registry.list()] == ["v0001", "v0002"]
    assert registry.production() is None
    _raises(RegistryError, registry.load_model, "no production bundle")
    _raises(RegistryError, lambda: registry.register(model, sample_manifest("v0001")), "exists already")
    _raises(RegistryError, lambda: registry.get("v9"), "no bundle")
    loaded = registry.load_model("v0002")
    assert np.array_equal(loaded.recommend(["u2"], k=2)[0], model.recommend(["u2"], k=2)[0])
    assert registry.model_dir("v0002").exists()


def check_promote_rollback_history(make: Callable[[Path], ModelRegistry], tmp_path: Path) -> None:
    registry = make(tmp_path)
    model = _model()
    for _ in range(3):
        registry.register(model, sample_manifest(registry.next_version()))
    for version in ("v0001", "v0002", "v0003"):
        registry.promote(version)
    registry.promote("v0003")  # already production: no change
    assert registry.rollback().version == "v0002"
    assert registry.rollback(key="r").version == "v0001"
    assert registry.rollback(key="r").version == "v0001"  # a retried request applies once
    _raises(RegistryError, registry.rollback, "nothing to roll back")
    actions = [(h["seq"], h["action"], h["version"]) for h in registry.history()]
    assert actions == [
        (1, "promote", "v0001"),
        (2, "promote", "v0002"),
        (3, "promote", "v0003"),
        (4, "rollback", "v0002"),
        (5, "rollback", "v0001"),
    ]
    assert registry.production().version == "v0001"  # type: ignore[union-attr]


REGISTRY_CHECKS: list[Check] = [check_register_list_load, check_promote_rollback_history]
