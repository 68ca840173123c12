from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedrec.features.definitions import schema_hash
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.registry import GatePolicy, IncompatibleBundle, LocalRegistry, Manifest, RegistryError, gate_decision
from tests.conftest import make_interactions


def manifest(
    version: str, ndcg: float, auc: float | None = None, ece: float | None = None, schema: str | None = None
) -> Manifest:
    ranker = {k: v for k, v in (("auc", auc), ("ece", ece)) if v is not None}
    return Manifest(
        version=version,
        model="popularity",
        created_at="2026-01-01T00:00:00",
        data_window={},
        feature_schema=schema or schema_hash(),
        params={},
        metrics={"valid": {"ndcg@10": ndcg}, "test": {"ndcg@10": ndcg}} | ({"ranker": ranker} if ranker else {}),
        code_version="test",
    )


def test_gate():
    policy = GatePolicy()
    assert gate_decision(manifest("v2", 0.1), None, policy)["promote"]
    assert gate_decision(manifest("v2", 0.2), manifest("v1", 0.1), policy)["promote"]
    no = gate_decision(manifest("v2", 0.1), manifest("v1", 0.2), policy)
    assert not no["promote"] and "does not beat" in no["reason"]
    auc = gate_decision(manifest("v2", 0.2, auc=0.70), manifest("v1", 0.1, auc=0.75), policy)
    assert not auc["promote"] and "AUC" in auc["reason"]
    ece = gate_decision(manifest("v2", 0.2, ece=0.05), manifest("v1", 0.1, ece=0.01), policy)
    assert not ece["promote"] and "ECE" in ece["reason"]


def test_register_promote_rollback(tmp_path: Path):
    registry = LocalRegistry(tmp_path)
    model = PopularityRecommender().fit(make_interactions())
    for n in (1, 2, 3):
        registry.register(model, manifest(registry.next_version(), 0.1 * n))
    assert [m.version for m in registry.list()] == ["v0001", "v0002", "v0003"]
    assert registry.production() is None
    with pytest.raises(RegistryError, match="no production bundle"):
        registry.load_model()
    for v in ("v0001", "v0002", "v0003"):
        registry.promote(v)
    assert registry.rollback().version == "v0002"  # a stack: each rollback goes one further back
    assert registry.rollback().version == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    assert [m.promoted for m in registry.list()] == [True, False, False]
    loaded = registry.load_model()
    assert np.array_equal(loaded.recommend(["u1"], k=3)[0], model.recommend(["u1"], k=3)[0])
    with pytest.raises(RegistryError, match="no bundle 'v9'"):
        registry.get("v9")
    with pytest.raises(RegistryError, match="exists already"):
        registry.register(model, manifest("v0001", 0.5))


def test_a_bundle_built_for_other_features_is_refused_when_it_loads(tmp_path: Path):
    registry = LocalRegistry(tmp_path)
    registry.register(
        PopularityRecommender().fit(make_interactions()), manifest("v0001", 0.1, schema="0123456789abcdef")
    )
    with pytest.raises(IncompatibleBundle, match="built for feature schema 0123456789abcdef"):
        registry.load_model("v0001")
