"""Stopping traffic: sessions still waiting for a slot when ``stop()`` turns true never start, so
a stop behind a slow server takes only the sessions in flight, and those that ran are a prefix."""

from __future__ import annotations

import asyncio
import time

from feedrec.loop.traffic import Session, TrafficConfig, _drive


class SlowRun:
    """Stands in for the world's run against a server that takes ``seconds`` per session."""

    def __init__(self, seconds: float) -> None:
        self.cfg = TrafficConfig(url="http://127.0.0.1:9", seconds=10, concurrency=2)
        self.seconds = seconds
        self.ran: list[int] = []

    async def session(self, client: object, s: Session) -> None:
        self.ran.append(s.index)
        await asyncio.sleep(self.seconds)


def test_a_stop_drops_the_backlog_and_reports_the_prefix_that_ran():
    run = SlowRun(0.05)
    sessions = [Session(index=i, offset=0.0, t=i, user=i, surface="home") for i in range(200)]  # all due at once
    began = time.perf_counter()
    started = asyncio.run(_drive(run, sessions, None, lambda: time.perf_counter() > began + 0.3))  # type: ignore[arg-type]
    took = time.perf_counter() - began
    assert run.ran == list(range(started))  # a prefix, in order
    assert 4 <= started < 40  # about 0.3 s / 0.05 s x 2 slots, not the 200 queued
    assert took < 2.0, took  # the backlog's 5 s (200 x 0.05 / 2) was never run


def test_without_a_stop_every_session_runs():
    run = SlowRun(0.0)
    sessions = [Session(index=i, offset=0.0, t=i, user=i, surface="home") for i in range(30)]
    assert asyncio.run(_drive(run, sessions, None)) == 30  # type: ignore[arg-type]
    assert sorted(run.ran) == list(range(30))
