"""Side information: item content (topics, creator, publish time) and user attributes, encoded.

``SideInfo`` holds the raw Item and User tables. ``SideEncoder`` fixes the vocabularies (topics,
creators, attribute values) when a model is fitted and is saved with it, so that an item or user
that arrives later is encoded with the same codes. Code 0 always means "unknown".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from feedrec.data.interactions import IdIndex
from feedrec.schemas import ITEM_SCHEMA, USER_SCHEMA

DAY = 86_400
N_AGE_BUCKETS = 16  # log2(1 + age in days), capped; bucket 0 = unknown


@dataclass
class SideInfo:
    items: pa.Table | None = None  # ITEM_SCHEMA
    users: pa.Table | None = None  # USER_SCHEMA
    hidden: pa.Table | None = None  # user_id, item_id pairs the user hid: never recommend them again


@dataclass
class ItemFeatures:
    topics: sp.csr_matrix  # (n_items, n_topics + 1) binary; column 0 unused
    creator: np.ndarray  # (n_items,) int64, 0 = unknown
    created_at: np.ndarray  # (n_items,) float64 epoch seconds, NaN = unknown

    def age_bucket(self, now: float) -> np.ndarray:
        return age_buckets(self.created_at, now)


def age_buckets(created_at: np.ndarray, now: float | np.ndarray) -> np.ndarray:
    """Int64 buckets in [0, N_AGE_BUCKETS): 0 unknown, else 1 + log2(1 + age in days), capped.

    ``now`` is one time or one per item (the time each example was seen, for training)."""
    age = np.maximum(np.asarray(now, np.float64) - created_at, 0) / DAY
    bucket = 1 + np.floor(np.log2(1 + np.nan_to_num(age, nan=0.0)))
    return np.where(np.isnan(created_at), 0, np.minimum(bucket, N_AGE_BUCKETS - 1)).astype(np.int64)


@dataclass
class UserFeatures:
    attrs: np.ndarray  # (n_users, n_attributes) int64 codes, 0 = unknown


def _attr_value(value: object) -> str:
    """Numbers are bucketed by tens (an age of 34 -> '30s'); everything else is its text."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{int(value) // 10 * 10}s"
    return str(value)


def _lookup_codes(vocab: np.ndarray, values: np.ndarray) -> np.ndarray:
    return IdIndex(vocab).lookup(values) + 1  # unknown (-1) -> 0


class SideEncoder:
    """Vocabularies fitted once; ``encode_*`` turns tables into aligned integer features."""

    def __init__(
        self,
        topic_vocab: np.ndarray,
        creator_vocab: np.ndarray,
        attr_names: np.ndarray,
        attr_vocab: np.ndarray,
    ) -> None:
        self.topic_vocab = np.asarray(topic_vocab).astype(str)
        self.creator_vocab = np.asarray(creator_vocab).astype(str)
        self.attr_names = np.asarray(attr_names).astype(str)
        # One vocabulary for every attribute, entries "name=value", so one array persists them all.
        self.attr_vocab = np.asarray(attr_vocab).astype(str)

    @classmethod
    def fit(cls, side: SideInfo | None, *, min_creator_items: int = 2) -> SideEncoder:
        topics: set[str] = set()
        creators: np.ndarray = np.array([], dtype=str)
        names: set[str] = set()
        values: set[str] = set()
        if side and side.items is not None and side.items.num_rows:
            for row in side.items.column("topics").to_pylist():
                topics.update(row or [])
            cr = np.array([c for c in side.items.column("creator_id").to_pylist() if c is not None], dtype=str)
            uniq, counts = np.unique(cr, return_counts=True)
            creators = uniq[counts >= min_creator_items]  # one-item creators teach nothing general
        if side and side.users is not None and side.users.num_rows:
            for text in side.users.column("attributes").to_pylist():
                for key, value in (json.loads(text) if text else {}).items():
                    names.add(key)
                    values.add(f"{key}={_attr_value(value)}")
        return cls(np.array(sorted(topics)), np.sort(creators), np.array(sorted(names)), np.array(sorted(values)))

    @property
    def n_topics(self) -> int:
        return int(self.topic_vocab.size) + 1

    @property
    def n_creators(self) -> int:
        return int(self.creator_vocab.size) + 1

    @property
    def n_attr_values(self) -> int:
        return int(self.attr_vocab.size) + 1

    def encode_items(self, items: pa.Table | None, index: IdIndex) -> ItemFeatures:
        n = len(index)
        rows: list[int] = []
        cols: list[int] = []
        creator = np.zeros(n, np.int64)
        created = np.full(n, np.nan)
        if items is not None and items.num_rows:
            items = items.select(ITEM_SCHEMA.names)
            pos = index.lookup(np.asarray(items.column("item_id").to_pylist(), dtype=str))
            keep = np.flatnonzero(pos >= 0)
            # Every (item row, topic) pair at once: flatten the list column, look all topics up together.
            topic_lists = pa.chunked_array(items.column("topics")).combine_chunks()
            parents = pc.list_parent_indices(topic_lists).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(topic_lists)
            valid = pc.is_valid(flat).to_numpy(zero_copy_only=False).astype(bool)
            names = flat.filter(pa.array(valid)).to_numpy(zero_copy_only=False).astype(str)
            codes = IdIndex(self.topic_vocab).lookup(names) + 1
            owner = pos[parents[valid]]
            good = (codes > 0) & (owner >= 0)
            rows, cols = owner[good].tolist(), codes[good].tolist()
            creators = np.asarray([c or "" for c in items.column("creator_id").to_pylist()], dtype=str)
            creator[pos[keep]] = _lookup_codes(self.creator_vocab, creators[keep])
            # Microseconds; nulls come out as NaN.
            us = items.column("created_at").cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
            created[pos[keep]] = us[keep] / 1e6
        topics = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, self.n_topics))
        topics.sum_duplicates()
        topics.data[:] = 1.0
        return ItemFeatures(topics=topics, creator=creator, created_at=created)

    def encode_users(self, users: pa.Table | None, index: IdIndex) -> UserFeatures:
        attrs = np.zeros((len(index), max(1, self.attr_names.size)), np.int64)
        if users is not None and users.num_rows:
            users = users.select(USER_SCHEMA.names)
            pos = index.lookup(np.asarray(users.column("user_id").to_pylist(), dtype=str))
            code = {value: i + 1 for i, value in enumerate(self.attr_vocab.tolist())}
            for r, text in enumerate(users.column("attributes").to_pylist()):
                if pos[r] < 0 or not text:
                    continue
                record = json.loads(text)
                for j, name in enumerate(self.attr_names.tolist()):
                    if name in record:
                        attrs[pos[r], j] = code.get(f"{name}={_attr_value(record[name])}", 0)
        return UserFeatures(attrs=attrs)
