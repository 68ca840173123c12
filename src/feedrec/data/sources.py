"""Read event files (CSV, TSV, Parquet, JSONL, MovieLens) into raw tables with canonical column names.

A source yields *raw* rows: columns renamed to feedrec's field names but not yet typed or checked,
plus ``_row`` (the 1-based data row in the file). Rows the parser itself cannot split (a CSV line with
the wrong number of fields, a JSONL line that is not JSON) come back as ``rejects`` so that the
ingestion can quarantine them: nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedrec.schemas import EVENT_FIELDS, REQUIRED_EVENT_FIELDS

Format = Literal["auto", "csv", "tsv", "parquet", "jsonl", "movielens"]
FORMATS: tuple[str, ...] = ("auto", "csv", "tsv", "parquet", "jsonl", "movielens")

#: Columns a source may map to besides the event fields: a rating becomes the event's value.
MAPPABLE_FIELDS: tuple[str, ...] = (*EVENT_FIELDS, "rating")


class SourceError(ValueError):
    """A source that cannot be read as events at all; the message says what to fix."""


@dataclass
class Reject:
    """A line the parser could not split into fields."""

    row: int
    raw: str
    reason: str


@dataclass
class RawEvents:
    table: pa.Table  # canonical (mapped) column names, untyped values, plus ``_row``
    rejects: list[Reject] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    dialect: str = ""


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"user_id=userId,item_id=movieId"`` -> ``{"user_id": "userId", "item_id": "movieId"}``."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        target, sep, source = part.partition("=")
        target, source = target.strip(), source.strip()
        if not sep or not target or not source:
            raise SourceError(f"--map entry {part!r} must look like field=column")
        if target not in MAPPABLE_FIELDS:
            raise SourceError(f"--map: {target!r} is not an event field; fields: {', '.join(MAPPABLE_FIELDS)}")
        mapping[target] = source
    return mapping


# MovieLens presets: (dialect name, delimiter, header, column names in file order).
_ML_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def _movielens_dialect(path: Path) -> tuple[str, str, bool, tuple[str, ...]]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip()
    if "::" in first:
        return "movielens-1m", "::", False, _ML_COLUMNS
    if first.lower().startswith("userid,movieid"):
        return "movielens-latest", ",", True, ("user_id", "item_id", "rating", "timestamp")
    if "\t" in first:
        return "movielens-100k", "\t", False, _ML_COLUMNS
    raise SourceError(f"{path} does not look like a MovieLens ratings file (u.data, ratings.dat or ratings.csv)")


def detect_format(path: Path) -> str:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    if path.name in {"u.data", "ratings.dat"}:
        return "movielens"
    for fmt, suffixes in {
        "csv": (".csv", ".csv.gz"),
        "tsv": (".tsv", ".tsv.gz", ".tab"),
        "parquet": (".parquet", ".pq"),
        "jsonl": (".jsonl", ".ndjson", ".json", ".jsonl.gz"),
    }.items():
        if suffix in suffixes:
            return fmt
    raise SourceError(f"cannot tell the format of {path.name}; pass --format (one of {', '.join(FORMATS[1:])})")


def _read_delimited(
    path: Path, *, delim: str, header: bool, names: tuple[str, ...] | None
) -> tuple[pa.Table, list[Reject]]:
    con = duckdb.connect()
    options = [
        "all_varchar=true",
        f"header={'true' if header else 'false'}",
        f"delim='{delim}'",
        "store_rejects=true",
        "null_padding=false",
        "quote='\"'",
    ]
    if names:
        options.append("names=[" + ", ".join(f"'{n}'" for n in names) + "]")
    try:
        table = con.sql(
            f"SELECT * FROM read_csv($path, {', '.join(options)})", params={"path": str(path)}
        ).to_arrow_table()
        # One reject row per problem; several problems can share a line.
        header_lines = 1 if header else 0
        rejects = [
            Reject(row=int(line) - header_lines, raw=str(raw), reason=f"malformed_row: {msg}")
            for line, raw, msg in con.execute(
                "SELECT line, any_value(csv_line), string_agg(DISTINCT error_message, ' / ') "
                "FROM reject_errors GROUP BY line ORDER BY line"
            ).fetchall()
        ]
    except duckdb.Error as exc:
        raise SourceError(f"cannot read {path} as delimited text: {exc}") from exc
    finally:
        con.close()
    # Number the good rows by their place among the file's data rows, the rejects' numbering.
    rejected = np.array([r.row for r in rejects], dtype=np.int64)
    rows = np.setdiff1d(np.arange(1, table.num_rows + rejected.size + 1), rejected)
    return table.append_column("_row", pa.array(rows, pa.int64())), rejects


def _read_jsonl(path: Path) -> tuple[pa.Table, list[Reject]]:
    rows: list[dict[str, object]] = []
    rejects: list[Reject] = []
    opener = __import__("gzip").open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                rejects.append(Reject(lineno, line.rstrip("\n"), f"malformed_row: not JSON ({exc.msg})"))
                continue
            if not isinstance(obj, dict):
                rejects.append(Reject(lineno, line.rstrip("\n"), "malformed_row: not a JSON object"))
                continue
            # Keep values as text: typing and checking is validation's job, in one place.
            rows.append(
                {k: (None if v is None else v if isinstance(v, str) else json.dumps(v)) for k, v in obj.items()}
                | {"_row": lineno}
            )
    columns = sorted({k for r in rows for k in r if k != "_row"})
    table = pa.table(
        {c: pa.array([r.get(c) for r in rows], pa.string()) for c in columns}
        | {"_row": pa.array([r["_row"] for r in rows], pa.int64())}
    )
    return table, rejects


def read_events(path: Path | str, *, fmt: str = "auto", mapping: dict[str, str] | None = None) -> RawEvents:
    """Read ``path`` as raw events, renaming source columns by ``mapping`` (field -> column)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path} does not exist or is not a file")
    if fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    rejects: list[Reject] = []
    dialect = fmt
    if fmt == "movielens":
        dialect, delim, header, names = _movielens_dialect(path)
        table, rejects = _read_delimited(path, delim=delim, header=header, names=None if header else names)
        if header:  # ml-latest names its columns userId, movieId, rating, timestamp
            table = table.rename_columns([c.lower() for c in table.column_names])
            table = table.rename_columns(
                [{"userid": "user_id", "movieid": "item_id"}.get(c, c) for c in table.column_names]
            )
    elif fmt in ("csv", "tsv"):
        table, rejects = _read_delimited(path, delim="," if fmt == "csv" else "\t", header=True, names=None)
    elif fmt == "parquet":
        table = pq.read_table(path)
        table = table.append_column("_row", pa.array(range(1, table.num_rows + 1), pa.int64()))
    else:
        table, rejects = _read_jsonl(path)

    mapping = dict(mapping or {})
    missing_sources = [src for src in mapping.values() if src not in table.column_names]
    if missing_sources:
        raise SourceError(
            f"--map names column(s) {missing_sources} that {path.name} lacks; "
            f"its columns are {[c for c in table.column_names if c != '_row']}"
        )
    reverse = {src: target for target, src in mapping.items()}
    renamed = [reverse.get(c, c if c not in mapping else f"_unmapped_{c}") for c in table.column_names]
    table = table.rename_columns(renamed)
    lacking = [f for f in REQUIRED_EVENT_FIELDS if f not in table.column_names]
    if lacking:
        raise SourceError(
            f"{path.name} has no column for {lacking}; its columns are "
            f"{[c for c in table.column_names if c != '_row']}. Map them, e.g. --map "
            + ",".join(f"{f}=<column>" for f in lacking)
        )
    ignored = [c for c in table.column_names if c not in MAPPABLE_FIELDS and c != "_row"]
    table = table.select([c for c in table.column_names if c in MAPPABLE_FIELDS or c == "_row"])
    return RawEvents(table=table, rejects=rejects, ignored_columns=ignored, dialect=dialect)
