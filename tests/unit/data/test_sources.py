from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedrec.data.sources import SourceError, parse_mapping, read_events
from tests.conftest import ML100K, needs_ml100k


def test_parse_mapping():
    assert parse_mapping("user_id=userId, item_id=movieId") == {"user_id": "userId", "item_id": "movieId"}
    assert parse_mapping(None) == {}
    with pytest.raises(SourceError, match="not an event field"):
        parse_mapping("usr=userId")
    with pytest.raises(SourceError, match="field=column"):
        parse_mapping("user_id")


def test_csv_with_mapping_and_ragged_rows(tmp_path: Path):
    path = tmp_path / "log.csv"
    path.write_text("uid,mid,ts,title\n1,10,1700000000,a\n2,20\n3,30,1700000001,c,extra\n4,40,1700000002,d\n")
    raw = read_events(path, mapping=parse_mapping("user_id=uid,item_id=mid,timestamp=ts"))
    assert raw.table.column("user_id").to_pylist() == ["1", "4"]
    assert raw.table.column("_row").to_pylist() == [1, 4]  # data rows, counted from 1
    assert [r.row for r in raw.rejects] == [2, 3]
    assert all(r.reason.startswith("malformed_row") for r in raw.rejects)
    assert raw.ignored_columns == ["title"]


def test_missing_required_column_names_the_fix(tmp_path: Path):
    path = tmp_path / "log.csv"
    path.write_text("userId,movieId\n1,2\n")
    with pytest.raises(SourceError, match=r"--map .*timestamp=<column>"):
        read_events(path)
    with pytest.raises(SourceError, match="lacks"):
        read_events(path, mapping={"user_id": "nope"})


def test_jsonl_keeps_bad_lines_as_rejects(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    lines = [
        json.dumps({"user_id": "a", "item_id": "x", "timestamp": "2024-01-01T00:00:00Z", "type": "like"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"user_id": "b", "item_id": 7, "timestamp": 1700000000}),
    ]
    path.write_text("\n".join(lines) + "\n")
    raw = read_events(path)
    assert raw.table.num_rows == 2
    assert raw.table.column("item_id").to_pylist() == ["x", "7"]
    assert [r.row for r in raw.rejects] == [2, 3]


def test_parquet_and_tsv(tmp_path: Path):
    pq.write_table(
        pa.table({"user_id": [1, 2], "item_id": [3, 4], "timestamp": [1700000000, 1700000001]}),
        tmp_path / "e.parquet",
    )
    assert read_events(tmp_path / "e.parquet").table.num_rows == 2
    (tmp_path / "e.tsv").write_text("user_id\titem_id\ttimestamp\n1\t2\t1700000000\n")
    assert read_events(tmp_path / "e.tsv").table.num_rows == 1


@pytest.mark.parametrize(
    ("name", "text", "dialect"),
    [
        ("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n", "movielens-1m"),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n",
            "movielens-latest",
        ),
        ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n", "movielens-100k"),
    ],
)
def test_movielens_presets(tmp_path: Path, name: str, text: str, dialect: str):
    path = tmp_path / name
    path.write_text(text)
    raw = read_events(path, fmt="movielens")
    assert raw.dialect == dialect
    assert set(raw.table.column_names) >= {"user_id", "item_id", "rating", "timestamp"}
    assert raw.table.num_rows == 2


@needs_ml100k
def test_real_ml100k_reads_whole():
    raw = read_events(ML100K, fmt="movielens")
    assert raw.table.num_rows == 100_000 and not raw.rejects


def test_unknown_format(tmp_path: Path):
    (tmp_path / "x.bin").write_text("")
    with pytest.raises(SourceError, match="--format"):
        read_events(tmp_path / "x.bin")
