"""Chronological splits, and a guard that fails loudly when a split would let training see the future.

``global``: one time cut; everything at or after it is test. Events that share the cut's timestamp
all go to test, so train ends strictly before test begins.
``user``: per user, sorted by time (ties keep the input order), the last ``ratio`` of that user's
interactions (at least one) are test. Other users' later events may be in train: that is the
benchmark protocol; the guard checks the per-user order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from feedrec.config import SplitConfig

Protocol = Literal["user", "global"]


class LeakageError(AssertionError):
    """A split put an interaction in train that happens after one in test."""


@dataclass(frozen=True)
class Split:
    """The one split every stage takes: test carved from the whole, validation from the rest the
    same way. ``rest`` (train + validation) is what models are refit on before they meet the test
    part; ``cuts`` describes the split for a manifest."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    rest: pl.DataFrame
    protocol: Protocol = "user"
    cuts: dict[str, object] = field(default_factory=dict)


def _with_order(df: pl.DataFrame) -> pl.DataFrame:
    return df if "_order" in df.columns else df.with_row_index("_order")


def chronological_split(df: pl.DataFrame, *, protocol: Protocol, ratio: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``df`` (``user_id``, ``timestamp``, ...) into (before, after) with ``ratio`` in after."""
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    df = _with_order(df)
    if protocol == "global":
        ordered = df.sort(["timestamp", "_order"])
        n_after = max(1, round(ratio * ordered.height))
        cut = ordered["timestamp"][ordered.height - n_after]
        before, after = df.filter(pl.col("timestamp") < cut), df.filter(pl.col("timestamp") >= cut)
    elif protocol == "user":
        ranked = df.sort(["user_id", "timestamp", "_order"]).with_columns(
            pl.int_range(pl.len()).over("user_id").alias("_rank"),
            pl.len().over("user_id").alias("_n"),
        )
        n_last = pl.max_horizontal(pl.lit(1), (pl.col("_n") * ratio).round(0).cast(pl.Int64))
        is_after = pl.col("_rank") >= pl.col("_n") - n_last
        before = ranked.filter(~is_after).drop("_rank", "_n").sort("_order")
        after = ranked.filter(is_after).drop("_rank", "_n").sort("_order")
    else:
        raise ValueError(f"unknown split protocol {protocol!r}; use 'user' or 'global'")
    assert_no_leakage(before, after, protocol=protocol)
    return before, after


def assert_no_leakage(train: pl.DataFrame, test: pl.DataFrame, *, protocol: Protocol) -> None:
    """Raise ``LeakageError`` if any training interaction comes after a test one it could inform."""
    if train.height == 0 or test.height == 0:
        return
    if protocol == "global":
        last_train, first_test = train["timestamp"].max(), test["timestamp"].min()
        if last_train >= first_test:  # type: ignore[operator]
            raise LeakageError(
                f"global split leaks the future: train ends at {last_train!s}, test starts at {first_test!s}"
            )
        return
    last = train.group_by("user_id").agg(pl.col("timestamp").max().alias("last_train"))
    first = test.group_by("user_id").agg(pl.col("timestamp").min().alias("first_test"))
    bad = last.join(first, on="user_id").filter(pl.col("last_train") > pl.col("first_test"))
    if bad.height:
        row = bad.row(0, named=True)
        raise LeakageError(
            f"user split leaks the future for {bad.height} user(s), e.g. {row['user_id']!s}: "
            f"train has {row['last_train']} after test's {row['first_test']}"
        )


def train_valid_test(df: pl.DataFrame, cfg: SplitConfig) -> Split:
    """Carve test from the whole, then validation from the rest, the same way (the only place
    that does), and record where the cuts fell."""
    rest, test = chronological_split(df, protocol=cfg.protocol, ratio=cfg.test_ratio)
    train, valid = chronological_split(rest, protocol=cfg.protocol, ratio=cfg.valid_ratio)
    return Split(
        train=train, valid=valid, test=test, rest=rest, protocol=cfg.protocol, cuts=_cuts(train, valid, test, cfg)
    )


def _cuts(train: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame, cfg: SplitConfig) -> dict[str, object]:
    def span(part: pl.DataFrame) -> dict[str, object]:
        if part.height == 0:
            return {"rows": 0}
        return {"rows": part.height, "first": str(part["timestamp"].min()), "last": str(part["timestamp"].max())}

    return {
        "protocol": cfg.protocol,
        "test_ratio": cfg.test_ratio,
        "valid_ratio": cfg.valid_ratio,
        "train": span(train),
        "valid": span(valid),
        "test": span(test),
    }
