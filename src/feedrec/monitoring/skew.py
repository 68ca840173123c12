"""Training-serving skew: the features the server ranked with against the offline builder's
point-in-time recomputation for the same (user, item, moment, surface, slot).

A sample of the window's logged requests is replayed through ``feedrec.features.offline.
build_features`` over the event store (events strictly before each request, as training sees
them). A feature's ``mismatch_rate`` is the share of rows whose served value differs from the
recomputed one by more than its tolerance; an online counter that stopped updating, a lagging
tail or a bug in either path shows up there.

What is no bug is allowed for: an event whose time precedes a request but that reached the server
after it (another user's click in flight) is in the recomputation and was not in the served
value. So a served value passes when it lies between the recomputations at the request's moment
and ``grace_s`` before it (10 simulated minutes), give or take one event plus ``rtol`` (5 %) for a
counter and ``rtol`` for anything else. Under the live loop's compressed time (a simulated hour
per wall second or so: a few milliseconds in flight are many simulated seconds) exact equality
failed on up to 43 % of the rows of the 7-day creator counters with nothing broken.
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
    a served value must lie between the recomputations at the request's moment and ``grace_s``
    before it (events of that last stretch may still have been in flight), give or take the
    tolerance."""
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
    item_table = pl.DataFrame(pl.from_arrow(items))
    events = _relevant_events(store, queries, item_table)
    known = item_table if item_table.height else None
    offline = build_features(queries, events, known)
    earlier = queries.with_columns(pl.col("timestamp") - timedelta(seconds=grace_s))
    before = build_features(earlier, events, known) if grace_s > 0 else offline
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
        "features": out,
    }
