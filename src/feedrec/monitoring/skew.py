"""Training-serving skew: the features the server ranked with against the offline builder's
point-in-time recomputation for the same (user, item, moment, surface, slot).

A sample of the window's logged requests is replayed through ``feedrec.features.offline.
build_features`` over the event store (events strictly before each request, as training sees
them). A feature's ``mismatch_rate`` is the share of rows whose served value differs from the
recomputed one by more than its tolerance; an online counter that stopped updating, a lagging
tail or a bug in either path shows up there.

What is no bug is allowed for: an event whose time precedes a request but that reached the server
after it (another user's click in flight, or a fold that runs behind under load) is in the
recomputation and was not in the served value. Each logged row says how far the server's store
had got (``as_of``: the latest event time it had folded in); the events up to ``grace_s`` before
that (10 simulated minutes) must all have been in it. So a served value passes when it lies
between the recomputation from the events before ``min(moment, as_of) - grace_s`` and the one from
every event before the moment (each window ending at the moment), give or take one event plus
``rtol`` (5 %) for a counter and ``rtol`` for anything else. A row without ``as_of`` (a log
written before it was recorded) is bounded at ``moment - grace_s``. Under the live loop's
compressed time (a simulated hour per wall second or so: a few milliseconds in flight are many
simulated seconds) exact equality failed on up to 43 % of the rows of the 7-day creator counters
with nothing broken.

How far behind the store was is reported beside (``lag_s``: the request's moment minus ``as_of``,
per sampled request): a fold that stopped shows there, not as skew (every value it served is
what its events give), and raises the monitor's ``freshness`` alert (``monitor.max_lag_s``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from feedrec.data.store import EventStore
from feedrec.features.definitions import COUNTERS, FEATURE_NAMES, WINDOWS
from feedrec.features.offline import build_features

COUNTER_NAMES = {c.name for c in COUNTERS}
GRACE_EXEMPT = {"hour", "weekday", "position", "item_age_days"}  # the request's context


def _relevant_events(store: EventStore, queries: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """The events any sampled query's features count: its user's, its item's, and those of the
    items of its item's creator (within the longest window)."""
    first, last = queries["timestamp"].min(), queries["timestamp"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    start = first - timedelta(seconds=max(WINDOWS.values()) + 1)
    end = last + timedelta(microseconds=1)
    columns = ["user_id", "item_id", "type", "timestamp"]
    events = pl.DataFrame(pl.from_arrow(store.scan(columns=columns, start=start, end=end)))
    users = queries["user_id"].unique()
    wanted = queries["item_id"].unique()
    if items.height and "creator_id" in items.columns:
        creators = items.filter(pl.col("item_id").is_in(wanted.implode()))["creator_id"].drop_nulls().unique()
        wanted = pl.concat([wanted, items.filter(pl.col("creator_id").is_in(creators.implode()))["item_id"]]).unique()
    return events.filter(pl.col("user_id").is_in(users.implode()) | pl.col("item_id").is_in(wanted.implode()))


def skew(
    rows: pl.DataFrame,
    store: EventStore,
    items: pa.Table,
    *,
    requests: int = 200,
    threshold: float = 0.05,
    rtol: float = 0.05,
    grace_s: float = 600.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare ``requests`` sampled logged requests' served features with their recomputation:
    a served value must lie between the recomputations from every event before the request's
    moment and from those before ``grace_s`` ahead of what the store had folded (events of that
    last stretch may still have been in flight), give or take the tolerance."""
    ids = rows["request_id"].unique().sort()
    if ids.len() > requests:
        ids = ids.sample(requests, seed=seed)
    sample = rows.filter(pl.col("request_id").is_in(ids.implode()))
    names = [n for n in FEATURE_NAMES if n != "surface" and n in sample.columns]
    queries = sample.select(
        "user_id",
        "item_id",
        pl.col("time").alias("timestamp"),
        "surface",
        pl.col("slot").cast(pl.Int32).alias("position"),
    )
    as_of = sample["as_of"] if "as_of" in sample.columns else pl.Series("as_of", [None] * sample.height)
    folded = pl.DataFrame(
        {"request_id": sample["request_id"], "time": sample["time"], "as_of": as_of.cast(pl.Datetime("us", "UTC"))}
    )
    cutoff = folded.select(
        pl.min_horizontal("time", pl.col("as_of").fill_null(pl.col("time"))) - timedelta(seconds=grace_s)
    ).to_series()
    item_table = pl.DataFrame(pl.from_arrow(items))
    events = _relevant_events(store, queries, item_table)
    known = item_table if item_table.height else None
    offline = build_features(queries, events, known)
    before = build_features(queries, events, known, known_before=cutoff)
    out: dict[str, Any] = {}
    for name in names:
        served = sample[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        want = offline[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        if name in GRACE_EXEMPT:  # fixed by the request's moment, not by events: no grace
            low = high = want
        else:
            was = before[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
            low, high = np.fmin(want, was), np.fmax(want, was)
        both_nan = np.isnan(served) & np.isnan(want)
        tolerance = (1.0 if name in COUNTER_NAMES else 1e-6) + rtol * np.abs(high)
        differ = ~both_nan & ~((served >= low - tolerance) & (served <= high + tolerance))
        diff = np.abs(np.nan_to_num(served - want))
        rate = float(differ.mean()) if differ.size else 0.0
        out[name] = {
            "mismatch_rate": round(rate, 6),
            "mean_abs_diff": round(float(diff.mean()), 6) if diff.size else 0.0,
            "served_mean": float(np.nanmean(served)) if np.isfinite(served).any() else None,
            "offline_mean": float(np.nanmean(want)) if np.isfinite(want).any() else None,
            "flagged": rate > threshold,
        }
    return {
        "requests": int(ids.len()),
        "rows": sample.height,
        "threshold": threshold,
        "flagged": sorted(n for n, s in out.items() if s["flagged"]),
        "lag_s": _lag(folded),
        "features": out,
    }


def _lag(folded: pl.DataFrame) -> dict[str, Any]:
    """How far the store was behind each sampled request's moment (seconds, 0 when ahead), over
    the requests whose rows say (``as_of``)."""
    per_request = folded.drop_nulls("as_of").unique("request_id")
    seconds = ((per_request["time"] - per_request["as_of"]).dt.total_microseconds() / 1e6).clip(0).to_numpy()
    if seconds.size == 0:
        return {"requests": 0, "p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(seconds, [50, 99])
    return {"requests": int(seconds.size), "p50": round(float(p50), 3), "p99": round(float(p99), 3),
            "max": round(float(seconds.max()), 3)}  # fmt: skip
