"""int8 compression and the gate that refuses a compression that costs more than 1 % NDCG@10."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from feedrec.metrics import ndcg_at_k
from feedrec.models.compress import CompressionGate, compress_retrieval, index_bytes
from feedrec.models.ranking.multitask import MultiTaskRanker, MultiTaskSet
from feedrec.models.retrieval.two_tower import TwoTowerRecommender
from tests.conftest import make_interactions, make_side
from tests.unit.models.test_multitask import _set


def test_the_gate_accepts_up_to_the_allowed_loss_and_refuses_beyond():
    gate = CompressionGate(max_relative_loss=0.01)
    assert gate.check(0.200, 0.199).accepted  # 0.5 % lost
    assert gate.check(0.200, 0.210).accepted  # a gain
    refused = gate.check(0.200, 0.196)  # 2 % lost
    assert not refused.accepted and refused.relative_loss == pytest.approx(0.02)
    assert "0.2000 -> 0.1960" in refused.reason and "over the 1% allowed loss" in refused.reason
    assert gate.check(0.0, 0.0).accepted


def _slate_ndcg(data: MultiTaskSet, scores: np.ndarray, slate: int = 10) -> float:
    """NDCG@10 of slates of 10 consecutive rows, each ranked by ``scores`` (click = relevant)."""
    n = data.numeric.shape[0] // slate * slate
    order = np.argsort(-scores[:n].reshape(-1, slate), axis=1, kind="stable")
    clicks = data.labels["click"][:n].reshape(-1, slate)
    keep = clicks.sum(axis=1) > 0
    truth = [np.flatnonzero(c) for c in clicks[keep]]
    return ndcg_at_k(truth, order[keep], k=slate)


def test_an_int8_ranker_is_smaller_keeps_its_ndcg_and_round_trips(tmp_path: Path):
    train, valid, test = _set(20_000, 0), _set(4_000, 1), _set(5_000, 2)
    fp32 = MultiTaskRanker(epochs=5, num_threads=1).fit(train, valid)
    int8 = fp32.quantized()
    assert int8.is_int8 and not fp32.is_int8
    assert int8.size_bytes() < fp32.size_bytes() / 2.5
    reference, compressed = _slate_ndcg(test, fp32.predict(test)), _slate_ndcg(test, int8.predict(test))
    assert CompressionGate().check(reference, compressed).accepted
    assert not np.array_equal(int8.predict(test), fp32.predict(test))  # it really runs int8 weights
    int8.save(tmp_path / "q")
    loaded = MultiTaskRanker.load(tmp_path / "q")
    assert loaded.is_int8
    np.testing.assert_allclose(loaded.predict(test), int8.predict(test), rtol=1e-5, atol=1e-6)


def test_the_gate_refuses_a_compression_that_loses_ranking_quality():
    """A broken compression (each weight matrix's entries scrambled, as a faulty quantizer would) is
    refused by the same gate and the same evaluation that accept the int8 one."""
    train, valid, test = _set(20_000, 0), _set(4_000, 1), _set(5_000, 2)
    fp32 = MultiTaskRanker(epochs=5, num_threads=1).fit(train, valid)
    scrambled = copy.copy(fp32)
    scrambled.net_ = copy.deepcopy(fp32.net_)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in scrambled.net_.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w.copy_(w.flatten()[torch.randperm(w.numel(), generator=generator)].reshape(w.shape))
    reference = _slate_ndcg(test, fp32.predict(test))
    verdict = CompressionGate().check(reference, _slate_ndcg(test, scrambled.predict(test)))
    assert not verdict.accepted, verdict.reason


def test_int8_item_vectors_shrink_the_index_and_keep_the_recommendations():
    inter, side = make_interactions(n_users=60, n_items=400, per_user=10), make_side(n_users=60, n_items=400)
    model = TwoTowerRecommender(dim=32, hidden=32, epochs=3, batch_size=64, ann="flat", num_threads=1).fit(inter, side)
    compressed = compress_retrieval(model)
    assert isinstance(compressed, TwoTowerRecommender) and compressed.ann == "sq8" and model.ann == "flat"
    assert index_bytes(compressed) < index_bytes(model) / 3
    users = inter.users.ids
    want, _ = model.recommend(users, k=10)
    got, _ = compressed.recommend(users, k=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got, strict=True)])
    assert overlap > 0.9
    hnsw = compress_retrieval(compress_retrieval(model, "hnsw"))
    assert isinstance(hnsw, TwoTowerRecommender) and hnsw.ann == "hnsw_sq8"
