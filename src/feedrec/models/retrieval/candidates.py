"""The candidate set: several retrieval sources merged under per-source quotas.

Each source is a fitted Recommender (two-tower over an ANN index, ALS, co-visitation, trending per
segment, fresh, content-based). For each user the merger takes each source's top ``quotas[name]``
unseen items, drops hidden ones, deduplicates, and orders the union by reciprocal-rank fusion
(sum over sources of ``weight / (fusion_k + rank)``), keeping for each candidate the source that ranked
it highest.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.models.base import PAD_ID, NotFittedError, Recommender, top_k
from feedrec.models.retrieval.fresh import FreshRecommender
from feedrec.models.retrieval.trending import TrendingRecommender


class CandidateRecommender(Recommender):
    """``sources``: name -> {"class": "module.Class", "params": {...}}; ``quotas``: name -> items."""

    _state_attrs = ("hidden_",)
    hidden_: np.ndarray  # (m,) int64 keys user_idx * n_items + item_idx of hidden pairs
    sources_: dict[str, Recommender]

    def __init__(
        self,
        sources: dict[str, dict[str, Any]],
        quotas: dict[str, int],
        weights: dict[str, float] | None = None,
        fusion_k: float = 60.0,
    ) -> None:
        self.sources = sources
        self.quotas = quotas
        self.weights = weights
        self.fusion_k = fusion_k

    def _validate_params(self) -> None:
        missing = set(self.quotas) - set(self.sources)
        if missing or not self.quotas:
            raise ValueError(f"quotas name unknown sources {sorted(missing)}; sources: {sorted(self.sources)}")
        if any(q < 1 for q in self.quotas.values()):
            raise ValueError("every quota must be >= 1")
        if any(w < 0 for w in (self.weights or {}).values()):
            raise ValueError("fusion weights must be >= 0")

    @staticmethod
    def _make(spec: dict[str, Any]) -> Recommender:
        module, _, name = str(spec["class"]).rpartition(".")
        model: Recommender = getattr(importlib.import_module(module), name)(**spec.get("params", {}))
        return model

    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        self.sources_ = {name: self._make(self.sources[name]).fit(interactions, side) for name in self.quotas}
        hidden = np.empty(0, np.int64)
        if side is not None and side.hidden is not None and side.hidden.num_rows:
            hu = interactions.users.lookup([str(x) for x in side.hidden.column("user_id").to_pylist()])
            hi = interactions.items.lookup([str(x) for x in side.hidden.column("item_id").to_pylist()])
            ok = (hu >= 0) & (hi >= 0)
            hidden = np.unique(hu[ok] * interactions.n_items + hi[ok])
        self.hidden_ = hidden

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the candidate set is a merge of ranked lists, not a dense score")

    def candidate_table(self, user_ids: np.ndarray | list[str], k: int, *, exclude_seen: bool = True) -> pl.DataFrame:
        """Up to ``k`` fused candidates per user, one row each: ``row`` (the user's position in
        ``user_ids``), ``item``, ``rrf`` (fused score), ``pos`` (fused rank), ``source`` (the source
        that ranked it highest), and per source ``rank_<name>`` / ``score_<name>`` (null when that
        source did not propose it). The ranking stage reads its features from here."""
        if not hasattr(self, "sources_"):
            raise NotFittedError("CandidateRecommender is not fitted; call fit() or load() first")
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        frames = []
        for name, model in self.sources_.items():
            ids, scores = model.recommend(users, k=self.quotas[name], exclude_seen=exclude_seen)
            grid = np.indices(ids.shape)
            rows, ranks = grid[0], grid[1]
            valid = ids != PAD_ID
            frames.append(
                pl.DataFrame(
                    {
                        "row": rows[valid],
                        "item": ids[valid],
                        "rank": ranks[valid],
                        "score": scores[valid].astype(np.float64),
                        "source": np.full(int(valid.sum()), name),
                        "weight": np.full(int(valid.sum()), (self.weights or {}).get(name, 1.0)),
                    }
                )
            )
        merged = pl.concat(frames).with_columns((pl.col("weight") / (self.fusion_k + 1 + pl.col("rank"))).alias("rrf"))
        if self.hidden_.size:
            uidx = self.user_index().lookup(users)[merged["row"].to_numpy()]
            iidx = self.item_index().lookup(merged["item"].to_numpy())
            is_hidden = np.isin(uidx * self.item_ids_.size + iidx, self.hidden_) & (uidx >= 0) & (iidx >= 0)
            merged = merged.filter(~pl.Series(is_hidden))
        fused = (
            merged.sort("rank")
            .group_by("row", "item", maintain_order=True)
            .agg(pl.col("rrf").sum(), pl.col("source").first())
            .sort(["row", "rrf", "item"], descending=[False, True, False])
            .with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
            .filter(pl.col("pos") < k)
        )
        per_source = merged.pivot(
            on="source", index=["row", "item"], values=["rank", "score"], aggregate_function="first"
        )
        for name in self.sources_:  # a source that proposed nothing still gets its columns
            for kind in ("rank", "score"):
                if f"{kind}_{name}" not in per_source.columns:
                    per_source = per_source.with_columns(pl.lit(None, pl.Float64).alias(f"{kind}_{name}"))
        return fused.join(per_source, on=["row", "item"], how="left").sort(["row", "pos"])

    def recommend_with_sources(
        self, user_ids: np.ndarray | list[str], k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item_ids (n, k), fused scores (n, k), source of each candidate (n, k))."""
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        fused = self.candidate_table(users, k, exclude_seen=exclude_seen)
        out_ids = np.full((users.size, k), PAD_ID, dtype=object)
        out_scores = np.full((users.size, k), np.nan, np.float32)
        out_src = np.full((users.size, k), "", dtype=object)
        r, p = fused["row"].to_numpy(), fused["pos"].to_numpy()
        out_ids[r, p] = fused["item"].to_numpy()
        out_scores[r, p] = fused["rrf"].to_numpy()
        out_src[r, p] = fused["source"].to_numpy()
        return out_ids.astype(str), out_scores, out_src.astype(str)

    def recommend(
        self, user_ids: np.ndarray | list[str], k: int = 10, *, exclude_seen: bool = True, batch_size: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, scores, _ = self.recommend_with_sources(user_ids, k, exclude_seen=exclude_seen)
        return ids, scores

    def recommend_new_users(
        self,
        attributes: list[dict[str, object]],
        k: int = 10,
        *,
        weights: dict[str, float] | None = None,
        exploration: float = 0.1,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A feed for users with no history, fusing (by weighted reciprocal rank) their segment's
        trend, all-time popularity and fresh items; ``exploration`` of the slots go to random picks
        among the 200 freshest items, so new items get exposure."""
        if not hasattr(self, "sources_"):
            raise NotFittedError("CandidateRecommender is not fitted; call fit() or load() first")
        if not 0 <= exploration < 1:
            raise ValueError(f"exploration must be in [0, 1), got {exploration}")
        weights = {"popularity": 1.0, "trending": 0.5, "fresh": 0.2} if weights is None else weights
        n_items = self.item_ids_.size
        components: dict[str, np.ndarray] = {
            "popularity": np.broadcast_to(self.item_counts_, (len(attributes), n_items))
        }
        trending = self.sources_.get("trending")
        if isinstance(trending, TrendingRecommender):
            components["trending"] = trending.scores_for_attributes(attributes)
        fresh = self.sources_.get("fresh")
        if isinstance(fresh, FreshRecommender):
            components["fresh"] = np.broadcast_to(fresh.scores_, (len(attributes), n_items))
        fused = np.zeros((len(attributes), n_items))
        for name, scores in components.items():
            ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
            fused += weights.get(name, 0.0) / (self.fusion_k + 1 + ranks)
        idx, out = top_k(fused, min(k, n_items))
        n_explore = int(np.ceil(exploration * idx.shape[1])) if exploration > 0 and "fresh" in components else 0
        if n_explore:
            rng = np.random.default_rng(seed)
            pool = np.argsort(-components["fresh"][0], kind="stable")[:200]
            for r in range(idx.shape[0]):
                options = np.setdiff1d(pool, idx[r, : idx.shape[1] - n_explore])
                picks = rng.choice(options, size=min(n_explore, options.size), replace=False)
                idx[r, idx.shape[1] - picks.size :] = picks
                out[r, idx.shape[1] - picks.size :] = 0.0
        return self.item_ids_[idx], out.astype(np.float32)

    def _save_extra(self, path: Path) -> None:
        for name, model in self.sources_.items():
            model.save(path / "sources" / name)

    def _load_extra(self, path: Path) -> None:
        self.sources_ = {name: Recommender.load(path / "sources" / name) for name in self.quotas}
