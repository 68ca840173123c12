"""Batch mode's precomputed feeds in Redis: loaded once from a ``feedrec recommend-batch`` folder,
read by every server process (instead of each process holding every user's feed in memory).

A load is keyed by the folder's content (its part names, sizes and modification times), so a
second process, or a restart, finds it loaded and skips it; a new batch run is a new key set, and
the previous one is left to expire. One key per user: ``ns pre:<load>:<user>`` holds the feed as
JSON (items and scores, best first).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from feedrec.redis.client import connect

#: A loaded batch lives this long (wall seconds) after its load: a new run replaces it well before.
TTL_S = 7 * 86_400
_PIPELINE_USERS = 2_000


class RedisPrecomputedFeeds:
    def __init__(self, folder: Path, *, url: str, namespace: str = "feedrec:") -> None:
        parts = sorted(Path(folder).glob("part-*.parquet"))
        if not parts:
            raise FileNotFoundError(f"no precomputed parts in {folder}: run `feedrec recommend-batch` first")
        signature = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in parts)
        self.load_id = hashlib.sha256(signature.encode()).hexdigest()[:12]
        self.client = connect(url)
        self.prefix = f"{namespace}pre:{self.load_id}:"
        self._done = f"{namespace}pre:{self.load_id}"
        with self.client.lock(f"{namespace}pre-load", timeout=600, blocking_timeout=600):
            version: bytes | None = self.client.get(self._done)  # type: ignore[assignment]
            self.version = version.decode() if version is not None else self._load(parts)

    def _load(self, parts: list[Path]) -> str:
        frame = pl.concat([pl.read_parquet(p) for p in parts]).sort(["user_id", "rank"])
        version = str(frame["model_version"][0]) if frame.height else ""
        feeds = frame.group_by("user_id", maintain_order=True).agg("item_id", "score")
        pipe = self.client.pipeline(transaction=False)
        for n, (user, items, scores) in enumerate(feeds.iter_rows(), start=1):
            pipe.set(f"{self.prefix}{user}", json.dumps([items, [round(s, 6) for s in scores]]), ex=TTL_S)
            if n % _PIPELINE_USERS == 0:
                pipe.execute()
        pipe.set(self._done, version, ex=TTL_S)  # last: a load that died midway is redone
        pipe.execute()
        return version

    def get(self, user_id: str, k: int) -> tuple[list[str], list[float]] | None:
        found = self.client.get(f"{self.prefix}{user_id}")
        if found is None:
            return None
        items, scores = json.loads(found)
        return items[:k], scores[:k]
