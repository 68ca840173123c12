"""Item and user side information of the MovieLens data sets, as feedrec Item and User tables.

Genres become an item's topics and the release date its ``created_at``; a user's demographics
become attributes. ``side_tables(ratings_path)`` finds the files beside a ratings file:
ML-100K (``u.item``, ``u.user``), ML-1M (``movies.dat``, ``users.dat``), ml-latest (``movies.csv``).
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from feedrec.schemas import ITEM_SCHEMA, USER_SCHEMA

_ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _date(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%d-%b-%Y").replace(tzinfo=UTC)
    except ValueError:
        return None


def _items(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, ITEM_SCHEMA)


def _users(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, USER_SCHEMA)


def read_ml100k_items(path: Path) -> pa.Table:
    rows = []
    with path.open(encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 + len(_ML100K_GENRES):
                continue
            flags = parts[5 : 5 + len(_ML100K_GENRES)]
            rows.append(
                {
                    "item_id": parts[0],
                    "created_at": _date(parts[2]),
                    "topics": [g for g, f in zip(_ML100K_GENRES, flags, strict=True) if f == "1"],
                    "creator_id": None,
                    "text": parts[1],
                }
            )
    return _items(rows)


def _read_users(path: Path, sep: str, fields: tuple[str, ...]) -> pa.Table:
    """Demographics files: ``fields`` names the columns in file order (user_id, age, gender, occupation, zip)."""
    rows = []
    with path.open(encoding="latin-1") as fh:
        for line in fh:
            record = dict(zip(fields, line.rstrip("\n").split(sep), strict=True))
            attrs = {"age": int(record["age"]), "gender": record["gender"], "occupation": record["occupation"]}
            rows.append({"user_id": record["user_id"], "created_at": None, "attributes": json.dumps(attrs)})
    return _users(rows)


def read_ml100k_users(path: Path) -> pa.Table:
    return _read_users(path, "|", ("user_id", "age", "gender", "occupation", "zip"))


def read_ml1m_items(path: Path) -> pa.Table:
    rows = []
    with path.open(encoding="latin-1") as fh:
        for line in fh:
            mid, title, genres = line.rstrip("\n").split("::")
            rows.append({"item_id": mid, "created_at": None, "topics": genres.split("|"), "text": title})
    return _items(rows)


def read_ml1m_users(path: Path) -> pa.Table:
    return _read_users(path, "::", ("user_id", "gender", "age", "occupation", "zip"))


def read_mllatest_items(path: Path) -> pa.Table:
    with path.open(encoding="utf-8") as fh:
        rows = [
            {
                "item_id": r["movieId"],
                "created_at": None,
                "topics": [g for g in r["genres"].split("|") if g != "(no genres listed)"],
                "text": r["title"],
            }
            for r in csv.DictReader(fh)
        ]
    return _items(rows)


def side_tables(ratings_path: Path) -> tuple[pa.Table | None, pa.Table | None]:
    """(items, users) found beside a MovieLens ratings file; None where a file is absent."""
    folder = ratings_path.parent
    readers = [
        ("u.item", read_ml100k_items, "u.user", read_ml100k_users),
        ("movies.dat", read_ml1m_items, "users.dat", read_ml1m_users),
        ("movies.csv", read_mllatest_items, None, None),
    ]
    for item_name, item_reader, user_name, user_reader in readers:
        if (folder / item_name).exists():
            items = item_reader(folder / item_name)
            users = (
                user_reader(folder / user_name) if user_name and user_reader and (folder / user_name).exists() else None
            )
            return items, users
    return None, None
