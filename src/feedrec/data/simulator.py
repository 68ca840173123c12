"""A feed simulator: the embedded default data source, with a known ground truth.

The world: items belong to topics and creators and are published over time; users have topic
tastes (some shift at a random time, all shift at ``drift_day`` when set), an activity rate and a
latent taste vector. Each feed session shows a slate of items chosen by a "production" policy
(topic from the user's taste or the global mix, item by popularity, often among recent ones).
What the user does is drawn from a known model:

    relevance r = sigmoid(b0 + b1*log(taste[topic]*T) + b2*quality + <p_u, q_i> - b3*log1p(age_days))
    P(click)    = examine(position) * r,   examine(pos) = (1 + pos) ** -0.7
    like, share and dwell seconds follow a click, increasing in r; hide follows an irrelevant skip.

New users and items arrive after the start (cold start). Everything is vectorized over chunks of
sessions; ten million events take well under two minutes on two cores (benchmarks/bench_simulator.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from feedrec.config import SimulatorConfig
from feedrec.schemas import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA

DAY = 86_400
LATENT_DIM = 8
_TYPES = ("impression", "click", "like", "share", "hide", "dwell")
_AGE_GROUPS = ("18-24", "25-34", "35-49", "50+")
_COUNTRIES = ("us", "gb", "de", "fr", "in", "br")
# Feed sessions peak in the evening (UTC hours).
_DIURNAL = np.array([2, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 4, 5, 5, 4, 4, 5, 6, 7, 8, 8, 7, 5, 3], dtype=np.float64)

Progress = Callable[[int, int], None]  # (done, total) sessions


@dataclass
class SimulatedFeed:
    events: pa.Table  # EVENT_SCHEMA, sorted by time
    items: pa.Table  # ITEM_SCHEMA
    users: pa.Table  # USER_SCHEMA
    truth: pa.Table  # per impression: event_id, p_click (the ground-truth probability), relevance

    def write(self, out: Path) -> dict[str, str]:
        import pyarrow.parquet as pq

        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("events", "items", "users", "truth"):
            path = out / f"{name}.parquet"
            pq.write_table(getattr(self, name), path, compression="zstd")
            paths[name] = str(path)
        return paths


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _row_categorical(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw one category per entry of ``rows`` from the row-wise cumulative distributions ``cum``."""
    r = rng.random(rows.size)[:, None]
    return np.minimum((cum[rows] < r).sum(axis=1), cum.shape[1] - 1)


def simulate(cfg: SimulatorConfig, progress: Progress | None = None) -> SimulatedFeed:
    rng = np.random.default_rng(cfg.seed)
    T, n_items, n_users = cfg.n_topics, cfg.n_items, cfg.n_users
    t0 = int(datetime.combine(cfg.start, datetime.min.time(), tzinfo=UTC).timestamp())
    t_end = t0 + cfg.days * DAY
    drift_t = None if cfg.drift_day is None else t0 + cfg.drift_day * DAY

    # --- topics, creators, items --------------------------------------------------------------
    topic_mix = rng.dirichlet(np.full(T, 1.5))  # global topic popularity before a drift
    topic_mix_drift = rng.dirichlet(np.full(T, 1.5))
    n_creators = max(1, round(n_items / cfg.items_per_creator))
    creator_topic = rng.choice(T, size=n_creators, p=topic_mix)
    creator_quality = rng.normal(0.0, 0.5, n_creators)
    creator_weight = rng.pareto(1.5, n_creators) + 1.0  # a few prolific creators
    item_creator = rng.choice(n_creators, size=n_items, p=creator_weight / creator_weight.sum())
    item_topic = np.where(
        rng.random(n_items) < 0.8, creator_topic[item_creator], rng.choice(T, size=n_items, p=topic_mix)
    )
    item_quality = creator_quality[item_creator] + rng.normal(0.0, 0.7, n_items)
    item_vec = rng.normal(0.0, 1.0, (n_items, LATENT_DIM)) / np.sqrt(LATENT_DIM)
    is_new_item = rng.random(n_items) < cfg.new_item_fraction
    item_created = np.where(
        is_new_item,
        t0 + rng.random(n_items) * (t_end - t0),
        t0 - rng.random(n_items) * 60 * DAY,  # the back catalogue: published in the 60 days before
    ).astype(np.int64)

    # --- users --------------------------------------------------------------------------------
    age_group = rng.integers(0, len(_AGE_GROUPS), n_users)
    country = rng.integers(0, len(_COUNTRIES), n_users)
    group_mix = rng.dirichlet(np.full(T, 1.0), len(_AGE_GROUPS)) * 0.5 + topic_mix * 0.5
    group_mix_drift = rng.dirichlet(np.full(T, 1.0), len(_AGE_GROUPS)) * 0.5 + topic_mix_drift * 0.5
    concentration = 0.3 * T
    taste = np.vstack([rng.dirichlet(concentration * group_mix[g]) for g in age_group])
    taste_late = np.vstack(
        [rng.dirichlet(concentration * (group_mix_drift if drift_t else group_mix)[g]) for g in age_group]
    )
    user_vec = rng.normal(0.0, 1.0, (n_users, LATENT_DIM)) / np.sqrt(LATENT_DIM)
    if drift_t is not None:
        shift_t = np.full(n_users, drift_t, np.int64)
    else:
        shifts = rng.random(n_users) < cfg.taste_shift_fraction
        when = (t0 + rng.random(n_users) * (t_end - t0)).astype(np.int64)
        shift_t = np.where(shifts, when, np.iinfo(np.int64).max)
    is_new_user = rng.random(n_users) < cfg.new_user_fraction
    user_joined = np.where(
        is_new_user, t0 + rng.random(n_users) * 0.9 * (t_end - t0), t0 - rng.random(n_users) * 365 * DAY
    ).astype(np.int64)
    active_from = np.maximum(user_joined, t0)
    activity = rng.lognormal(0.0, 0.8, n_users)
    activity *= cfg.sessions_per_user_day / activity.mean()

    # --- sessions -----------------------------------------------------------------------------
    active_days = (t_end - active_from) / DAY
    n_sessions = rng.poisson(activity * active_days)
    s_user = np.repeat(np.arange(n_users), n_sessions)
    day = np.floor(active_from[s_user] / DAY + rng.random(s_user.size) * active_days[s_user])
    hour = rng.choice(24, size=s_user.size, p=_DIURNAL / _DIURNAL.sum())
    s_time = (day * DAY + hour * 3600 + rng.random(s_user.size) * 3600).astype(np.int64)
    s_time = np.clip(s_time, active_from[s_user], t_end - 3600)
    order = np.argsort(s_time, kind="stable")
    s_user, s_time = s_user[order], s_time[order]
    s_surface = rng.integers(0, len(cfg.surfaces), s_user.size)

    # Items sorted by (topic, publish time) so that "published in topic k before t" is a range.
    base = int(item_created.min())
    key = item_topic.astype(np.int64) * (1 << 40) + (item_created - base)
    by_key = np.argsort(key, kind="stable")
    sorted_key = key[by_key]
    show_weight = np.exp(0.8 * item_quality[by_key])
    cum_w = np.concatenate([[0.0], np.cumsum(show_weight)])
    topic_start = np.searchsorted(sorted_key, np.arange(T, dtype=np.int64) * (1 << 40))
    by_time = np.argsort(item_created, kind="stable")
    created_sorted = item_created[by_time]

    cum_taste = np.cumsum(taste, axis=1)
    cum_taste_late = np.cumsum(taste_late, axis=1)
    cum_mix = np.cumsum(np.vstack([topic_mix, topic_mix_drift]), axis=1)

    chunks: list[dict[str, np.ndarray]] = []
    n_sess = s_user.size
    chunk = max(1, 400_000 // cfg.slate_size)
    L = cfg.slate_size
    for lo in range(0, n_sess, chunk):
        hi = min(n_sess, lo + chunk)
        su = np.repeat(s_user[lo:hi], L)
        st = np.repeat(s_time[lo:hi], L)
        sid = np.repeat(np.arange(lo, hi), L)
        pos = np.tile(np.arange(L), hi - lo)
        late = st >= shift_t[su]
        # Topic: from the user's current taste (60%) or the global mix (40%).
        from_taste = rng.random(su.size) < 0.6
        topic = np.empty(su.size, np.int64)
        idx = np.flatnonzero(from_taste & ~late)
        topic[idx] = _row_categorical(rng, cum_taste, su[idx])
        idx = np.flatnonzero(from_taste & late)
        topic[idx] = _row_categorical(rng, cum_taste_late, su[idx])
        idx = np.flatnonzero(~from_taste)
        drifted = (st[idx] >= drift_t).astype(np.int64) if drift_t is not None else np.zeros(idx.size, np.int64)
        topic[idx] = _row_categorical(rng, cum_mix, drifted)
        # Item: popularity-weighted among those published in that topic, half the time the last 7 days.
        t_rel = st - base
        lo_all = topic_start[topic]
        hi_all = np.searchsorted(sorted_key, topic * (1 << 40) + t_rel, side="right")
        lo_recent = np.searchsorted(sorted_key, topic * (1 << 40) + t_rel - 7 * DAY, side="left")
        use_recent = (rng.random(su.size) < 0.5) & (hi_all > lo_recent)
        lo_pick = np.where(use_recent, lo_recent, lo_all)
        target = cum_w[lo_pick] + rng.random(su.size) * (cum_w[hi_all] - cum_w[lo_pick])
        pick = np.clip(np.searchsorted(cum_w, target, side="right") - 1, lo_pick, np.maximum(hi_all - 1, lo_pick))
        item = by_key[np.minimum(pick, n_items - 1)]
        # A topic with nothing published yet: any published item instead.
        empty = hi_all <= lo_all
        if empty.any():
            n_pub = np.maximum(np.searchsorted(created_sorted, st[empty], side="right"), 1)
            item[empty] = by_time[(rng.random(int(empty.sum())) * n_pub).astype(np.int64)]
        # A feed does not show an item twice in one slate.
        keep = _first_in_session(sid, item)
        su, st, sid, pos, item, late = su[keep], st[keep], sid[keep], pos[keep], item[keep], late[keep]
        # Ground-truth engagement.
        taste_now = np.where(late, taste_late[su, item_topic[item]], taste[su, item_topic[item]])
        age_days = np.maximum(st - item_created[item], 0) / DAY
        logit = (
            -0.8
            + 0.9 * np.log(np.maximum(taste_now * T, 1e-3))
            + 0.6 * item_quality[item]
            + 3.0 * np.einsum("ij,ij->i", user_vec[su], item_vec[item])
            - 0.5 * np.log1p(age_days)
        )
        rel = _sigmoid(logit)
        p_click = (1.0 + pos) ** -0.7 * rel
        click = rng.random(su.size) < p_click
        like = click & (rng.random(su.size) < _sigmoid(logit - 1.0))
        share = click & (rng.random(su.size) < 0.15 * _sigmoid(logit - 1.0))
        hide = ~click & (rng.random(su.size) < 0.04 * (1.0 + pos) ** -0.7 * (1.0 - rel) ** 2)
        dwell = np.where(click, rng.lognormal(np.log(15.0) + 1.5 * rel, 0.7), 0.0)
        t_imp = st + pos * 2
        t_click = t_imp + 2 + rng.integers(0, 8, su.size)
        chunks.append(
            {
                "user": su,
                "item": item,
                "sid": sid,
                "pos": pos,
                "t_imp": t_imp,
                "t_click": t_click,
                "click": click,
                "like": like,
                "share": share,
                "hide": hide,
                "dwell": dwell,
                "p_click": p_click,
                "rel": rel,
                "surface": s_surface[sid],
            }
        )
        if progress:
            progress(hi, n_sess)

    cols = {k: np.concatenate([c[k] for c in chunks]) if chunks else np.empty(0) for k in chunks[0]} if chunks else {}
    events, truth = _assemble_events(cols, cfg.surfaces) if cols else (EVENT_SCHEMA.empty_table(), None)
    items = _items_table(item_created, item_topic, item_creator)
    users = _users_table(user_joined, age_group, country)
    truth_table = truth if truth is not None else pa.table({"event_id": pa.array([], pa.string())})
    return SimulatedFeed(events=events, items=items, users=users, truth=truth_table)


def _first_in_session(sid: np.ndarray, item: np.ndarray) -> np.ndarray:
    key = sid.astype(np.int64) * (1 << 32) + item
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(key.size, bool)
    keep[first] = True
    return keep


def _assemble_events(c: dict[str, np.ndarray], surfaces: list[str]) -> tuple[pa.Table, pa.Table]:
    n = c["user"].size
    parts = []

    def part(mask: np.ndarray, etype: int, ts: np.ndarray, value: np.ndarray | None) -> None:
        idx = np.flatnonzero(mask)
        parts.append(
            pl.DataFrame(
                {
                    "row": idx,
                    "type_code": np.full(idx.size, etype, np.int8),
                    "ts": ts[idx],
                    "value": np.full(idx.size, np.nan) if value is None else value[idx],
                }
            )
        )

    click_ts = c["t_click"]
    dwell_s = np.round(c["dwell"], 1)
    part(np.ones(n, bool), 0, c["t_imp"], None)
    part(c["click"], 1, click_ts, None)
    part(c["like"], 2, click_ts + np.maximum(dwell_s * 0.5, 1).astype(np.int64), None)
    part(c["share"], 3, click_ts + np.maximum(dwell_s * 0.7, 1).astype(np.int64), None)
    part(c["hide"], 4, c["t_imp"] + 1, None)
    part(c["click"], 5, click_ts + np.maximum(dwell_s, 1).astype(np.int64), dwell_s)
    df = pl.concat(parts).sort(["ts", "row", "type_code"])
    row = df["row"].to_numpy()
    frame = pl.DataFrame(
        {
            "n": np.arange(df.height),
            "user": c["user"][row],
            "item": c["item"][row],
            "ts": df["ts"].to_numpy() * 1_000_000,
            "type_code": df["type_code"],
            "value": df["value"],
            "pos": c["pos"][row].astype(np.int32),
            "surface_code": c["surface"][row],
            "sid": c["sid"][row],
        }
    ).with_columns(
        pl.format("e{}", pl.col("n")).alias("event_id"),
        pl.format("u{}", pl.col("user")).alias("user_id"),
        pl.format("i{}", pl.col("item")).alias("item_id"),
        pl.col("ts").cast(pl.Datetime("us", "UTC")).alias("timestamp"),
        pl.col("type_code").replace_strict(dict(enumerate(_TYPES)), return_dtype=pl.Utf8).alias("type"),
        pl.when(pl.col("value").is_nan()).then(None).otherwise(pl.col("value")).alias("value"),
        pl.col("pos").alias("position"),
        pl.col("surface_code").replace_strict(dict(enumerate(surfaces)), return_dtype=pl.Utf8).alias("surface"),
        pl.format("r{}", pl.col("sid")).alias("request_id"),
    )
    events = frame.select(EVENT_SCHEMA.names).to_arrow().cast(EVENT_SCHEMA)
    imp = frame.filter(pl.col("type_code") == 0)
    imp_rows = df.filter(pl.col("type_code") == 0)["row"].to_numpy()
    truth = pa.table(
        {
            "event_id": imp["event_id"].to_arrow(),
            "p_click": pa.array(c["p_click"][imp_rows]),
            "relevance": pa.array(c["rel"][imp_rows]),
        }
    )
    return events, truth


def _items_table(created: np.ndarray, topic: np.ndarray, creator: np.ndarray) -> pa.Table:
    n = created.size
    df = pl.DataFrame({"n": np.arange(n), "created": created * 1_000_000, "topic": topic, "creator": creator})
    df = df.with_columns(
        pl.format("i{}", pl.col("n")).alias("item_id"),
        pl.col("created").cast(pl.Datetime("us", "UTC")).alias("created_at"),
        pl.concat_list(pl.format("t{}", pl.col("topic"))).alias("topics"),
        pl.format("c{}", pl.col("creator")).alias("creator_id"),
        pl.lit(None, pl.Utf8).alias("text"),
    )
    return df.select(ITEM_SCHEMA.names).to_arrow().cast(ITEM_SCHEMA)


def _users_table(joined: np.ndarray, age_group: np.ndarray, country: np.ndarray) -> pa.Table:
    attrs = [
        json.dumps({"age_group": _AGE_GROUPS[a], "country": _COUNTRIES[c]})
        for a, c in zip(age_group.tolist(), country.tolist(), strict=True)
    ]
    df = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(joined.size)],
            "created_at": pl.Series(joined * 1_000_000).cast(pl.Datetime("us", "UTC")),
            "attributes": attrs,
        }
    )
    return df.to_arrow().cast(USER_SCHEMA)
