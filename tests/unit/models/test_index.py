from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from feedrec.models.index import FaissIndex


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 16))
    x = centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 16))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def test_flat_is_exact(vectors):
    q = vectors[:20]
    ids, scores = FaissIndex("flat").build(vectors).search(q, 10)
    np.testing.assert_allclose(scores, np.sort(-(q @ vectors.T), axis=1)[:, :10] * -1, rtol=1e-5)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(ids, exact(vectors, q, 10), strict=True)]) >= 9.9


@pytest.mark.parametrize(("kind", "floor"), [("hnsw", 0.95), ("ivf_sq8", 0.8), ("ivf_pq", 0.5)])
def test_approximate_recall_against_exact(vectors, kind, floor):
    q = vectors[:100] + 0.05
    got, _ = FaissIndex(kind, nprobe=32, pq_m=8).build(vectors).search(q, 20)
    ref = exact(vectors, q, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(got, ref, strict=True)])
    assert recall >= floor


def test_excluded_items_never_come_back_and_k_is_kept(vectors):
    q = vectors[:5]
    first, _ = FaissIndex("hnsw").build(vectors).search(q, 10)
    exclude = sp.csr_matrix((np.ones(50), (np.repeat(np.arange(5), 10), first.ravel())), shape=(5, len(vectors)))
    ids, _ = FaissIndex("hnsw").build(vectors).search(q, 10, exclude=exclude)
    assert (ids >= 0).all()
    for r in range(5):
        assert not set(ids[r]) & set(first[r])


def test_save_load_and_memory(vectors, tmp_path: Path):
    idx = FaissIndex("ivf_sq8").build(vectors)
    idx.save(tmp_path / "i.faiss")
    back = FaissIndex.load(tmp_path / "i.faiss", "ivf_sq8")
    a, b = idx.search(vectors[:7], 5), back.search(vectors[:7], 5)
    assert np.array_equal(a[0], b[0])
    assert idx.memory_bytes < FaissIndex("flat").build(vectors).memory_bytes / 2  # 8-bit codes


def test_small_catalogue_pads_and_errors():
    x = np.eye(3, dtype=np.float32)
    ids, scores = FaissIndex("flat").build(x).search(x[:1], 5)
    assert (ids[0, 3:] == -1).all() and np.isnan(scores[0, 3:]).all()
    with pytest.raises(ValueError, match="index kind"):
        FaissIndex("annoy")
    with pytest.raises(RuntimeError, match="build"):
        FaissIndex("flat").search(x, 1)
