from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from feedrec.data.interactions import IdIndex
from feedrec.data.movielens import side_tables
from feedrec.data.side import SideEncoder, SideInfo
from feedrec.schemas import USER_SCHEMA
from tests.conftest import ML100K, make_side, needs_ml100k


def test_vocabularies_are_fixed_and_unknown_is_zero():
    side = make_side(n_items=8, extra_items=2)
    enc = SideEncoder.fit(side)
    index = IdIndex.from_values(["i0", "i9", "nope"])
    feats = enc.encode_items(side.items, index)
    assert feats.topics.shape == (3, enc.n_topics)
    assert feats.topics[index.lookup(["nope"])[0]].nnz == 0
    assert feats.creator[index.lookup(["nope"])[0]] == 0 and np.isnan(feats.created_at[2])
    assert feats.topics[0].nnz == 2  # two topics per item
    uindex = IdIndex.from_values(["u0", "u1", "ghost"])
    users = enc.encode_users(side.users, uindex)
    u0, u1, ghost = uindex.lookup(["u0", "u1", "ghost"])
    assert users.attrs[u0, 0] != users.attrs[u1, 0] and users.attrs[ghost, 0] == 0


def test_numeric_attributes_are_bucketed_and_new_values_unknown():
    table = pa.Table.from_pylist(
        [{"user_id": "a", "created_at": None, "attributes": json.dumps({"age": 34})}], USER_SCHEMA
    )
    enc = SideEncoder.fit(SideInfo(users=table))
    assert enc.attr_vocab.tolist() == ["age=30s"]
    other = pa.Table.from_pylist(
        [{"user_id": "b", "created_at": None, "attributes": json.dumps({"age": 71})}], USER_SCHEMA
    )
    assert enc.encode_users(other, IdIndex.from_values(["b"])).attrs.tolist() == [[0]]


def test_age_buckets_grow_with_age():
    side = make_side(n_items=4)
    feats = SideEncoder.fit(side).encode_items(side.items, IdIndex.from_values(["i0", "i1", "i3"]))
    buckets = feats.age_bucket(1_700_000_000 + 86_400 * 400)
    assert (buckets > 0).all() and buckets[0] <= buckets[-1]


@needs_ml100k
def test_ml100k_side_tables():
    items, users = side_tables(Path(ML100K))
    assert items is not None and users is not None
    assert items.num_rows == 1682 and users.num_rows == 943
    toy_story = items.slice(0, 1).to_pylist()[0]
    assert toy_story["topics"] == ["Animation", "Children's", "Comedy"]
    assert json.loads(users.column("attributes")[0].as_py()) == {"age": 24, "gender": "M", "occupation": "technician"}


def test_ml1m_and_latest_side_tables(tmp_path: Path):
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n")
    (tmp_path / "movies.dat").write_text("1::Toy Story (1995)::Animation|Children's|Comedy\n")
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n")
    items, users = side_tables(tmp_path / "ratings.dat")
    assert items is not None and items.column("topics").to_pylist() == [["Animation", "Children's", "Comedy"]]
    assert users is not None and users.num_rows == 1
    latest = tmp_path / "latest"
    latest.mkdir()
    (latest / "movies.csv").write_text(
        'movieId,title,genres\n1,"Toy Story (1995)",Adventure|Animation\n2,X,(no genres listed)\n'
    )
    items, users = side_tables(latest / "ratings.csv")
    assert (
        items is not None and items.column("topics").to_pylist() == [["Adventure", "Animation"], []] and users is None
    )
