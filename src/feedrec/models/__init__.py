"""Models behind one contract. ``build_model(name, cfg)`` makes a configured model by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feedrec.config import FeedrecConfig
    from feedrec.models.base import Recommender

#: Every model ``feedrec eval --models`` knows.
MODEL_NAMES: tuple[str, ...] = ("popularity", "popularity_recent", "covisit", "als")


def build_model(name: str, cfg: FeedrecConfig) -> Recommender:
    """A new, unfitted model named ``name`` with its hyperparameters from ``cfg.models``."""
    from feedrec.models.retrieval.als import ALSRecommender
    from feedrec.models.retrieval.covisit import CovisitRecommender
    from feedrec.models.retrieval.popularity import PopularityRecommender

    if name in ("popularity", "popularity_recent"):
        return PopularityRecommender(**getattr(cfg.models, name).model_dump())
    if name == "covisit":
        return CovisitRecommender(**cfg.models.covisit.model_dump())
    if name == "als":
        return ALSRecommender(**cfg.models.als.model_dump(), num_threads=cfg.threads)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
