"""Models behind one contract. ``build_model(name, cfg)`` makes a configured model by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feedrec.config import FeedrecConfig
    from feedrec.models.base import Recommender

#: Every model ``feedrec eval --models`` knows; ``candidates`` merges the retrieval sources and
#: ``feedrec`` is the whole pipeline (candidates, then a learned ranker).
MODEL_NAMES: tuple[str, ...] = (
    "popularity",
    "popularity_recent",
    "covisit",
    "als",
    "two_tower",
    "trending",
    "fresh",
    "content",
    "ease",
    "candidates",
    "feedrec",
)


def build_model(name: str, cfg: FeedrecConfig) -> Recommender:
    """A new, unfitted model named ``name`` with its hyperparameters from ``cfg.models``."""
    from feedrec.models.feed import FeedRecommender
    from feedrec.models.retrieval.als import ALSRecommender
    from feedrec.models.retrieval.candidates import CandidateRecommender
    from feedrec.models.retrieval.content import ContentRecommender
    from feedrec.models.retrieval.covisit import CovisitRecommender
    from feedrec.models.retrieval.ease import EASERecommender
    from feedrec.models.retrieval.fresh import FreshRecommender
    from feedrec.models.retrieval.popularity import PopularityRecommender
    from feedrec.models.retrieval.trending import TrendingRecommender
    from feedrec.models.retrieval.two_tower import TwoTowerRecommender

    m = cfg.models
    makers = {
        "popularity": lambda: PopularityRecommender(**m.popularity.model_dump()),
        "popularity_recent": lambda: PopularityRecommender(**m.popularity_recent.model_dump()),
        "covisit": lambda: CovisitRecommender(**m.covisit.model_dump()),
        "als": lambda: ALSRecommender(**m.als.model_dump(), num_threads=cfg.threads),
        "two_tower": lambda: TwoTowerRecommender(**m.two_tower.model_dump(), num_threads=cfg.threads),
        "trending": lambda: TrendingRecommender(**m.trending.model_dump()),
        "fresh": lambda: FreshRecommender(**m.fresh.model_dump()),
        "content": lambda: ContentRecommender(**m.content.model_dump()),
        "ease": lambda: EASERecommender(**m.ease.model_dump()),
    }
    if name in ("candidates", "feedrec"):
        sources = {}
        for source in m.candidates.quotas:
            model = makers[source]()
            if isinstance(model, TwoTowerRecommender):
                model.ann = m.candidates.ann
            klass = type(model)
            sources[source] = {"class": f"{klass.__module__}.{klass.__qualname__}", "params": model.get_params()}
        params: dict[str, Any] = {
            "sources": sources,
            "quotas": dict(m.candidates.quotas),
            "weights": dict(m.candidates.weights),
            "fusion_k": m.candidates.fusion_k,
        }
        if name == "candidates":
            return CandidateRecommender(**params)
        ranker = m.feedrec.ranker.model_dump() | {"num_threads": cfg.threads}
        rerank = m.feedrec.rerank.model_dump() if m.feedrec.rerank is not None else None
        return FeedRecommender(
            candidates=params, ranker=ranker, rerank=rerank, **m.feedrec.model_dump(exclude={"ranker", "rerank"})
        )
    if name not in makers:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return makers[name]()
