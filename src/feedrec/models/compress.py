"""int8 compression of what the server runs, and the gate that refuses one that costs quality.

- The deep ranker: ``MultiTaskRanker.quantized()`` (PyTorch dynamic quantization of its linear
  layers: int8 weights, activations quantized on the fly).
- Item embeddings in the ANN index: ``compress_retrieval`` rebuilds every two-tower source's index
  over 8-bit scalar-quantized vectors (faiss ``SQ8``, or ``HNSW_SQ8`` for the graph), 4x smaller.

``CompressionGate`` compares the compressed model with its fp32 original on the same evaluation and
refuses it when NDCG@10 drops by more than ``max_relative_loss`` (1 % by default).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from feedrec.models.base import Recommender
from feedrec.models.feed import FeedRecommender
from feedrec.models.index import FaissIndex
from feedrec.models.retrieval.candidates import CandidateRecommender
from feedrec.models.retrieval.two_tower import TwoTowerRecommender

INT8_TWIN = {"exact": "sq8", "flat": "sq8", "hnsw": "hnsw_sq8"}


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    reference: float
    compressed: float
    relative_loss: float
    reason: str


@dataclass(frozen=True)
class CompressionGate:
    max_relative_loss: float = 0.01
    metric: str = "ndcg@10"

    def check(self, reference: float, compressed: float) -> GateResult:
        """Accept ``compressed`` when it keeps at least (1 - max_relative_loss) of ``reference``."""
        loss = (reference - compressed) / reference if reference > 0 else 0.0
        accepted = loss <= self.max_relative_loss
        verdict = "within" if accepted else "over"
        reason = (
            f"{self.metric} {reference:.4f} -> {compressed:.4f} ({-loss:+.2%}): "
            f"{verdict} the {self.max_relative_loss:.0%} allowed loss"
        )
        return GateResult(accepted, reference, compressed, loss, reason)


def compress_retrieval(model: Recommender, kind: str | None = None) -> Recommender:
    """A copy of ``model`` whose two-tower item index (inside a feed or a candidate set too) holds
    8-bit vectors: ``kind`` (``sq8`` or ``hnsw_sq8``), or the int8 twin of the current index."""
    if isinstance(model, TwoTowerRecommender):
        twin = copy.copy(model)
        twin.ann = kind or INT8_TWIN.get(model.ann, "hnsw_sq8")
        twin._index = FaissIndex(twin.ann, seed=model.seed).build(model.item_emb_)
        twin.__dict__.pop("_static_cache", None)
        return twin
    if isinstance(model, CandidateRecommender):
        twin_c = copy.copy(model)
        twin_c.sources_ = {name: compress_retrieval(source, kind) for name, source in model.sources_.items()}
        return twin_c
    if isinstance(model, FeedRecommender):
        twin_f = copy.copy(model)
        compressed = compress_retrieval(model.candidates_, kind)
        assert isinstance(compressed, CandidateRecommender)
        twin_f.candidates_ = compressed
        return twin_f
    return model  # nothing in it to compress


def index_bytes(model: Recommender) -> int:
    """Total size of the ANN indexes a model serves from."""
    if isinstance(model, TwoTowerRecommender):
        return model._index.memory_bytes if model._index is not None else int(model.item_emb_.nbytes)
    if isinstance(model, CandidateRecommender):
        return sum(index_bytes(s) for s in model.sources_.values())
    if isinstance(model, FeedRecommender):
        return index_bytes(model.candidates_)
    return 0
