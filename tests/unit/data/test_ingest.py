"""A file with a few percent of malformed rows: every good row stored, every bad one quarantined, and
a second ingest adds nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path

from feedrec.config import IngestConfig
from feedrec.data.ingest import ingest_entities, ingest_events
from feedrec.data.store import LocalEventStore


def _write_dirty_csv(path: Path, n: int = 2_000, seed: int = 3) -> tuple[int, dict[int, str]]:
    """A CSV where ~4% of rows break one rule; returns (good rows, {line: expected reason kind})."""
    rng = random.Random(seed)
    lines = ["event_id,user_id,item_id,timestamp,type,value"]
    bad: dict[int, str] = {}
    corruptions = [
        (lambda r: [*r[:1], "", *r[2:]], "missing_field"),
        (lambda r: [*r[:3], "not-a-time", *r[4:]], "mistyped_field"),
        (lambda r: [*r[:4], "purchase", *r[5:]], "unknown_event_type"),
        (lambda r: [*r[:3], "12", *r[4:]], "timestamp_out_of_range"),
        (lambda r: r[:2], "malformed_row"),
        (lambda r: ["e0", *r[1:]], "duplicate_event_id"),
    ]
    for i in range(n):
        row = [f"e{i}", f"u{rng.randrange(50)}", f"i{rng.randrange(80)}", str(1_700_000_000 + i), "click", ""]
        if i > 0 and rng.random() < 0.04:
            corrupt, kind = rng.choice(corruptions)
            row = corrupt(row)
            bad[i + 1] = kind  # data rows are numbered from 1
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    return n - len(bad), bad


def test_dirty_file_ingests_every_good_row_and_quarantines_every_bad_one(tmp_path: Path):
    src = tmp_path / "events.csv"
    n_good, bad = _write_dirty_csv(src)
    assert 40 < len(bad) < 120
    store = LocalEventStore(tmp_path / "ws")
    report = ingest_events(src, store, tmp_path / "ws", IngestConfig())

    assert report.read == 2_000
    assert report.stored == n_good == store.count()
    assert report.quarantined == len(bad)
    assert report.stored + report.quarantined == report.read  # nothing dropped silently
    assert report.quarantine_file is not None
    rows = [json.loads(line) for line in Path(report.quarantine_file).read_text().splitlines()]
    assert {r["row"]: r["reason"].split(":")[0] for r in rows} == bad
    assert all(r["raw"] for r in rows)
    assert sum(report.reasons.values()) == len(bad)

    again = ingest_events(src, store, tmp_path / "ws", IngestConfig())
    assert again.stored == 0
    assert again.already_stored == n_good
    assert store.count() == n_good


def test_reingest_without_event_ids_is_idempotent_by_content(tmp_path: Path):
    src = tmp_path / "u.data"
    src.write_text("1\t10\t5\t881250949\n1\t11\t3\t881250950\n2\t10\t4\t881250951\n")
    store = LocalEventStore(tmp_path / "ws")
    first = ingest_events(src, store, tmp_path / "ws", IngestConfig(), fmt="movielens")
    second = ingest_events(src, store, tmp_path / "ws", IngestConfig(), fmt="movielens")
    assert (first.stored, second.stored, second.already_stored, store.count()) == (3, 0, 3, 3)


def test_items_and_users(tmp_path: Path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,topics,creator_id\ni1,news|sport,c1\n,music,c2\ni1,film,c3\ni2,film,c1\n")
    store = LocalEventStore(tmp_path / "ws")
    report = ingest_entities(items, store, tmp_path / "ws", kind="items")
    assert (report.read, report.stored, report.quarantined) == (4, 2, 2)
    assert store.items().column("topics").to_pylist() == [["news", "sport"], ["film"]]
    users = tmp_path / "users.jsonl"
    users.write_text('{"user_id": "u1", "attributes": {"age": 30}}\n')
    ingest_entities(users, store, tmp_path / "ws", kind="users")
    assert json.loads(store.users().column("attributes")[0].as_py()) == {"age": 30}
