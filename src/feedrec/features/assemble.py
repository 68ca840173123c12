"""Turn queries (user, item, time, surface, position) into feature rows, given a way to count events.

``CountFn(keys, ts, window_us) -> counts`` answers "how many events of key ``keys[i]`` happened in
``[ts[i] - window_us, ts[i])``". The offline builder answers it with a vectorized search over the
whole log, the online store with per-key sorted lists; everything else is ``compute``, one
function on arrays, so the two sides cannot disagree about what a feature means. ``assemble`` is
its frame form (the item attributes joined in with polars); the online store builds the same
``Queries`` from its own item index, without a frame, on the request path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from feedrec.features.definitions import AFFINITIES, COUNTERS, FEATURE_NAMES, RATIOS, WINDOWS, Counter, ratio_value

CountFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
WindowsFn = Callable[[np.ndarray, np.ndarray, list[int]], np.ndarray]
US = 1_000_000
DAY_US = 86_400 * US

QUERY_COLUMNS = ("user_id", "item_id", "timestamp", "surface", "position")
#: The columns of a feature frame, in order (``surface`` and ``position`` are query columns and features).
FRAME_COLUMNS = (*QUERY_COLUMNS, *(name for name in FEATURE_NAMES if name not in QUERY_COLUMNS))


@dataclass
class Queries:
    """Queries as arrays, with the attributes of their items (``""``/NaN where unknown)."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    ts: np.ndarray  # int64, epoch microseconds
    position: np.ndarray  # float64 (NaN: none)
    creators: np.ndarray  # str, "" when unknown
    created: np.ndarray  # float64 epoch microseconds, NaN when unknown
    topic_row: np.ndarray  # int64: the query each (query, topic) pair belongs to
    topics: np.ndarray  # str: the topic of that pair


def compute(q: Queries, count: CountFn, count_windows: WindowsFn | None = None) -> dict[str, np.ndarray]:
    """Every feature but ``surface`` (a column of the queries), as float64 arrays, by name.
    ``count_windows(keys, ts, windows) -> (n, len(windows))`` counts several windows of the same
    keys at once (default: ``count`` once per window)."""
    n = q.users.size
    if count_windows is None:

        def count_windows(keys: np.ndarray, ts: np.ndarray, windows: list[int]) -> np.ndarray:
            return np.column_stack([count(keys, ts, w) for w in windows])

    ts = q.ts
    # One user at one moment (a request): a user's counters are counted once, not once per candidate.
    single = n > 1 and bool((q.users == q.users[0]).all()) and bool((ts == ts[0]).all())

    def per_user(keys: np.ndarray, window: int) -> np.ndarray:
        if single:
            return np.repeat(count(keys[:1], ts[:1], window), n)
        return count(keys, ts, window)

    pair = np.char.add(np.char.add(q.users, "|"), q.items)
    entity_ids = {"user": q.users, "item": q.items, "creator": q.creators, "user_item": pair}
    out: dict[str, np.ndarray] = {}
    groups: dict[tuple[str, str], list[Counter]] = {}
    for c in COUNTERS:  # the counters of one key, every window at once (one lookup per key online)
        groups.setdefault((c.entity, c.event_type), []).append(c)
    for (entity, event_type), counters in groups.items():
        keys = np.char.add(np.char.add(f"{entity}|", entity_ids[entity]), f"|{event_type}")
        windows = [WINDOWS[c.window] * US for c in counters]
        if entity == "user" and single:
            values = np.repeat(count_windows(keys[:1], ts[:1], windows), n, axis=0)
        else:
            values = count_windows(keys, ts, windows)
        values = values.astype(np.float64)
        if entity == "creator":
            values[q.creators == ""] = np.nan  # no creator known: missing, not zero
        for j, c in enumerate(counters):
            out[c.name] = values[:, j]
    for r in RATIOS:
        out[r.name] = ratio_value(out[r.numerator], out[r.denominator], r)

    for a in AFFINITIES:
        window = WINDOWS[a.window] * US
        if a.kind == "topic_exposure":  # a share of the user's impressions, which a counter has counted
            total, prefix = out[f"user_impressions_{a.window}"], "imp_topic|"
        else:  # a share of the user's engaged events
            total, prefix = per_user(np.char.add("engaged|", q.users), window).astype(np.float64), "aff_topic|"
        if a.kind == "creator":
            keys = np.char.add(np.char.add(np.char.add("aff_creator|", q.users), "|"), q.creators)
            hits = count(keys, ts, window)
            value = np.where(q.creators == "", np.nan, hits / np.maximum(total, 1.0))
        else:
            # The largest share that went to one of the item's topics.
            rows = q.topic_row
            keys = np.char.add(np.char.add(np.char.add(prefix, q.users[rows]), "|"), q.topics)
            per_topic = count(keys, ts[rows], window).astype(np.float64)
            value = np.full(n, np.nan)
            if rows.size:
                best_hits = np.zeros(n)
                np.maximum.at(best_hits, rows, per_topic)
                has = np.zeros(n, bool)
                has[rows] = True
                value[has] = best_hits[has] / np.maximum(total[has], 1.0)
        out[a.name] = value

    out["hour"] = ((ts // (3600 * US)) % 24).astype(np.float64)
    out["weekday"] = (((ts // DAY_US) + 3) % 7 + 1).astype(np.float64)  # ISO: Monday 1 (1970-01-01 was a Thursday)
    out["position"] = q.position.astype(np.float64)
    out["item_age_days"] = np.maximum(ts - q.created, 0) / DAY_US
    return out


Call = tuple[np.ndarray, np.ndarray, list[int]]  # one count_windows call: keys (str), ts (int64 us), windows


class _Counting:
    """A ``count_windows`` (``windows``) and the ``count`` that ``compute`` derives from it."""

    def count(self, keys: np.ndarray, ts: np.ndarray, window: int) -> np.ndarray:
        return self.windows(keys, ts, [window])[:, 0]

    def windows(self, keys: np.ndarray, ts: np.ndarray, windows: list[int]) -> np.ndarray:
        raise NotImplementedError


class Recorder(_Counting):
    """A ``count_windows`` that remembers what it is asked and answers zeros. ``compute``'s calls
    do not depend on their answers, so a backend that counts far away (Spark, Redis) can run it
    once to learn every count it needs, answer them all at once, and run it again on ``Replay``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def windows(self, keys: np.ndarray, ts: np.ndarray, windows: list[int]) -> np.ndarray:
        self.calls.append((np.asarray(keys).astype(str), np.asarray(ts, np.int64), list(windows)))
        return np.zeros((len(keys), len(windows)), np.int64)


class Replay(_Counting):
    """A ``count_windows`` that answers each call, in order, from counts computed elsewhere (by
    call number; a call missing from ``answers`` had no rows)."""

    def __init__(self, answers: dict[int, np.ndarray]) -> None:
        self.answers, self.n = answers, 0

    def windows(self, keys: np.ndarray, ts: np.ndarray, windows: list[int]) -> np.ndarray:
        found = self.answers.get(self.n)
        self.n += 1
        return np.zeros((len(keys), len(windows)), np.int64) if found is None else found


def compute_batched(q: Queries, count_calls: Callable[[list[Call]], list[np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute`` with every count asked at once: ``count_calls(calls)`` answers the recorded
    calls (one (n, len(windows)) array each), as one round trip to a remote store can."""
    recorder = Recorder()
    compute(q, recorder.count, recorder.windows)
    replay = Replay(dict(enumerate(count_calls(recorder.calls))))
    return compute(q, replay.count, replay.windows)


def queries_of(queries: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, Queries]:
    """The query columns with their items' attributes joined in (query order), and as ``Queries``."""
    q = queries.select(*QUERY_COLUMNS).join(items, on="item_id", how="left", maintain_order="left")
    exploded = q.select(pl.int_range(pl.len()).alias("row"), "topics").explode("topics")
    exploded = exploded.filter(pl.col("topics").is_not_null())
    arrays = Queries(
        users=q["user_id"].cast(pl.Utf8).to_numpy().astype(str),
        items=q["item_id"].cast(pl.Utf8).to_numpy().astype(str),
        ts=q["timestamp"].dt.epoch("us").to_numpy().astype(np.int64),
        position=q["position"].cast(pl.Float64).to_numpy(),
        creators=q["creator_id"].fill_null("").to_numpy().astype(str),
        created=q["created_at"].dt.epoch("us").cast(pl.Float64).to_numpy(),
        topic_row=exploded["row"].to_numpy().astype(np.int64),
        topics=exploded["topics"].to_numpy().astype(str),
    )
    return q, arrays


def feature_frame(q: pl.DataFrame, features: dict[str, np.ndarray]) -> pl.DataFrame:
    """One row per query: the query columns then every feature in FEATURE_NAMES (their order)."""
    features = dict(features)
    hour, weekday, position, age = (features.pop(name) for name in ("hour", "weekday", "position", "item_age_days"))
    return pl.DataFrame(
        {
            **{c: q[c] for c in QUERY_COLUMNS},
            **features,
            "hour": hour,
            "weekday": weekday,
            "surface": q["surface"],
            "position": position,
            "item_age_days": age,
        }
    )


def assemble(queries: pl.DataFrame, items: pl.DataFrame, count: CountFn) -> pl.DataFrame:
    """One row per query, in query order: the query columns then every feature in FEATURE_NAMES."""
    q, arrays = queries_of(queries, items)
    return feature_frame(q, compute(arrays, count))
