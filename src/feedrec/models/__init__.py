"""Models behind one contract. ``build_model(name, cfg)`` makes a configured model by name.

Each model is declared once, as its field of ``feedrec.config.ModelsConfig`` (``ModelDecl``: class,
threads, search space, test settings); everything here is derived from that table.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from feedrec.config import MODEL_NAMES, ModelDecl, model_table

if TYPE_CHECKING:
    from feedrec.config import FeedrecConfig
    from feedrec.models.base import Recommender

__all__ = ["MODEL_NAMES", "build_model", "model_class", "model_for_tests"]


def model_class(decl: ModelDecl) -> Any:
    """The class a declaration names (a ``Recommender`` subclass), imported now."""
    module, _, name = decl.cls.partition(":")
    return getattr(importlib.import_module(module), name)


def _params(name: str, cfg: FeedrecConfig) -> dict[str, Any]:
    decl = model_table()[name]
    params: dict[str, Any] = getattr(cfg.models, name).model_dump()
    return params | ({"num_threads": cfg.threads} if decl.threads else {})


def build_model(name: str, cfg: FeedrecConfig) -> Recommender:
    """A new, unfitted model named ``name`` with its hyperparameters from ``cfg.models``."""
    table = model_table()
    if name not in table:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    if name not in ("candidates", "feedrec"):
        model: Recommender = model_class(table[name])(**_params(name, cfg))
        return model
    m = cfg.models
    sources = {}
    for source in m.candidates.quotas:
        params = _params(source, cfg)
        if "ann" in params:  # the two-tower source searches the candidate set's index
            params["ann"] = m.candidates.ann
        klass = model_class(table[source])
        sources[source] = {"class": f"{klass.__module__}.{klass.__qualname__}", "params": params}
    merged: dict[str, Any] = {
        "sources": sources,
        "quotas": dict(m.candidates.quotas),
        "weights": dict(m.candidates.weights),
        "fusion_k": m.candidates.fusion_k,
    }
    if name == "candidates":
        candidates: Recommender = model_class(table["candidates"])(**merged)
        return candidates
    ranker = m.feedrec.ranker.model_dump() | {"num_threads": cfg.threads}
    rerank = m.feedrec.rerank.model_dump() if m.feedrec.rerank is not None else None
    feed: Recommender = model_class(table["feedrec"])(
        candidates=merged, ranker=ranker, rerank=rerank, **m.feedrec.model_dump(exclude={"ranker", "rerank"})
    )
    return feed


def model_for_tests(name: str, **overrides: Any) -> Recommender:
    """``name`` with its declared test settings (small and fast): what the conformance suite fits."""
    decl = model_table()[name]
    model: Recommender = model_class(decl)(**(decl.test_params | overrides))
    return model
