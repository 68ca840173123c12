"""One way to reach Redis: short timeouts and no hidden retries on the request path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Seconds a command may take before it fails: a feed must fall back long before a client gives up.
SOCKET_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 0.5
#: Seconds a fold's transaction may take: folding a backlog (a fresh Redis, or one that was away)
#: is one MULTI/EXEC that Redis may need seconds for; it runs off the request path.
FOLD_TIMEOUT_S = 60.0


def connect(url: str, *, timeout_s: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    """A client (a thread-safe connection pool) for ``url`` (``redis://host:port/db``). A failed
    command raises at once (no retry with back-off): the caller decides, a feed by falling back,
    an event fold by leaving the events to the next catch-up."""
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
    except ValueError as exc:
        raise ValueError(f"FEEDREC_REDIS_URL {url!r} is not a Redis URL (redis://host:port/db): {exc}") from None


def namespace_for(workspace: Path | str) -> str:
    """The key prefix of a workspace's state in a shared Redis: two workspaces never collide."""
    digest = hashlib.sha256(str(Path(workspace).resolve()).encode()).hexdigest()[:12]
    return f"feedrec:{digest}:"
