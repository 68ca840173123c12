"""The server's ingestion writer (back-pressure, deadlines, whole batches) and admin ordering."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedrec.data.store import LocalEventStore
from feedrec.online.admin import AdminQueue, Late
from feedrec.online.ingest import Busy, EventWriter, Expired, Outcome, Rejected
from feedrec.registry import LocalRegistry
from tests.integration.servers import _manifest


def _records(prefix: str, n: int = 3, **fields: object) -> list[dict[str, object]]:
    base = {"user_id": "u1", "item_id": "i1", "timestamp": datetime(2024, 1, 5, tzinfo=UTC), "type": "click"}
    return [base | {"event_id": f"{prefix}{i}"} | fields for i in range(n)]


class _SlowStore(LocalEventStore):
    """Appends wait until released, so tests can fill the writer's queue."""

    gate = threading.Event()

    def append(self, events):  # type: ignore[no-untyped-def]
        self.gate.wait(10)
        return super().append(events)


def test_a_full_queue_refuses_at_once_and_stores_nothing_of_the_refused(tmp_path: Path):
    store = _SlowStore(tmp_path)
    store.gate.set()
    writer = EventWriter(store, lambda table, result: None, max_pending=2)
    try:
        assert writer.submit(_records("w")).result(10) == Outcome(3, 0)  # warm: the first validation is slow
        store.gate.clear()
        first = writer.submit(_records("a"))
        time.sleep(0.3)  # the writer has taken the first batch and waits in append
        queued = [writer.submit(_records("b")), writer.submit(_records("c"))]
        with pytest.raises(Busy, match="waiting to be stored"):
            writer.submit(_records("d"))
        time.sleep(0.2)
        store.gate.set()
        assert first.result(10) == Outcome(3, 0)
        assert [f.result(10) for f in queued] == [Outcome(3, 0), Outcome(3, 0)]
        # Where each batch's time went: the first's in the writer (held at the append), the others' queued.
        assert sum(first.result().stages.values()) >= 0.45 and first.result().stages["append"] > 0
        assert all(f.result().stages["queued"] >= 0.15 for f in queued)
        assert set(first.result().stages) == {"queued", "validate", "append", "fold"}
    finally:
        writer.close()
    ids = set(store.scan(columns=["event_id"]).column("event_id").to_pylist())
    assert {"a0", "b0", "c2"} <= ids and not any(i.startswith("d") for i in ids)


def test_a_batch_past_its_deadline_is_refused_and_never_stored(tmp_path: Path):
    store = _SlowStore(tmp_path)
    store.gate.clear()
    writer = EventWriter(store, lambda table, result: None)
    try:
        blocker = writer.submit(_records("a"))
        time.sleep(0.3)
        late = writer.submit(_records("late"), timeout_s=0.1)
        time.sleep(0.3)
        store.gate.set()
        blocker.result(10)
        with pytest.raises(Expired):
            late.result(10)
    finally:
        writer.close()
    assert not any(i.startswith("late") for i in store.scan(columns=["event_id"]).column("event_id").to_pylist())


def test_a_batch_with_one_bad_event_is_refused_whole_with_the_field_named(tmp_path: Path):
    store = LocalEventStore(tmp_path)
    writer = EventWriter(store, lambda table, result: None)
    try:
        records = _records("ok", 2) + _records("bad", 1, timestamp=datetime(2099, 1, 1, tzinfo=UTC))
        outcome = writer.submit(records).result(10)
        assert isinstance(outcome, Rejected)
        assert [(n, field) for n, field, _ in outcome.errors] == [(2, "timestamp")]
        assert "in the future" in outcome.errors[0][2]
        assert writer.submit(_records("ok", 2)).result(10) == Outcome(2, 0)
        assert writer.submit(_records("ok", 2)).result(10) == Outcome(0, 2)
    finally:
        writer.close()
    assert store.count() == 2


def test_group_commit_credits_each_new_event_to_the_first_batch_that_sent_it(tmp_path: Path):
    store = _SlowStore(tmp_path)
    store.gate.clear()
    writer = EventWriter(store, lambda table, result: None)
    try:
        blocker = writer.submit(_records("z", 1))
        time.sleep(0.3)
        one, two = writer.submit(_records("x", 3)), writer.submit(_records("x", 4))  # one group
        store.gate.set()
        blocker.result(10)
        assert (one.result(10), two.result(10)) == (Outcome(3, 0), Outcome(1, 3))
    finally:
        writer.close()
    assert store.count() == 5


def test_admin_actions_run_in_order_and_a_late_one_is_never_applied():
    queue = AdminQueue(timeout_s=0.2)
    applied: list[str] = []

    async def scenario() -> None:
        now = time.monotonic()
        slow = asyncio.ensure_future(queue.run(now, lambda: (time.sleep(0.5), applied.append("slow"))))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(queue.run(time.monotonic(), lambda: applied.append("late")))
        with pytest.raises(Late, match="not applied"):
            await late
        await slow
        assert await queue.run(time.monotonic(), lambda: applied.append("next") or "done") == "done"

    asyncio.run(scenario())
    queue.close()
    assert applied == ["slow", "next"]


def test_registry_history_is_ordered_and_idempotency_keys_apply_once(tmp_path: Path):
    from feedrec.models.retrieval.popularity import PopularityRecommender
    from tests.conftest import make_interactions

    registry = LocalRegistry(tmp_path)
    model = PopularityRecommender().fit(make_interactions())
    for v in ("v0001", "v0002"):
        registry.register(model, _manifest(v, "popularity"))
    registry.promote("v0001")
    registry.promote("v0002", key="k1")
    registry.promote("v0002", key="k1")  # a retry
    registry.promote("v0002")  # already production: nothing changes
    assert registry.rollback(key="k2").version == "v0001"
    assert registry.rollback(key="k2").version == "v0001"  # the retry of the same rollback
    with pytest.raises(Exception, match="used for a rollback"):
        registry.promote("v0002", key="k2")
    history = registry.history()
    assert [(h["seq"], h["action"], h["version"]) for h in history] == [
        (1, "promote", "v0001"),
        (2, "promote", "v0002"),
        (3, "rollback", "v0001"),
    ]
    assert registry.production().version == "v0001"  # type: ignore[union-attr]


class _SlowStoreWithoutRows(_SlowStore):
    """A store that does not return the rows it wrote (``AppendResult.written``), as Spark's."""

    def append(self, events):  # type: ignore[no-untyped-def]
        return dataclasses.replace(super().append(events), since=None, written=None)


@pytest.mark.parametrize("store_class", [_SlowStore, _SlowStoreWithoutRows])
def test_an_id_sent_by_two_batches_of_one_group_reaches_the_features_once(tmp_path: Path, store_class: type):
    store = store_class(tmp_path)
    store.gate.clear()
    folded: list[list[str]] = []
    writer = EventWriter(store, lambda table, result: folded.append(table.column("event_id").to_pylist()))
    try:
        blocker = writer.submit(_records("z", 1))
        time.sleep(0.3)
        one, two = writer.submit(_records("x", 2)), writer.submit(_records("x", 3))  # x0, x1 in both
        store.gate.set()
        blocker.result(10), one.result(10), two.result(10)
    finally:
        writer.close()
    assert folded == [["z0"], ["x0", "x1", "x2"]]


def test_a_background_loop_survives_failures_and_logs_a_repeated_one_once_then_reminds_then_its_end():
    import logging

    from feedrec.online.service import log as service_log
    from feedrec.online.service import run_every

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    service_log.addHandler(handler)
    level = service_log.level
    service_log.setLevel(logging.INFO)
    calls = []
    stop = threading.Event()

    def step() -> None:
        calls.append(1)
        if len(calls) <= 30:
            raise ConnectionError("Redis away")  # the same failure, 30 times in a row
        if len(calls) >= 35:
            stop.set()

    try:
        run_every(step, 0.001, stop, remind_s=0.01)
    finally:
        service_log.removeHandler(handler)
        service_log.setLevel(level)
    assert len(calls) == 35  # it went on calling through the failures
    levels = [r.levelname for r in records]
    assert levels[0] == "ERROR" and records[0].exc_info is not None  # the first with its traceback
    assert levels.count("ERROR") == 1 and 1 <= levels.count("WARNING") < 29  # then reminders, not one each
    assert levels[-1] == "INFO" and "after 30 failed tries" in records[-1].getMessage()
