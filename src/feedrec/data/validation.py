"""Validate raw event rows: type them, give defaults, and say why a row is refused.

One DuckDB query does the work column-wise, so ten million rows validate in seconds. A row breaks a
rule when a required field is missing or mistyped, its event type is unknown, its timestamp is out
of range, its value or position is not usable, or its event_id repeats an earlier row of the same
batch. Refused rows come back with the original row (as JSON) and every reason, as
``"<kind>: <detail>"`` joined by ``"; "``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from feedrec.config import IngestConfig
from feedrec.schemas import EVENT_FIELDS, EVENT_SCHEMA, EventType

REASON_KINDS = (
    "malformed_row",
    "missing_field",
    "mistyped_field",
    "unknown_event_type",
    "timestamp_out_of_range",
    "invalid_value",
    "duplicate_event_id",
)


@dataclass
class Validated:
    events: pa.Table  # EVENT_SCHEMA
    quarantined: pa.Table  # _row, reason, raw (JSON of the original row)


def _text(col: str, present: set[str]) -> str:
    return f"nullif(trim(CAST(s.\"{col}\" AS VARCHAR)), '')" if col in present else "CAST(NULL AS VARCHAR)"


def validate_events(raw: pa.Table, cfg: IngestConfig, *, now: datetime | None = None) -> Validated:
    """Split ``raw`` (canonical column names, any types, plus ``_row``) into good events and refused rows."""
    now = now or datetime.now(UTC)
    present = set(raw.column_names)
    min_ts = datetime.combine(cfg.min_timestamp, datetime.min.time(), tzinfo=UTC)
    max_ts = now + timedelta(days=cfg.max_future_days)
    unit_div = {"s": 1, "ms": 1_000, "us": 1_000_000}[cfg.timestamp_unit]
    has_rating = "rating" in present
    # A rating column becomes the value, and rows without a type are ratings then.
    value_expr = (
        f"coalesce({_text('value', present)}, {_text('rating', present)})" if has_rating else _text("value", present)
    )
    default_type = EventType.RATING.value if has_rating else cfg.default_type.value
    known_types = ", ".join(f"'{t.value}'" for t in EventType)
    raw_columns = [c for c in raw.column_names if c != "_row"]
    raw_json = "to_json(struct_pack(" + ", ".join(f'"{c}" := s."{c}"' for c in raw_columns) + "))"

    query = f"""
    WITH parsed AS (
        SELECT
            s._row AS _row,
            {raw_json} AS raw,
            {_text("event_id", present)} AS event_id_raw,
            {_text("user_id", present)} AS user_id,
            {_text("item_id", present)} AS item_id,
            {_text("timestamp", present)} AS ts_raw,
            coalesce(lower({_text("type", present)}), '{default_type}') AS type,
            {value_expr} AS value_raw,
            {_text("position", present)} AS position_raw,
            {_text("surface", present)} AS surface,
            {_text("request_id", present)} AS request_id
        FROM raw s
    ), typed AS (
        SELECT *,
            CASE WHEN try_cast(ts_raw AS DOUBLE) IS NOT NULL
                 THEN to_timestamp(try_cast(ts_raw AS DOUBLE) / {unit_div})
                 ELSE try_cast(ts_raw AS TIMESTAMPTZ) END AS ts,
            try_cast(value_raw AS DOUBLE) AS value,
            try_cast(position_raw AS INTEGER) AS position
        FROM parsed
    ), checked AS (
        SELECT *,
            coalesce(event_id_raw, md5(concat_ws(chr(31), user_id, item_id,
                CAST(epoch_us(ts) AS VARCHAR), type, CAST(value AS VARCHAR), CAST(position AS VARCHAR),
                surface, request_id))) AS event_id,
            nullif(concat_ws('; ',
                CASE WHEN user_id IS NULL THEN 'missing_field: user_id' END,
                CASE WHEN item_id IS NULL THEN 'missing_field: item_id' END,
                CASE WHEN ts_raw IS NULL THEN 'missing_field: timestamp'
                     WHEN ts IS NULL THEN 'mistyped_field: timestamp ' || ts_raw || ' is neither a number nor an ISO-8601 time'
                     WHEN ts < CAST($1 AS TIMESTAMPTZ) THEN 'timestamp_out_of_range: ' || CAST(ts AS VARCHAR) || ' is before ' || CAST(CAST($1 AS TIMESTAMPTZ) AS DATE)
                     WHEN ts > CAST($2 AS TIMESTAMPTZ) THEN 'timestamp_out_of_range: ' || CAST(ts AS VARCHAR) || ' is in the future'
                END,
                CASE WHEN type NOT IN ({known_types}) THEN 'unknown_event_type: ' || type END,
                CASE WHEN value_raw IS NOT NULL AND (value IS NULL OR isnan(value) OR isinf(value))
                     THEN 'mistyped_field: value ' || value_raw || ' is not a finite number'
                     WHEN type IN ('rating', 'dwell') AND value IS NULL THEN 'missing_field: a ' || type || ' event needs a value'
                     WHEN type = 'dwell' AND value < 0 THEN 'invalid_value: value ' || value_raw || ' < 0 (dwell seconds)'
                END,
                CASE WHEN position_raw IS NOT NULL AND position IS NULL
                     THEN 'mistyped_field: position ' || position_raw || ' is not an integer'
                     WHEN position < 0 THEN 'invalid_value: position ' || position_raw || ' < 0'
                END
            ), '') AS reason
        FROM typed
    ), deduped AS (
        SELECT *,
            CASE WHEN reason IS NULL THEN
                row_number() OVER (PARTITION BY event_id, reason IS NULL ORDER BY _row) END AS dup_rank,
            CASE WHEN reason IS NULL THEN
                min(_row) OVER (PARTITION BY event_id, reason IS NULL) END AS first_row
        FROM checked
    )
    SELECT *, coalesce(reason,
        CASE WHEN dup_rank > 1 THEN 'duplicate_event_id: ' || event_id || ' first seen at row ' || first_row END
    ) AS final_reason
    FROM deduped
    """
    # One pass: every row with its reason (NULL for a good one), split in Arrow afterwards.
    columns = ", ".join(_select(f) for f in EVENT_FIELDS)
    sql = f"SELECT {columns}, _row, final_reason AS reason, raw FROM ({query}) ORDER BY _row"
    checked = _run(sql, raw, [min_ts, max_ts])
    good = pc.is_null(checked.column("reason"))
    events = checked.filter(good).select(list(EVENT_FIELDS))
    quarantined = checked.filter(pc.invert(good)).select(["_row", "reason", "raw"])
    return Validated(events=events.cast(EVENT_SCHEMA), quarantined=quarantined)


_local = threading.local()
#: Batches up to this size (an API request) validate on a long-lived one-thread connection of the
#: calling thread, with the query prepared once and the optimizer off: opening a connection costs
#: ~10 ms, and DuckDB plans a prepared statement again at each EXECUTE (the scan's table changes),
#: where optimizing this query's ~30 expressions took longer than running it on a few rows (ten
#: events, idle: 21-25 -> 17-18 ms a batch with the optimizer off, the same rows out; under load
#: 28 -> 17; 10,000 events: 81 -> 94 ms).
_SMALL_BATCH = 10_000


def _run(sql: str, raw: pa.Table, params: list[datetime]) -> pa.Table:
    if raw.num_rows > _SMALL_BATCH:
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("raw", raw)
            return con.sql(sql, params=params).to_arrow_table()
        finally:
            con.close()
    local: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if local is None:
        local = _local.con = duckdb.connect()
        local.execute("SET threads = 1")
        local.execute("SET enable_optimizer = false")
        local.execute("SET TimeZone = 'UTC'")
        _local.prepared = {}
    local.register("raw", raw)
    try:
        name = _local.prepared.get(sql)
        if name is None:
            name = _local.prepared[sql] = f"validate_{len(_local.prepared)}"
            local.execute(f"PREPARE {name} AS {sql}")
        literals = ", ".join(f"TIMESTAMPTZ '{p.isoformat()}'" for p in params)
        return local.sql(f"EXECUTE {name}({literals})").to_arrow_table()
    finally:
        local.unregister("raw")


def _select(field: str) -> str:
    return {"timestamp": "ts AS timestamp", "type": "type"}.get(field, f'"{field}"')


#: The field each kind of rule is about, when the reason's detail does not start with it.
_FIELD_OF_KIND = {"unknown_event_type": "type", "timestamp_out_of_range": "timestamp", "duplicate_event_id": "event_id"}


def reason_field(reason: str) -> str:
    """The event field a reason (``"<kind>: <detail>"``) is about: what an API error names."""
    kind, _, detail = reason.partition(": ")
    if kind in _FIELD_OF_KIND:
        return _FIELD_OF_KIND[kind]
    if detail.startswith("a ") and detail.endswith("needs a value"):
        return "value"
    word = detail.split(" ", 1)[0]
    return word if word in EVENT_FIELDS else "event"


def records_to_raw(records: list[dict[str, object]]) -> tuple[pa.Table, dict[int, str]]:
    """Typed records (the API's events) as the raw text table ``validate_events`` takes, plus the
    reasons of rows that cannot even be written as text (a string that is not valid UTF-8, such as
    a lone surrogate), by row number; those rows are left out of the table."""
    rows: list[dict[str, object]] = []
    refused: dict[int, str] = {}
    for n, record in enumerate(records):
        row: dict[str, object] = {"_row": n}
        for name in EVENT_FIELDS:
            value = record.get(name)
            if isinstance(value, datetime):
                value = value.isoformat()  # naive: UTC, as for file rows; DuckDB parses any year
            elif value is not None:
                value = str(value)
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    refused[n] = f"mistyped_field: {name} is not valid UTF-8 text"
                    break
            row[name] = value
        else:
            rows.append(row)
    schema = pa.schema([pa.field("_row", pa.int64())] + [pa.field(f, pa.string()) for f in EVENT_FIELDS])
    return pa.Table.from_pylist(rows, schema), refused
