"""Turn queries (user, item, time, surface, position) into feature rows, given a way to count events.

``CountFn(keys, ts, window_us) -> counts`` answers "how many events of key ``keys[i]`` happened in
``[ts[i] - window_us, ts[i])``". The offline builder answers it with a vectorized search over the
whole log, the online store with per-key sorted lists; everything else is this one function, so
the two sides cannot disagree about what a feature means.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from feedrec.features.definitions import AFFINITIES, COUNTERS, RATIOS, WINDOWS, ratio_value

CountFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
US = 1_000_000

QUERY_COLUMNS = ("user_id", "item_id", "timestamp", "surface", "position")


def assemble(queries: pl.DataFrame, items: pl.DataFrame, count: CountFn) -> pl.DataFrame:
    """One row per query, in query order: the query columns then every feature in FEATURE_NAMES."""
    q = queries.select(*QUERY_COLUMNS).join(items, on="item_id", how="left", maintain_order="left")
    ts = q["timestamp"].dt.epoch("us").to_numpy()
    users = q["user_id"].cast(pl.Utf8).to_numpy().astype(str)
    item_ids = q["item_id"].cast(pl.Utf8).to_numpy().astype(str)
    creators = q["creator_id"].fill_null("").to_numpy().astype(str)
    entity_ids = {
        "user": users,
        "item": item_ids,
        "creator": creators,
        "user_item": np.char.add(np.char.add(users, "|"), item_ids),
    }

    out: dict[str, np.ndarray] = {}
    for c in COUNTERS:
        keys = np.char.add(np.char.add(f"{c.entity}|", entity_ids[c.entity]), f"|{c.event_type}")
        values = count(keys, ts, WINDOWS[c.window] * US).astype(np.float64)
        if c.entity == "creator":
            values[creators == ""] = np.nan  # no creator known: missing, not zero
        out[c.name] = values
    for r in RATIOS:
        out[r.name] = ratio_value(out[r.numerator], out[r.denominator], r)

    for a in AFFINITIES:
        window = WINDOWS[a.window] * US
        engaged = count(np.char.add("engaged|", users), ts, window).astype(np.float64)
        if a.kind == "creator":
            hits = count(np.char.add(np.char.add(np.char.add("aff_creator|", users), "|"), creators), ts, window)
            value = np.where(creators == "", np.nan, hits / np.maximum(engaged, 1.0))
        else:
            # The largest share of the user's engaged events that went to one of the item's topics.
            exploded = q.select(pl.int_range(pl.len()).alias("row"), "user_id", "topics").explode("topics")
            exploded = exploded.filter(pl.col("topics").is_not_null())
            rows = exploded["row"].to_numpy()
            keys = np.char.add(
                np.char.add(np.char.add("aff_topic|", exploded["user_id"].cast(pl.Utf8).to_numpy().astype(str)), "|"),
                exploded["topics"].to_numpy().astype(str),
            )
            per_topic = count(keys, ts[rows], window).astype(np.float64)
            best = np.full(len(q), np.nan)
            if rows.size:
                best_hits = np.zeros(len(q))
                np.maximum.at(best_hits, rows, per_topic)
                has = np.zeros(len(q), bool)
                has[rows] = True
                best[has] = best_hits[has] / np.maximum(engaged[has], 1.0)
            value = best
        out[a.name] = value

    created = q["created_at"].dt.epoch("us").to_numpy().astype(np.float64) if "created_at" in q.columns else None
    age = np.full(len(q), np.nan) if created is None else np.maximum(ts - created, 0) / (86_400 * US)
    when = q["timestamp"]
    return pl.DataFrame(
        {
            **{c: q[c] for c in QUERY_COLUMNS},
            **out,
            "hour": when.dt.hour().cast(pl.Float64),
            "weekday": when.dt.weekday().cast(pl.Float64),
            "surface": q["surface"],
            "position": q["position"].cast(pl.Float64),
            "item_age_days": age,
        }
    )
