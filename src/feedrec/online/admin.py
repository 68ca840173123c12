"""Admin actions (reload, promote, rollback): one at a time, in arrival order, never late.

Each action runs on one dedicated thread, so two actions of a worker take effect in the order
they arrived, and a burst of feeds or events cannot delay one behind them in the shared pool. An
action that has not started within ``timeout_s`` of its request's arrival is refused (``Late``: the
API answers 503 and changes nothing), so a request whose client gave up is never applied later, out
of order with the ones sent after it. Across workers the registry's file lock orders the changes,
and its history records the order in which they took effect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Late(RuntimeError):
    """The action could not start before its deadline and was not applied."""


class AdminQueue:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedrec-admin")

    async def run(self, arrived: float, action: Callable[[], T]) -> T:
        """Run ``action`` after the ones queued before it, if it can start by ``arrived + timeout_s``."""
        deadline = arrived + self.timeout_s

        def guarded() -> T:
            late = time.monotonic() - deadline
            if late > 0:
                raise Late(
                    f"not applied: it waited {self.timeout_s + late:.1f} s to start (limit {self.timeout_s:g} s)"
                )
            return action()

        return await asyncio.wrap_future(self._pool.submit(guarded))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
