from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedrec.config import SplitConfig
from feedrec.offline.split import LeakageError, assert_no_leakage, chronological_split, train_valid_test

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def frame(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "timestamp": [T0 + timedelta(seconds=t) for _, _, t in rows],
        }
    )


events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(list("vwxyz")), st.integers(0, 50)),
    min_size=2,
    max_size=80,
)


@settings(max_examples=100, deadline=None)
@given(rows=events, ratio=st.floats(0.05, 0.5))
def test_global_split_train_never_sees_the_future(rows, ratio):
    df = frame(rows)
    train, test = chronological_split(df, protocol="global", ratio=ratio)
    assert train.height + test.height == df.height
    if train.height and test.height:
        assert train["timestamp"].max() < test["timestamp"].min()


@settings(max_examples=100, deadline=None)
@given(rows=events, ratio=st.floats(0.05, 0.5))
def test_user_split_no_training_row_after_its_users_test_rows(rows, ratio):
    df = frame(rows)
    train, test = chronological_split(df, protocol="user", ratio=ratio)
    assert train.height + test.height == df.height
    for user in test["user_id"].unique():
        tr = train.filter(pl.col("user_id") == user)["timestamp"]
        te = test.filter(pl.col("user_id") == user)["timestamp"]
        assert te.len() >= 1
        if tr.len():
            assert tr.max() <= te.min()


def test_user_split_takes_the_last_tenth_at_least_one():
    rows = [("a", f"i{t}", t) for t in range(20)] + [("b", "x", 5)]
    _train, test = chronological_split(frame(rows), protocol="user", ratio=0.1)
    assert sorted(test.filter(pl.col("user_id") == "a")["item_id"].to_list()) == ["i18", "i19"]
    assert test.filter(pl.col("user_id") == "b").height == 1  # a single interaction goes to test


def test_global_split_keeps_ties_at_the_cut_together():
    rows = [("a", "x", 1), ("b", "y", 2), ("c", "z", 2), ("d", "w", 2)]
    train, test = chronological_split(frame(rows), protocol="global", ratio=0.25)
    assert train.height == 1 and test.height == 3


def test_guard_fails_loudly_on_a_leak():
    train = frame([("a", "x", 10)])
    test = frame([("a", "y", 5)])
    with pytest.raises(LeakageError, match="user split leaks the future"):
        assert_no_leakage(train, test, protocol="user")
    with pytest.raises(LeakageError, match="global split leaks"):
        assert_no_leakage(train, frame([("b", "y", 10)]), protocol="global")
    assert_no_leakage(train, frame([("b", "y", 5)]), protocol="user")  # another user's past is fine


def test_train_valid_test_carves_validation_the_same_way():
    rows = [(u, f"i{t}", t) for u in "abc" for t in range(30)]
    split = train_valid_test(frame(rows), SplitConfig(protocol="global", test_ratio=0.2, valid_ratio=0.25))
    assert split.train["timestamp"].max() < split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() < split.test["timestamp"].min()
    assert split.train.height + split.valid.height + split.test.height == 90


def test_bad_ratio_and_protocol():
    with pytest.raises(ValueError, match="ratio"):
        chronological_split(frame([("a", "x", 1)]), protocol="user", ratio=1.5)
    with pytest.raises(ValueError, match="protocol"):
        chronological_split(frame([("a", "x", 1)]), protocol="weekly", ratio=0.1)  # type: ignore[arg-type]
