"""``feedrec models compress``: an int8 twin of a bundle, registered only if the gate lets it through.

load the bundle -> rebuild its two-tower item index over 8-bit vectors -> evaluate both on the
store's held-out test part (the part ``feedrec train`` scores on and never trains on) -> the gate:
refuse when NDCG@10 drops by more than the allowed loss -> register the twin as a new version with
the comparison in its manifest (it is not promoted: ``feedrec models promote`` serves it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from feedrec.config import FeedrecConfig
from feedrec.models.compress import CompressionGate, GateResult, compress_retrieval, index_bytes
from feedrec.offline.jobs import load_store_events, load_store_side
from feedrec.offline.protocol import (
    dedupe_earliest,
    evaluate_recommender,
    item_topics,
    sample_test_users,
    targets_after,
)
from feedrec.offline.split import train_valid_test
from feedrec.workspace import Workspace


@dataclass
class CompressResult:
    source: str
    version: str | None  # the registered twin; None when the gate refused it
    gate: GateResult
    bytes_before: int
    bytes_after: int


def compress_bundle(
    cfg: FeedrecConfig,
    version: str,
    *,
    kind: str | None = None,
    gate: CompressionGate | None = None,
    max_loss: float | None = None,
) -> CompressResult:
    """Register an int8 twin of ``version`` if its NDCG@k on the split's test part stays within the
    gate (``max_loss``: the largest relative loss, when no gate is given)."""
    if gate is None:
        loss = {"max_relative_loss": max_loss} if max_loss is not None else {}
        gate = CompressionGate(metric=f"ndcg@{cfg.eval.k}", **loss)
    space = Workspace.from_config(cfg)
    registry = space.registry
    manifest = registry.get(version)
    model = registry.load_model(version)
    compressed = compress_retrieval(model, kind)
    if compressed is model:
        raise ValueError(f"{version} ({manifest.model}) has no two-tower item index to compress")

    events = load_store_events(space, cfg).select("user_id", "item_id", "timestamp")
    split = train_valid_test(dedupe_earliest(events), cfg.split)  # the test part train set aside
    data = sample_test_users(targets_after(split.rest, split.test), cfg.eval.max_test_users)
    side = load_store_side(space)
    metric = f"ndcg@{cfg.eval.k}"

    def score(m: object) -> float:
        return evaluate_recommender(m, data, k=cfg.eval.k, item_topics=item_topics(side, data))[metric]  # type: ignore[arg-type]

    verdict = gate.check(score(model), score(compressed))
    before, after = index_bytes(model), index_bytes(compressed)
    if not verdict.accepted:
        return CompressResult(version, None, verdict, before, after)
    twin = dataclasses.replace(
        manifest,
        version=registry.next_version(),
        created_at=datetime.now(UTC).isoformat(),
        params=manifest.params | {"compressed_from": version, "index": "int8"},
        metrics=manifest.metrics
        | {"compression": {"reference": verdict.reference, "compressed": verdict.compressed, "bytes": after}},
        promoted=False,
        gate={"promote": False, "reason": f"int8 twin of {version}: {verdict.reason}"},
    )
    registry.register(compressed, twin)
    return CompressResult(version, twin.version, verdict, before, after)
