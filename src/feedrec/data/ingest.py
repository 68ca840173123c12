"""Ingestion: read a file, validate every row, store the good ones, quarantine the rest with reasons.

Nothing is dropped silently: every row read is either stored, already in the store (re-ingesting
is idempotent by event_id, or by a content hash when the source has none), or written to a
quarantine file in the workspace with the original row and the reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from feedrec.config import IngestConfig
from feedrec.data.sources import read_events
from feedrec.data.store import EventStore
from feedrec.data.validation import validate_events
from feedrec.schemas import ITEM_SCHEMA, USER_SCHEMA


@dataclass
class IngestReport:
    source: str
    kind: str
    dialect: str
    read: int = 0
    stored: int = 0
    already_stored: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # reason kind -> rows
    quarantine_file: str | None = None
    ignored_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _write_quarantine(
    workspace: Path, source: Path, rows: list[dict[str, object]]
) -> tuple[str | None, dict[str, int]]:
    """Append refused rows to ``workspace/quarantine/<source>-<time>.jsonl``; count reasons by kind."""
    if not rows:
        return None, {}
    qdir = workspace / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    path = qdir / f"{source.name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.jsonl"
    kinds: Counter[str] = Counter()
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")
            for reason in str(row["reason"]).split("; "):
                kinds[reason.split(":", 1)[0]] += 1
    return str(path), dict(sorted(kinds.items()))


def ingest_events(
    path: Path | str,
    store: EventStore,
    workspace: Path,
    cfg: IngestConfig,
    *,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
) -> IngestReport:
    """Read ``path``, validate, append the good events to ``store``, quarantine the rest."""
    path = Path(path)
    raw = read_events(path, fmt=fmt, mapping=mapping)
    checked = validate_events(raw.table, cfg)
    result = store.append(checked.events)

    refused: list[dict[str, object]] = [
        {"source": str(path), "row": r.row, "reason": r.reason, "raw": r.raw} for r in raw.rejects
    ]
    for row in checked.quarantined.to_pylist():
        refused.append(
            {"source": str(path), "row": row["_row"], "reason": row["reason"], "raw": json.loads(row["raw"])}
        )
    qfile, reasons = _write_quarantine(workspace, path, sorted(refused, key=lambda r: int(str(r["row"]))))
    return IngestReport(
        source=str(path),
        kind="events",
        dialect=raw.dialect,
        read=raw.table.num_rows + len(raw.rejects),
        stored=result.stored,
        already_stored=result.already_stored,
        quarantined=len(refused),
        reasons=reasons,
        quarantine_file=qfile,
        ignored_columns=raw.ignored_columns,
    )


def _read_any(path: Path) -> pa.Table:
    reader = {
        ".parquet": "read_parquet",
        ".csv": "read_csv",
        ".tsv": "read_csv",
        ".jsonl": "read_json",
        ".json": "read_json",
    }.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"cannot tell the format of {path.name}; use .parquet, .csv, .tsv or .jsonl")
    con = duckdb.connect()
    try:
        return con.sql(f"SELECT * FROM {reader}($p)", params={"p": str(path)}).to_arrow_table()
    finally:
        con.close()


def ingest_entities(path: Path | str, store: EventStore, workspace: Path, *, kind: str) -> IngestReport:
    """Upsert items or users from a file. Rows without an id, or repeating an id, are quarantined."""
    path = Path(path)
    schema, key = (ITEM_SCHEMA, "item_id") if kind == "items" else (USER_SCHEMA, "user_id")
    table = _read_any(path)
    if key not in table.column_names:
        raise ValueError(f"{path.name} has no {key} column; its columns are {table.column_names}")
    rows = table.to_pylist()
    good: list[dict[str, object]] = []
    refused: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=1):
        ident = row.get(key)
        if ident is None or str(ident).strip() == "":
            refused.append({"source": str(path), "row": n, "reason": f"missing_field: {key}", "raw": row})
            continue
        ident = str(ident)
        if ident in seen:
            reason = f"duplicate_{key}: {ident} first seen at row {seen[ident]}"
            refused.append({"source": str(path), "row": n, "reason": reason, "raw": row})
            continue
        seen[ident] = n
        clean = {f: row.get(f) for f in schema.names} | {key: ident}
        if kind == "items" and isinstance(clean.get("topics"), str):
            clean["topics"] = [t for t in str(clean["topics"]).split("|") if t]
        if kind == "users" and not isinstance(clean.get("attributes"), str | None):
            clean["attributes"] = json.dumps(clean["attributes"])
        good.append(clean)
    stored = 0
    if good:
        stored = (store.put_items if kind == "items" else store.put_users)(pa.Table.from_pylist(good, schema))
    qfile, reasons = _write_quarantine(workspace, path, refused)
    return IngestReport(
        source=str(path),
        kind=kind,
        dialect=path.suffix.lstrip("."),
        read=len(rows),
        stored=stored,
        quarantined=len(refused),
        reasons=reasons,
        quarantine_file=qfile,
    )
