"""Nearest-neighbour search over item embeddings (maximum inner product), with ``faiss``.

``VectorIndex`` is the small interface; ``FaissIndex`` implements it with an index-factory string:

- ``flat``: exact search (the reference);
- ``hnsw``: graph search (HNSW, ``hnsw_m`` links per node), fast and accurate, kept in fp32;
- ``sq8``: exact scan over 8-bit scalar-quantized vectors (the int8 twin of ``flat``);
- ``hnsw_sq8``: the HNSW graph over 8-bit vectors (the int8 twin of ``hnsw``);
- ``ivf_sq8``: inverted lists with 8-bit scalar quantization (4x smaller vectors);
- ``ivf_pq``: inverted lists with product quantization (``pq_m`` bytes per vector).

Excluded items (a user's history, hidden items) are filtered after an over-fetch, so each query
still returns ``k`` results when enough items remain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import faiss
import numpy as np
import scipy.sparse as sp

INDEX_KINDS = ("flat", "hnsw", "sq8", "hnsw_sq8", "ivf_sq8", "ivf_pq")


class VectorIndex(ABC):
    @abstractmethod
    def build(self, vectors: np.ndarray) -> Self:
        """Index ``vectors`` (n, d); result ids are row numbers."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, *, exclude: sp.csr_matrix | Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids (q, k) int64 with -1 padding, scores (q, k) float32), best first."""

    @abstractmethod
    def save(self, path: Path) -> None: ...

    @property
    @abstractmethod
    def memory_bytes(self) -> int: ...


class FaissIndex(VectorIndex):
    def __init__(
        self,
        kind: str = "hnsw",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        nlist: int = 0,
        nprobe: int = 16,
        pq_m: int = 16,
        seed: int = 42,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; use one of {', '.join(INDEX_KINDS)}")
        self.kind = kind
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.pq_m = pq_m
        self.seed = seed
        self._index: faiss.Index | None = None

    def _factory(self, n: int, d: int) -> str:
        nlist = self.nlist or max(1, min(4096, int(4 * np.sqrt(n))))
        return {
            "flat": "Flat",
            "hnsw": f"HNSW{self.hnsw_m}",
            "sq8": "SQ8",
            "hnsw_sq8": f"HNSW{self.hnsw_m}_SQ8",
            "ivf_sq8": f"IVF{nlist},SQ8",
            "ivf_pq": f"IVF{nlist},PQ{self.pq_m}",
        }[self.kind]

    def build(self, vectors: np.ndarray) -> Self:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"vectors must be a non-empty (n, d) array, got shape {x.shape}")
        index = faiss.index_factory(x.shape[1], self._factory(*x.shape), faiss.METRIC_INNER_PRODUCT)
        if self.kind.startswith("hnsw"):
            faiss.downcast_index(index).hnsw.efConstruction = self.ef_construction  # type: ignore[attr-defined]
        if not index.is_trained:
            rng = np.random.default_rng(self.seed)
            sample = x[rng.choice(x.shape[0], size=min(x.shape[0], 100_000), replace=False)]
            index.train(sample)
        index.add(x)
        self._index = index
        self._configure()
        return self

    def _configure(self) -> None:
        assert self._index is not None
        if self.kind.startswith("hnsw"):
            faiss.downcast_index(self._index).hnsw.efSearch = self.ef_search  # type: ignore[attr-defined]
        elif self.kind.startswith("ivf"):
            faiss.extract_index_ivf(self._index).nprobe = self.nprobe

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def search(
        self, queries: np.ndarray, k: int, *, exclude: sp.csr_matrix | Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            raise RuntimeError("the index is empty: call build() or load() first")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2:
            raise ValueError(f"queries must be (q, d), got shape {q.shape}")
        rows: list[np.ndarray]
        if exclude is None:
            rows = [np.empty(0, np.int64)] * q.shape[0]
        elif sp.issparse(exclude):
            csr = sp.csr_matrix(exclude)
            rows = [csr.indices[csr.indptr[r] : csr.indptr[r + 1]] for r in range(q.shape[0])]
        else:
            rows = [np.asarray(e, np.int64) for e in exclude]
        k_eff = min(k, self.ntotal)
        fetch = min(self.ntotal, k_eff + max((r.size for r in rows), default=0))
        if self.kind.startswith("hnsw"):  # the graph search returns at most efSearch good results
            faiss.downcast_index(self._index).hnsw.efSearch = max(self.ef_search, fetch)  # type: ignore[attr-defined]
        scores, ids = self._index.search(q, max(fetch, 1))
        out_ids = np.full((q.shape[0], k), -1, np.int64)
        out_scores = np.full((q.shape[0], k), np.nan, np.float32)
        for r in range(q.shape[0]):
            keep = ids[r] >= 0
            if rows[r].size:
                keep &= ~np.isin(ids[r], rows[r])
            found = ids[r][keep][:k_eff]
            out_ids[r, : found.size] = found
            out_scores[r, : found.size] = scores[r][keep][:k_eff]
        return out_ids, out_scores

    def save(self, path: Path) -> None:
        if self._index is None:
            raise RuntimeError("nothing to save: the index is empty")
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path, kind: str, **params: int) -> FaissIndex:
        index = cls(kind, **params)
        index._index = faiss.read_index(str(path))
        index._configure()
        return index

    @property
    def memory_bytes(self) -> int:
        """Size of the serialized index: what it costs in memory, to within a few percent."""
        if self._index is None:
            return 0
        return int(faiss.serialize_index(self._index).nbytes)
