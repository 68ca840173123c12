"""Interactions: (user, item, time, weight) tuples with ids encoded to dense indices.

Models learn from an ``Interactions``; its ``users`` and ``items`` indexes translate between the
ids the world uses (strings) and the row/column numbers of matrices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp


class IdIndex:
    """A sorted array of unique ids; ``lookup`` maps ids to positions (-1 when unknown)."""

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids).astype(str)
        if ids.size and not (ids[1:] > ids[:-1]).all():
            raise ValueError("IdIndex needs sorted, unique ids")
        self.ids = ids

    @classmethod
    def from_values(cls, values: np.ndarray | list[str]) -> IdIndex:
        return cls(np.unique(np.asarray(values).astype(str)))

    def __len__(self) -> int:
        return int(self.ids.size)

    def lookup(self, values: np.ndarray | list[str] | tuple[str, ...]) -> np.ndarray:
        """Positions of ``values`` (int64), -1 for ids not in the index."""
        values = np.asarray(values).astype(str)
        if self.ids.size == 0:
            return np.full(values.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.ids, values)
        pos = np.clip(pos, 0, self.ids.size - 1)
        return np.where(self.ids[pos] == values, pos, -1).astype(np.int64)


@dataclass
class Interactions:
    """Encoded interactions. ``timestamps`` are seconds since the epoch (int64)."""

    user_idx: np.ndarray  # (n,) int32
    item_idx: np.ndarray  # (n,) int32
    timestamps: np.ndarray  # (n,) int64
    weights: np.ndarray  # (n,) float32
    users: IdIndex
    items: IdIndex

    @classmethod
    def from_arrays(
        cls,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        timestamps: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        catalogue: np.ndarray | None = None,
    ) -> Interactions:
        """``catalogue``: extra item ids the models may recommend though nobody interacted with them yet."""
        user_ids = np.asarray(user_ids).astype(str)
        item_ids = np.asarray(item_ids).astype(str)
        users = IdIndex.from_values(user_ids)
        extra = np.asarray([] if catalogue is None else catalogue).astype(str)
        items = IdIndex.from_values(np.concatenate([item_ids, extra]))
        n = user_ids.size
        return cls(
            user_idx=users.lookup(user_ids).astype(np.int32),
            item_idx=items.lookup(item_ids).astype(np.int32),
            timestamps=np.asarray(timestamps, dtype=np.int64).reshape(n),
            weights=(np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)),
            users=users,
            items=items,
        )

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame | pa.Table, weight: str | None = None, *, catalogue: np.ndarray | None = None
    ) -> Interactions:
        """From a frame with ``user_id``, ``item_id`` and ``timestamp`` (datetime or epoch seconds)."""
        df = frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame)
        assert isinstance(df, pl.DataFrame)
        ts = df["timestamp"]
        seconds = ts.dt.epoch("s") if ts.dtype.is_temporal() else ts.cast(pl.Int64)
        return cls.from_arrays(
            df["user_id"].cast(pl.Utf8).to_numpy(),
            df["item_id"].cast(pl.Utf8).to_numpy(),
            seconds.to_numpy(),
            None if weight is None else df[weight].to_numpy(),
            catalogue=catalogue,
        )

    def __len__(self) -> int:
        return int(self.user_idx.size)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def to_csr(self, *, binary: bool = False) -> sp.csr_matrix:
        """(n_users, n_items) float32; repeated pairs sum their weights (or count once if ``binary``)."""
        data = np.ones(len(self), np.float32) if binary else self.weights
        m = sp.csr_matrix((data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def recent_history(self, size: int, half_life: float) -> sp.csr_matrix:
        """(n_users, n_items) weights of each user's ``size`` latest interactions: 1 for the latest,
        halving every ``half_life`` interactions back (ties in time keep the input order)."""
        order = np.lexsort((np.arange(len(self)), self.timestamps, self.user_idx))
        u, i = self.user_idx[order], self.item_idx[order]
        new_user = np.r_[True, u[1:] != u[:-1]]
        group_end = np.r_[np.flatnonzero(new_user)[1:], u.size]  # one past each user's last row
        from_end = group_end[np.cumsum(new_user) - 1] - 1 - np.arange(u.size)
        keep = from_end < size
        return sp.csr_matrix(
            (0.5 ** (from_end[keep] / half_life), (u[keep], i[keep])),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )

    def latest_mask(self, ratio: float) -> np.ndarray:
        """(n,) bool: each user's latest ``ratio`` of interactions (at least one, for users with two
        or more; ties in time keep the input order). The validation carve of the user protocol."""
        order = np.lexsort((np.arange(len(self)), self.timestamps, self.user_idx))
        u = self.user_idx[order]
        new_user = np.r_[True, u[1:] != u[:-1]]
        start = np.flatnonzero(new_user)[np.cumsum(new_user) - 1]
        pos = np.arange(u.size) - start
        n_user = np.bincount(u, minlength=self.n_users)[u]
        n_latest = np.where(n_user >= 2, np.maximum(1, np.round(n_user * ratio)), 0)
        mask = np.zeros(len(self), bool)
        mask[order] = pos >= n_user - n_latest
        return mask

    def fingerprint(self) -> str:
        """A digest of the content (rows, in order, and both id lists): equal for equal data."""
        digest = hashlib.blake2b(digest_size=16)
        for array in (self.user_idx, self.item_idx, self.timestamps, self.weights, self.users.ids, self.items.ids):
            digest.update(str((array.dtype, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def subset(self, mask: np.ndarray) -> Interactions:
        """The rows in ``mask``, re-encoded; the item catalogue stays whole (items may lose all rows)."""
        return Interactions.from_arrays(
            self.users.ids[self.user_idx[mask]],
            self.items.ids[self.item_idx[mask]],
            self.timestamps[mask],
            self.weights[mask],
            catalogue=self.items.ids,
        )
