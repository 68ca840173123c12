"""Event ingestion for the server: one writer thread, a bounded queue, group commit, compaction.

``POST /v1/events`` hands its batch to ``EventWriter.submit`` and waits for the answer. The writer
validates each batch with the rules file ingestion uses (``feedrec.data.validation``), appends
every valid batch waiting in the queue as one store append (one part file, one fsync: group
commit), folds what was new into the online features, and only then answers each request with its
own stored and duplicate counts. A batch is stored whole or not at all.

Why one thread: the feed's latency is what the server is for, so ingestion may use one core's
worth of time at most, at a lower OS priority than the request threads (``nice``); a full queue is
answered at once (``Busy``: 503 with Retry-After) instead of piling up work; and a batch that waited
past its deadline (its client has likely given up) is answered ``Expired`` and never stored, so
nothing is applied long after its client stopped waiting. A compactor thread, at a lower priority
still, keeps the store's part count bounded.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from feedrec.config import IngestConfig
from feedrec.data.store import AppendResult, EventStore
from feedrec.data.validation import reason_field, records_to_raw, validate_events
from feedrec.logs import get_logger

log = get_logger("ingest")


class Busy(RuntimeError):
    """The ingestion queue is full: retry after a moment."""


class Expired(RuntimeError):
    """The batch waited past its deadline and was not stored."""


@dataclass(frozen=True)
class Rejected:
    """Why events of a batch break the rules: (index in the batch, field, reason)."""

    errors: list[tuple[int, str, str]]


@dataclass
class Outcome:
    stored: int
    duplicates: int
    # Seconds spent on the batch by stage: queued (waiting for the writer), validate, append (the
    # group's store append and fsync), fold (the group's online features); /metrics shows them.
    stages: dict[str, float] = field(default_factory=dict, compare=False)


@dataclass
class _Job:
    records: list[dict[str, object]]
    deadline: float  # time.monotonic()
    future: Future[Outcome | Rejected]
    queued_at: float = field(default_factory=time.monotonic)


def _stored_rows(table: pa.Table, result: AppendResult) -> pa.Table:
    """The rows of ``table`` the append stored, for a store that does not return them: two batches
    of a group may carry the same new id, and the store kept the first, so must the online
    features, or the event would count twice."""
    fresh = table.filter(pc.is_in(table.column("event_id"), pa.array(result.stored_ids, pa.string())))
    return pl.DataFrame(pl.from_arrow(fresh)).unique("event_id", keep="first", maintain_order=True).to_arrow()


def lower_priority(increment: int) -> None:
    """Lower the calling thread's OS scheduling priority (Linux threads are tasks with their own nice)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: the normal priority
        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class EventWriter:
    def __init__(
        self,
        store: EventStore,
        on_stored: Callable[[pa.Table, AppendResult], None],
        *,
        rules: IngestConfig | None = None,
        max_pending: int = 256,
        max_group_events: int = 20_000,
        compact_every: int = 16,
        now: Callable[[], datetime] | None = None,
        append_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.store = store
        # Held from an append until ``on_stored`` returns: a reader that takes it too (the service's
        # tail) never sees an append whose owner has not yet marked it as its own.
        self.append_lock = append_lock if append_lock is not None else nullcontext()
        self.rules = rules or IngestConfig()
        self.on_stored = on_stored
        self.max_group_events = max_group_events
        self.compact_every = compact_every
        self._now = now
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_pending)
        self._stop = threading.Event()
        self._compact_wanted = threading.Event()
        self._appends = 0
        self._writer = threading.Thread(target=self._run, name="feedrec-writer", daemon=True)
        self._compactor = threading.Thread(target=self._compact_loop, name="feedrec-compactor", daemon=True)
        self._writer.start()
        self._compactor.start()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the batches already queued, then stop."""
        self._stop.set()
        self._compact_wanted.set()
        self._writer.join(timeout)
        self._compactor.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, records: list[dict[str, object]], *, timeout_s: float = 5.0) -> Future[Outcome | Rejected]:
        """Queue a batch; raises ``Busy`` when the queue is full. The future's result is an
        ``Outcome`` or ``Rejected``; its exception ``Expired`` when not stored in time."""
        if self._stop.is_set():
            raise Busy("the server is shutting down")
        job = _Job(records, time.monotonic() + timeout_s, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self._queue.maxsize} event batches are waiting to be stored") from None
        return job.future

    # -- the writer ------------------------------------------------------------------------------
    def _run(self) -> None:
        lower_priority(5)
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                jobs = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            rows = len(jobs[0].records)
            while rows < self.max_group_events:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                rows += len(jobs[-1].records)
            try:
                self._write(jobs)
            except Exception as exc:  # the store failed: nothing of this group was acknowledged
                log.exception("storing events failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _write(self, jobs: list[_Job]) -> None:
        now = time.monotonic()
        accepted: list[tuple[_Job, pa.Table, dict[str, float]]] = []
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue
            if now > job.deadline:
                job.future.set_exception(Expired("the batch waited too long to be stored and was not; send it again"))
                continue
            started = time.monotonic()
            checked = self._validate(job.records)
            if isinstance(checked, Rejected):
                job.future.set_result(checked)
            else:
                accepted.append((job, checked, {"queued": now - job.queued_at, "validate": time.monotonic() - started}))
        if not accepted:
            return
        table = pa.concat_tables([t for _, t, _ in accepted])
        with self.append_lock:
            started = time.monotonic()
            result = self.store.append(table)
            appended = time.monotonic()
            if result.stored:
                fresh = result.written if result.written is not None else _stored_rows(table, result)
                try:
                    self.on_stored(fresh, result)
                except Exception:  # the events are durable; the online features catch up from the store
                    log.exception("folding stored events into the online features failed")
            group = {"append": appended - started, "fold": time.monotonic() - appended}
        new = set(result.stored_ids)
        for job, batch, stages in accepted:  # the first batch of the group to carry a new id stored it
            mine = [i for i in batch.column("event_id").to_pylist() if i in new]
            new.difference_update(mine)
            job.future.set_result(Outcome(len(mine), len(job.records) - len(mine), stages | group))
        self._appends += 1
        if self._appends % self.compact_every == 0:
            self._compact_wanted.set()

    def _validate(self, records: list[dict[str, object]]) -> pa.Table | Rejected:
        raw, unwritable = records_to_raw(records)
        checked = validate_events(raw, self.rules, now=self._now() if self._now else None)
        errors = [(n, reason_field(r), r) for n, r in unwritable.items()]
        for row in checked.quarantined.select(["_row", "reason"]).to_pylist():
            if str(row["reason"]).startswith("duplicate_event_id"):
                continue  # an id repeated inside the batch is stored once; the repeat counts as a duplicate
            for reason in str(row["reason"]).split("; "):
                errors.append((int(row["_row"]), reason_field(reason), reason))
        if errors:
            return Rejected(sorted(errors))
        return checked.events

    # -- the compactor ---------------------------------------------------------------------------
    def _compact_loop(self) -> None:
        lower_priority(10)
        while not self._stop.is_set():
            self._compact_wanted.wait()
            self._compact_wanted.clear()
            if self._stop.is_set():
                return
            try:
                while not self._stop.is_set() and self.store.compact():
                    pass
            except Exception:  # a failed merge changes nothing (the parts stay live); retried later
                log.exception("compacting the event store failed")
