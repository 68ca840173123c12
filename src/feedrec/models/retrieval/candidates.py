"""The candidate set: several retrieval sources merged under per-source quotas.

Each source is a fitted Recommender (two-tower over an ANN index, ALS, co-visitation, trending per
segment, fresh, content-based). For each user the merger takes each source's top ``quotas[name]``
unseen items, drops hidden ones, deduplicates, and orders the union by reciprocal-rank fusion
(sum over sources of ``weight / (fusion_k + rank)``), keeping for each candidate the source that ranked
it highest.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.models.base import PAD_ID, CandidateSet, NotFittedError, Recommender, top_k
from feedrec.models.retrieval.fresh import FreshRecommender
from feedrec.models.retrieval.trending import TrendingRecommender

USER_BLOCK = 2048  # users per candidate set when recommending for many: memory stays bounded


def user_blocks(n_users: int) -> list[slice]:
    """Consecutive blocks of at most ``USER_BLOCK`` users. Every batch path cuts the same way, so
    the lists one memoized (``reusing_fits``, ``reusing_source_lists``) serve the others."""
    return [slice(lo, min(lo + USER_BLOCK, n_users)) for lo in range(0, n_users, USER_BLOCK)]


@dataclass
class _Fits:
    """What ``reusing_fits`` keeps: (sources, interactions, side) -> (the fitted sources, hidden
    pairs, the memo of their lists, the side information itself, so that its id stays its own),
    and the models that share a memo (released at the end)."""

    fits: dict[tuple[str, str, int], tuple[dict[str, Recommender], np.ndarray, dict[Any, Any], object]] = field(
        default_factory=dict
    )
    sharing: list[CandidateRecommender] = field(default_factory=list)


_FITS: ContextVar[_Fits | None] = ContextVar("feedrec_candidate_fits", default=None)


@contextmanager
def reusing_fits() -> Iterator[None]:
    """Within the block, fitting a CandidateRecommender with the same sources on interactions and
    side information it was already fitted on reuses that fit, and the lists its sources already
    returned for the same users: a training run fits the same split more than once (tuning, then
    the pipeline), and each fit of the sources costs minutes at scale. The fits are kept until
    the block ends; after it, the models fitted inside it stop memoizing lists."""
    cache = _Fits()
    token = _FITS.set(cache)
    try:
        yield
    finally:
        _FITS.reset(token)
        for model in cache.sharing:
            model.__dict__.pop("_memo", None)


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
        cache = _FITS.get()
        key = None
        if cache is not None:
            spec = json.dumps({name: self.sources[name] for name in self.quotas}, sort_keys=True, default=str)
            key = (spec, interactions.fingerprint(), id(side))
            if key in cache.fits:
                self.sources_, self.hidden_, memo, _ = cache.fits[key]
                self.__dict__["_memo"] = memo
                cache.sharing.append(self)
                return
        self.sources_ = {name: self._make(self.sources[name]).fit(interactions, side) for name in self.quotas}
        hidden = np.empty(0, np.int64)
        if side is not None and side.hidden is not None and side.hidden.num_rows:
            hu = interactions.users.lookup([str(x) for x in side.hidden.column("user_id").to_pylist()])
            hi = interactions.items.lookup([str(x) for x in side.hidden.column("item_id").to_pylist()])
            ok = (hu >= 0) & (hi >= 0)
            hidden = np.unique(hu[ok] * interactions.n_items + hi[ok])
        self.hidden_ = hidden
        if cache is not None and key is not None:
            self.__dict__["_memo"] = cache.fits.setdefault(key, (self.sources_, self.hidden_, {}, side))[2]
            cache.sharing.append(self)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the candidate set is a merge of ranked lists, not a dense score")

    def candidate_set(self, user_ids: np.ndarray | list[str], k: int, *, exclude_seen: bool = True) -> CandidateSet:
        """Up to ``k`` fused candidates per user, as arrays (the serving path: no data frames)."""
        if not hasattr(self, "sources_"):
            raise NotFittedError("CandidateRecommender is not fitted; call fit() or load() first")
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        names = list(self.sources_)
        n_items = self.item_ids_.size
        parts: list[tuple[np.ndarray, ...]] = []
        memo: dict[tuple[str, int, int, bool], tuple[np.ndarray, np.ndarray]] | None = self.__dict__.get("_memo")
        for s, (name, model) in enumerate(self.sources_.items()):
            key = (name, hash(users.tobytes()), self.quotas[name], exclude_seen)
            if memo is not None and key in memo:
                idx, scores = memo[key]
            else:
                idx, scores = model.recommend_indices(users, k=self.quotas[name], exclude_seen=exclude_seen)
                if memo is not None:
                    memo[key] = (idx, scores)
            rows, ranks = np.nonzero(idx >= 0)
            parts.append((rows, idx[rows, ranks], ranks, scores[rows, ranks].astype(np.float64), np.full(rows.size, s)))
        row, item, rank, score, source = (np.concatenate(col) for col in zip(*parts, strict=True))
        if self.hidden_.size:
            uidx = self.user_index().lookup(users)[row]
            keep = ~(np.isin(uidx * n_items + item, self.hidden_) & (uidx >= 0))
            row, item, rank, score, source = row[keep], item[keep], rank[keep], score[keep], source[keep]
        if row.size == 0:  # nothing proposed (or all of it hidden)
            empty = np.empty(0, np.int64)
            return CandidateSet(
                empty, empty, np.empty(0), empty, empty, np.empty((0, len(names))), np.empty((0, len(names))), names
            )
        weight = np.array([(self.weights or {}).get(name, 1.0) for name in names])[source]
        pair, inverse = np.unique(row * n_items + item, return_inverse=True)
        rrf = np.bincount(inverse, weights=weight / (self.fusion_k + 1 + rank), minlength=pair.size)
        # The credited source: the one that ranked the item highest (ties: the first listed).
        order = np.lexsort((source, rank, inverse))
        first = order[np.r_[True, inverse[order][1:] != inverse[order][:-1]]]
        best = np.empty(pair.size, np.int64)
        best[inverse[first]] = source[first]
        rank_m = np.full((pair.size, len(names)), np.nan)
        score_m = np.full((pair.size, len(names)), np.nan)
        rank_m[inverse, source], score_m[inverse, source] = rank, score
        prow, pitem = pair // n_items, pair % n_items
        order = np.lexsort((pitem, -rrf, prow))  # per user: fused score, then item id
        prow = prow[order]
        starts = np.searchsorted(prow, prow, side="left")
        pos = np.arange(prow.size) - starts
        keep = order[pos < k]
        return CandidateSet(
            row=pair[keep] // n_items,
            item=pair[keep] % n_items,
            rrf=rrf[keep],
            pos=pos[pos < k],
            source=best[keep],
            rank=rank_m[keep],
            score=score_m[keep],
            names=names,
        )

    @contextmanager
    def reusing_source_lists(self) -> Iterator[None]:
        """Within the block, each source's list for the same users is computed once and reused:
        re-weighting the fusion (tuning) changes nothing a source returns. Quotas must not change."""
        if "_memo" in self.__dict__:  # already reusing (a fit made inside ``reusing_fits``)
            yield
            return
        self.__dict__["_memo"] = {}
        try:
            yield
        finally:
            self.__dict__.pop("_memo", None)

    def candidate_table(self, user_ids: np.ndarray | list[str], k: int, *, exclude_seen: bool = True) -> pl.DataFrame:
        """``candidate_set`` as a frame, one row per candidate: ``row`` (the user's position in
        ``user_ids``), ``item``, ``rrf`` (fused score), ``pos`` (fused rank), ``source`` (the source
        that ranked it highest), and per source ``rank_<name>`` / ``score_<name>`` (null when that
        source did not propose it). The ranking stage's training reads its features from here."""
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        frames = []
        for block in user_blocks(users.size) or [slice(0, 0)]:  # a block at a time: bounded memory
            c = self.candidate_set(users[block], k, exclude_seen=exclude_seen)
            columns: dict[str, object] = {
                "row": block.start + c.row,
                "item": self.item_ids_[c.item],
                "rrf": c.rrf,
                "source": np.asarray(c.names)[c.source] if c.names else np.empty(0, str),
                "pos": c.pos,
            }
            for s, name in enumerate(c.names):
                columns[f"rank_{name}"] = pl.Series(c.rank[:, s], nan_to_null=True)
                columns[f"score_{name}"] = pl.Series(c.score[:, s], nan_to_null=True)
            frames.append(pl.DataFrame(columns))
        return pl.concat(frames).with_columns(pl.col("pos").cast(pl.Int64), pl.col("row").cast(pl.Int64))

    def recommend_with_sources(
        self, user_ids: np.ndarray | list[str], k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item_ids (n, k), fused scores (n, k), source of each candidate (n, k))."""
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        out_ids = np.full((users.size, k), PAD_ID, dtype=object)
        out_scores = np.full((users.size, k), np.nan, np.float32)
        out_src = np.full((users.size, k), "", dtype=object)
        for block in user_blocks(users.size):
            c = self.candidate_set(users[block], k, exclude_seen=exclude_seen)
            rows = block.start + c.row
            out_ids[rows, c.pos] = self.item_ids_[c.item]
            out_scores[rows, c.pos] = c.rrf
            out_src[rows, c.pos] = np.asarray(c.names, dtype=object)[c.source]
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
