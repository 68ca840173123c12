from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from feedrec.config import IngestConfig
from feedrec.data.validation import validate_events

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _raw(rows: list[dict]) -> pa.Table:
    cols = sorted({k for r in rows for k in r})
    table = pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in cols})
    return table.append_column("_row", pa.array(range(1, len(rows) + 1), pa.int64()))


GOOD = {"user_id": "u1", "item_id": "i1", "timestamp": "1700000000", "type": "click"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user_id": None}, "missing_field: user_id"),
        ({"item_id": "  "}, "missing_field: item_id"),
        ({"timestamp": None}, "missing_field: timestamp"),
        ({"timestamp": "yesterday"}, "mistyped_field: timestamp"),
        ({"timestamp": "100"}, "timestamp_out_of_range"),  # 1970
        ({"timestamp": "2099-01-01T00:00:00Z"}, "timestamp_out_of_range"),
        ({"type": "purchase"}, "unknown_event_type: purchase"),
        ({"value": "abc"}, "mistyped_field: value"),
        ({"type": "dwell"}, "missing_field: a dwell event needs a value"),
        ({"type": "dwell", "value": "-3"}, "invalid_value: value -3 < 0 (dwell seconds)"),
        ({"position": "first"}, "mistyped_field: position"),
        ({"position": "-1"}, "invalid_value: position"),
    ],
)
def test_each_rule_quarantines_with_its_reason(change, reason):
    out = validate_events(_raw([GOOD, GOOD | {"event_id": "x"} | change]), IngestConfig(), now=NOW)
    assert out.events.num_rows == 1
    assert out.quarantined.num_rows == 1
    assert reason in out.quarantined.column("reason")[0].as_py()
    assert '"user_id"' in out.quarantined.column("raw")[0].as_py()  # the original row travels along


def test_all_reasons_are_listed():
    out = validate_events(_raw([{"user_id": None, "item_id": None, "timestamp": "x"}]), IngestConfig(), now=NOW)
    reason = out.quarantined.column("reason")[0].as_py()
    assert "user_id" in reason and "item_id" in reason and "timestamp" in reason


def test_duplicate_event_ids_keep_the_first():
    rows = [GOOD | {"event_id": "e1"}, GOOD | {"event_id": "e1", "item_id": "i2"}, GOOD | {"event_id": "e2"}]
    out = validate_events(_raw(rows), IngestConfig(), now=NOW)
    assert out.events.column("event_id").to_pylist() == ["e1", "e2"]
    assert out.events.column("item_id").to_pylist() == ["i1", "i1"]
    assert "duplicate_event_id: e1 first seen at row 1" in out.quarantined.column("reason")[0].as_py()


def test_identical_rows_without_ids_are_duplicates_by_content_hash():
    out = validate_events(_raw([GOOD, GOOD, GOOD | {"item_id": "i2"}]), IngestConfig(), now=NOW)
    assert out.events.num_rows == 2
    assert out.quarantined.column("_row").to_pylist() == [2]
    again = validate_events(_raw([GOOD]), IngestConfig(), now=NOW)
    assert again.events.column("event_id")[0] == out.events.column("event_id")[0]  # stable hash


def test_defaults_and_types():
    rows = [
        {"user_id": "1", "item_id": "2", "timestamp": "881250949", "rating": "3"},
        {"user_id": "1", "item_id": "3", "timestamp": "1997-12-05T10:00:00", "rating": "4.5"},
    ]
    out = validate_events(_raw(rows), IngestConfig(), now=NOW)
    assert out.quarantined.num_rows == 0
    assert out.events.column("type").to_pylist() == ["rating", "rating"]  # a rating column makes ratings
    assert out.events.column("value").to_pylist() == [3.0, 4.5]
    ts = out.events.column("timestamp").to_pylist()
    assert ts[0] == datetime(1997, 12, 4, 15, 55, 49, tzinfo=UTC)  # epoch seconds
    assert ts[1] == datetime(1997, 12, 5, 10, 0, 0, tzinfo=UTC)  # ISO-8601 without a zone is UTC
    bare = validate_events(_raw([{"user_id": "a", "item_id": "b", "timestamp": "1700000000"}]), IngestConfig(), now=NOW)
    assert bare.events.column("type").to_pylist() == ["click"]  # a bare row is an interaction


def test_timestamp_unit_from_config():
    out = validate_events(_raw([GOOD | {"timestamp": "1700000000123"}]), IngestConfig(timestamp_unit="ms"), now=NOW)
    assert out.events.column("timestamp")[0].as_py() == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reason", "field"),
    [
        ("missing_field: user_id", "user_id"),
        ("mistyped_field: timestamp yesterday is neither a number nor an ISO-8601 time", "timestamp"),
        ("timestamp_out_of_range: 9999-01-01 is in the future", "timestamp"),
        ("unknown_event_type: purchase", "type"),
        ("missing_field: a dwell event needs a value", "value"),
        ("invalid_value: value -3 < 0 (dwell seconds)", "value"),
        ("invalid_value: position -1 < 0", "position"),
        ("duplicate_event_id: e1 first seen at row 1", "event_id"),
    ],
)
def test_each_reason_names_its_field(reason, field):
    from feedrec.data.validation import reason_field

    assert reason_field(reason) == field


def test_api_records_share_the_file_rules():
    """The API's typed events go through the same query as file rows: same reasons."""
    from datetime import UTC, datetime

    from feedrec.data.validation import records_to_raw

    records = [
        {
            "event_id": "a",
            "user_id": "u",
            "item_id": "i",
            "timestamp": datetime(2024, 1, 1, tzinfo=UTC),
            "type": "click",
        },
        {"event_id": "b", "user_id": "u", "item_id": "i", "timestamp": datetime(1, 1, 1), "type": "click"},
        {"event_id": "c", "user_id": "\ud800", "item_id": "i", "timestamp": datetime(2024, 1, 1), "type": "click"},
        {"event_id": "d", "user_id": "u", "item_id": "i", "timestamp": datetime(2024, 1, 1), "type": "dwell"},
    ]
    raw, unwritable = records_to_raw(records)
    assert unwritable == {2: "mistyped_field: user_id is not valid UTF-8 text"}
    out = validate_events(raw, IngestConfig())
    assert out.events.column("event_id").to_pylist() == ["a"]
    reasons = dict(
        zip(out.quarantined.column("_row").to_pylist(), out.quarantined.column("reason").to_pylist(), strict=True)
    )
    assert (
        reasons[1].startswith("timestamp_out_of_range") and reasons[3] == "missing_field: a dwell event needs a value"
    )


def test_a_request_sized_batch_validates_as_a_files_does(monkeypatch):
    """API batches run on a long-lived connection without DuckDB's optimizer (planning cost more
    than running for a few rows); the rows out and every reason must be the file path's."""
    from feedrec.data import validation

    rows = [GOOD | {"event_id": f"e{n % 7}", "item_id": f"i{n}", "position": str(n % 4)} for n in range(20)]
    rows += [GOOD | {"timestamp": "yesterday"}, GOOD | {"type": "dwell", "value": "-1"}, {"user_id": "u"}, GOOD]
    small = validate_events(_raw(rows), IngestConfig(), now=NOW)
    monkeypatch.setattr(validation, "_SMALL_BATCH", 0)  # every batch takes a fresh, optimizing connection
    large = validate_events(_raw(rows), IngestConfig(), now=NOW)
    assert small.events.equals(large.events) and small.quarantined.equals(large.quarantined)
    assert small.events.num_rows == 8 and small.quarantined.num_rows == len(rows) - 8
