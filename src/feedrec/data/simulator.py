"""A feed simulator: the embedded default data source, with a known ground truth.

``simulate(cfg)`` draws a world (``feedrec.data.world``: users, items, creators, tastes and the
ground-truth engagement model) and logs ``cfg.days`` of feed sessions under a "production" policy:
the events, the items and users known by the end of the log, and the ground truth of every
impression. ``SimulatedFeed.write`` also saves the world under ``DIR/world/`` so that live traffic
(``feedrec traffic``) can continue it. Everything is vectorized over chunks of sessions; ten million
events take well under two minutes on two cores (benchmarks/bench_simulator.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from feedrec.config import SimulatorConfig
from feedrec.data.world import AGE_GROUPS, COUNTRIES, Progress, World
from feedrec.schemas import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA

_TYPES = ("impression", "click", "like", "share", "hide", "dwell")


@dataclass
class SimulatedFeed:
    events: pa.Table  # EVENT_SCHEMA, sorted by time
    items: pa.Table  # ITEM_SCHEMA
    users: pa.Table  # USER_SCHEMA
    truth: pa.Table  # per impression: event_id, p_click (the ground-truth probability), relevance
    world: World  # at the end of the log: what live traffic continues

    def write(self, out: Path) -> dict[str, str]:
        """The four tables as Parquet, and the world under ``out/world``."""
        import pyarrow.parquet as pq

        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("events", "items", "users", "truth"):
            path = out / f"{name}.parquet"
            pq.write_table(getattr(self, name), path, compression="zstd")
            paths[name] = str(path)
        paths["world"] = str(self.world.save(out / "world"))
        return paths


def simulate(cfg: SimulatorConfig, progress: Progress | None = None) -> SimulatedFeed:
    world = World.draw(cfg)
    cols = world.log(progress)
    events, truth = _assemble_events(cols, cfg.surfaces) if cols else (EVENT_SCHEMA.empty_table(), None)
    items = items_table(world, np.flatnonzero(world.item_created < world.t_end))
    logged_users = world.user_joined < world.t_end
    users = _users_table(
        world.user_joined[logged_users], world.user_age[logged_users], world.user_country[logged_users]
    )
    truth_table = truth if truth is not None else pa.table({"event_id": pa.array([], pa.string())})
    return SimulatedFeed(events=events, items=items, users=users, truth=truth_table, world=world)


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


def items_table(world: World, indices: np.ndarray) -> pa.Table:
    """The world's items at ``indices`` as an items table (``i<n>`` ids)."""
    df = pl.DataFrame(
        {
            "n": indices,
            "created": world.item_created[indices] * 1_000_000,
            "topic": world.item_topic[indices],
            "creator": world.item_creator[indices],
        }
    )
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
        json.dumps({"age_group": AGE_GROUPS[a], "country": COUNTRIES[c]})
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
