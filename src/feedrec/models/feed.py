"""``feedrec``: the whole pipeline as one model. Retrieve (candidates) -> rank (LightGBM) -> re-rank.

Fitting is two-stage, as production feeds train:
1. carve each user's latest ``valid_ratio`` of interactions off the training data;
2. fit the candidate sources on the rest and retrieve ``n_candidates`` for each carved user;
3. learn a LambdaMART ranker on those candidates (label: the user engaged with it in the carve) plus
   ``n_sampled_negatives`` random items per user (the ranking set's sampled negatives; at most
   ``max_ranker_users`` carved users, sampled),
   with features from every source (rank, score), the fused score, and user/item activity; a fifth
   of the carved users are held out for the ranker's early stopping;
4. refit the candidate sources on all the training data, for serving.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideEncoder, SideInfo
from feedrec.models.base import PAD_ID, CandidateSet, NotFittedError, Recommender, RequestContext, ServedPipeline
from feedrec.models.ranking.base import RankingSet
from feedrec.models.ranking.gbdt import GBDTRanker
from feedrec.models.ranking.realtime import SERVED_POSITION, RealtimeRanker
from feedrec.models.rerank import BusinessRules, ItemCatalog, ReRanker
from feedrec.models.retrieval.candidates import USER_BLOCK, CandidateRecommender, user_blocks
from feedrec.models.sampling import Strategy, draw_items


class FeedRecommender(Recommender):
    _state_attrs = ("item_topics_", "item_creator_", "item_created_", "now_")
    candidates_: CandidateRecommender
    ranker_: GBDTRanker
    item_topics_: sp.csr_matrix  # for re-ranking: topics, creators and publish times of the catalogue
    item_creator_: np.ndarray
    item_created_: np.ndarray
    now_: np.ndarray  # () the time of the last training interaction (freshness is measured from it)
    # The served impression ranker on real-time features (``feedrec.offline.realtime`` fits it on
    # logged impressions after the pipeline; None: the retrieval-feature ranker serves).
    realtime_: RealtimeRanker | None = None

    def __init__(
        self,
        candidates: dict[str, Any],
        ranker: dict[str, Any] | None = None,
        rerank: dict[str, Any] | None = None,
        n_candidates: int = 200,
        n_sampled_negatives: int = 20,
        negative_strategy: Strategy = "uniform",
        negative_exponent: float = 0.75,
        valid_ratio: float = 0.1,
        max_ranker_users: int | None = None,
        seed: int = 42,
        serve_ranker: str = "realtime",
        realtime_top: int = 200,
    ) -> None:
        self.candidates = candidates
        self.ranker = ranker
        self.rerank = rerank
        self.n_candidates = n_candidates
        self.n_sampled_negatives = n_sampled_negatives
        self.negative_strategy = negative_strategy
        self.negative_exponent = negative_exponent
        self.valid_ratio = valid_ratio
        self.max_ranker_users = max_ranker_users
        self.seed = seed
        self.serve_ranker = serve_ranker
        self.realtime_top = realtime_top

    def _validate_params(self) -> None:
        if self.n_candidates < 1 or self.n_sampled_negatives < 0 or not 0 < self.valid_ratio < 1:
            raise ValueError("n_candidates must be >= 1, n_sampled_negatives >= 0 and valid_ratio in (0, 1)")

    # -- features ---------------------------------------------------------------------------------
    def _feature_names(self) -> list[str]:
        names = ["rrf", "pos", "n_sources", "item_log_count", "user_log_count"]
        for source in self.candidates["quotas"]:
            names += [f"rank_{source}", f"full_{source}"]
        return names

    def _feature_matrix(
        self,
        model: CandidateRecommender,
        users: np.ndarray,
        row: np.ndarray,
        item: np.ndarray,
        rrf: np.ndarray,
        pos: np.ndarray,
        rank: np.ndarray,
    ) -> np.ndarray:
        """The ranking features of candidates (``item`` catalogue positions of ``users[row]``), in
        ``_feature_names`` order; ``rank`` is (c, n_sources), NaN where a source did not propose it."""
        uidx = model.user_index().lookup(users)
        history = np.where(uidx >= 0, np.diff(model.user_items_.indptr)[np.maximum(uidx, 0)], 0)
        row_uidx = uidx[row]
        known = np.flatnonzero(row_uidx >= 0)
        columns = [
            rrf,
            pos,
            (~np.isnan(rank)).sum(axis=1),
            np.log1p(model.item_counts_[item]),
            np.log1p(history[row].astype(np.float64)),
        ]
        for s, source in enumerate(self.candidates["quotas"]):
            # Every source's score of every candidate, not only of those it proposed itself.
            full = np.full(row.size, np.nan)
            if known.size:
                full[known] = model.sources_[source]._score_pairs(row_uidx[known], item[known])
            columns += [rank[:, s], full]
        return np.column_stack(columns).astype(np.float32)

    def _table_features(self, table: pl.DataFrame, model: CandidateRecommender, users: np.ndarray) -> np.ndarray:
        rank = table.select([pl.col(f"rank_{s}").cast(pl.Float64) for s in self.candidates["quotas"]]).to_numpy()
        return self._feature_matrix(
            model,
            users,
            table["row"].to_numpy(),
            model.item_index().lookup(table["item"].to_numpy()),
            table["rrf"].to_numpy().astype(np.float64),
            table["pos"].to_numpy().astype(np.float64),
            rank,
        )

    # -- training ---------------------------------------------------------------------------------
    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        carve = interactions.latest_mask(self.valid_ratio)
        early = interactions.subset(~carve)
        stage1 = CandidateRecommender(**self.candidates).fit(early, side)
        truth = pl.DataFrame(
            {
                "user": interactions.users.ids[interactions.user_idx[carve]],
                "item": interactions.items.ids[interactions.item_idx[carve]],
            }
        ).unique()
        users = np.sort(truth["user"].unique().to_numpy().astype(str))
        users = users[early.users.lookup(users) >= 0]
        if self.max_ranker_users is not None and users.size > self.max_ranker_users:  # bounded ranking set
            rng = np.random.default_rng(self.seed + 2)
            users = np.sort(rng.choice(users, self.max_ranker_users, replace=False))
        table = stage1.candidate_table(users, self.n_candidates)
        table = table.with_columns(pl.Series("user", users[table["row"].to_numpy()]))
        labels = table.join(truth.with_columns(pl.lit(1.0).alias("label")), on=["user", "item"], how="left")
        if self.n_sampled_negatives:
            labels = pl.concat([labels, self._sampled_negatives(labels, stage1, users, truth)], how="diagonal_relaxed")
        labels = labels.sort(["row", "pos", "item"])
        y = labels["label"].fill_null(0.0).to_numpy().astype(np.float32)
        x = self._table_features(labels, stage1, users)
        rows = labels["row"].to_numpy()
        # LambdaMART learns only from users with at least one engaged candidate.
        has_positive = np.bincount(rows, weights=y, minlength=users.size) > 0
        keep = has_positive[rows]
        rng = np.random.default_rng(self.seed)
        holdout_users = rng.random(users.size) < 0.2
        names = self._feature_names()
        train_rows, valid_rows = keep & ~holdout_users[rows], keep & holdout_users[rows]
        train = RankingSet(x[train_rows], y[train_rows], rows[train_rows].astype(np.int64), names)
        valid = RankingSet(x[valid_rows], y[valid_rows], rows[valid_rows].astype(np.int64), names)
        self.ranker_ = GBDTRanker(**(self.ranker or {}), seed=self.seed).fit(train, valid)
        self.candidates_ = CandidateRecommender(**self.candidates).fit(interactions, side)
        feats = SideEncoder.fit(side).encode_items(side.items if side else None, interactions.items)
        self.item_topics_, self.item_creator_, self.item_created_ = feats.topics, feats.creator, feats.created_at
        self.now_ = np.asarray(float(interactions.timestamps.max()))

    def _sampled_negatives(
        self, labels: pl.DataFrame, model: CandidateRecommender, users: np.ndarray, truth: pl.DataFrame
    ) -> pl.DataFrame:
        """``n_sampled_negatives`` catalogue items per user, drawn by ``negative_strategy`` (uniform,
        or popularity-weighted: harder negatives), outside the user's candidates, history and carve:
        the ranking set's negatives besides the retrieved-but-not-engaged ones."""
        rng = np.random.default_rng(self.seed + 1)
        n = self.n_sampled_negatives
        drawn = pl.DataFrame(
            {
                "row": np.repeat(np.arange(users.size), n),
                "item": model.item_ids_[
                    draw_items(
                        rng,
                        users.size * n,
                        n_items=model.item_ids_.size,
                        strategy=self.negative_strategy,
                        item_counts=model.item_counts_,
                        exponent=self.negative_exponent,
                    )
                ],
            }
        ).with_columns(pl.Series("user", np.repeat(users, n)))
        uidx = model.user_index().lookup(drawn["user"].to_numpy())
        iidx = model.item_index().lookup(drawn["item"].to_numpy())
        seen = np.asarray(model.user_items_[np.maximum(uidx, 0), iidx]).ravel() > 0
        drawn = (
            drawn.filter(~pl.Series(seen))
            .unique(["row", "item"], maintain_order=True)
            .join(labels.select("row", "item"), on=["row", "item"], how="anti")
            .join(truth, on=["user", "item"], how="anti")
        )
        return drawn.with_columns(
            pl.lit(0.0).alias("rrf"),
            pl.lit(self.n_candidates, pl.Int64).alias("pos"),  # beyond every retrieved candidate
            pl.lit(0.0).alias("label"),
        )

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the feed ranks a candidate set, not the dense catalogue")

    # -- serving ----------------------------------------------------------------------------------
    def recommend(
        self, user_ids: np.ndarray | list[str], k: int = 10, *, exclude_seen: bool = True, batch_size: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, scores, _ = self.recommend_with_sources(user_ids, k, exclude_seen=exclude_seen)
        return ids, scores

    def recommend_with_sources(
        self, user_ids: np.ndarray | list[str], k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item_ids (n, k), scores (n, k), the candidate source of each item (n, k); "rule" for a pin)."""
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        if users.size <= USER_BLOCK:
            candidates = self.retrieve(users, k, exclude_seen=exclude_seen)
            return self.arrange(users.size, candidates, self.rank(users, candidates), k)
        # Many users (an evaluation, a batch job): a block at a time, so candidates x features stay bounded.
        parts = [
            self.recommend_with_sources(users[block], k, exclude_seen=exclude_seen) for block in user_blocks(users.size)
        ]
        ids, scores, sources = (np.concatenate(column) for column in zip(*parts, strict=True))
        return ids, scores, sources

    # The three serving stages (``ServedPipeline``), callable one by one so that a server can time
    # and budget each.
    def serving(self) -> ServedPipeline:
        return self

    def retrieve(
        self, users: np.ndarray, k: int = 10, *, exclude: Sequence[str] = (), exclude_seen: bool = True
    ) -> CandidateSet:
        """Stage 1: the fused candidate set (at least ``n_candidates`` per user), without ``exclude``
        (what the users did since training: the server's fresh history)."""
        if not hasattr(self, "ranker_"):
            raise NotFittedError("FeedRecommender is not fitted; call fit() or load() first")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        candidates = self.candidates_.candidate_set(
            users, max(self.n_candidates, k + len(exclude)), exclude_seen=exclude_seen
        )
        if exclude:
            candidates = candidates.take(~np.isin(candidates.item, self.item_index().lookup(list(exclude))))
        return candidates

    def rank(self, users: np.ndarray, c: CandidateSet, context: RequestContext | None = None) -> np.ndarray:
        """Stage 2: the ranker's score of every candidate: the real-time ranker's calibrated P(click)
        when the bundle carries one and the request brings the online features, else the
        retrieval-feature ranker's score."""
        if c.row.size == 0:
            return np.empty(0)
        realtime = self.realtime_ if self.serve_ranker == "realtime" else None
        if realtime is not None and context is not None and context.features is not None:
            # Pre-ranking: the real-time ranker scores each user's best ``realtime_top`` candidates by
            # the fused retrieval score; the rest stay below every scored one, in that order.
            keep = _top_per_row(c.row, c.rrf, self.realtime_top)
            x = self.realtime_matrix(users, c.take(keep), context)
            if context.record is not None:
                items = self.item_ids_[c.item[keep]].tolist()
                context.record.update(items=items, names=realtime.feature_names, matrix=x, predict=realtime.predict)
            scores = -2.0 + 1.0 / (1.0 + np.exp(-np.asarray(c.rrf, np.float64)))  # in (-2, -1): below any P
            scores[keep] = realtime.predict(x)
            return scores
        x = self._feature_matrix(self.candidates_, users, c.row, c.item, c.rrf, c.pos.astype(np.float64), c.rank)
        return np.asarray(self.ranker_.predict(x), np.float64)

    def realtime_matrix(self, users: np.ndarray, c: CandidateSet, context: RequestContext) -> np.ndarray:
        """The real-time ranker's input for one user's candidates ``c`` at ``context.now``: the online
        store's features (scored as if in the top slot), then what retrieval says of each candidate."""
        realtime = self.realtime_
        assert realtime is not None
        if c.row.size and (c.row != c.row[0]).any():
            raise ValueError("the real-time ranker ranks one user's request at a time")
        now = float(self.now_) if context.now is None else context.now
        n = c.row.size
        user = str(users[c.row[0]]) if n else ""
        item_ids = self.item_ids_[c.item].astype(str)
        features = context.features.request_features(
            user, item_ids, int(now * 1_000_000), context.surface, SERVED_POSITION
        )
        sources = realtime.pair_sources
        extra = [pair_scores(self.candidates_, sources, np.full(n, user), item_ids) if sources else np.empty((n, 0))]
        if realtime.rank_sources:
            columns = [c.names.index(s) for s in realtime.rank_sources]
            extra += [c.pos.astype(np.float64)[:, None], c.rank[:, columns].astype(np.float64)]
        return realtime.matrix(features, [context.surface] * n, np.column_stack(extra))

    def arrange(
        self,
        n_users: int,
        c: CandidateSet,
        scores: np.ndarray,
        k: int,
        *,
        rerank: bool = True,
        now: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: each user's top ``k`` by ``scores``, shaped by the re-ranker (unless ``rerank`` is
        off, or none is configured). Returns (item_ids, scores, sources), each (n_users, k)."""
        out_ids = np.full((n_users, k), PAD_ID, dtype=object)
        out_scores = np.full((n_users, k), np.nan, np.float32)
        out_src = np.full((n_users, k), "", dtype=object)
        if c.row.size == 0:  # no user has a candidate: empty feeds
            return out_ids.astype(str), out_scores, out_src.astype(str)
        names = np.asarray(c.names, dtype=object)
        order = np.lexsort((c.item, -scores, c.row))  # per user: score, then item id
        rows = c.row[order]
        bounds = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1], True])
        reranker = self._reranker() if rerank else None
        catalog = ItemCatalog(self.item_ids_, self.item_topics_, self.item_creator_, self.item_created_)
        for lo, hi in itertools.pairwise(bounds.tolist()):
            take = order[lo:hi]
            user_row = int(c.row[take[0]])
            if reranker is None:
                take = take[:k]
                out_ids[user_row, : take.size] = self.item_ids_[c.item[take]]
                out_scores[user_row, : take.size] = scores[take]
                out_src[user_row, : take.size] = names[c.source[take]]
                continue
            feed, final = reranker.rerank_indices(
                c.item[take], scores[take], catalog, k=k, now=float(self.now_) if now is None else now
            )
            source_of = dict(zip(self.item_ids_[c.item[take]].tolist(), names[c.source[take]].tolist(), strict=True))
            out_ids[user_row, : feed.size] = feed
            out_scores[user_row, : feed.size] = final
            out_src[user_row, : feed.size] = [source_of.get(i, "rule") for i in feed.tolist()]
        return out_ids.astype(str), out_scores, out_src.astype(str)

    def _reranker(self) -> ReRanker | None:
        if self.rerank is None:
            return None
        cached = self.__dict__.get("_reranker_cache")
        if cached is None or cached[0] is not self.rerank:  # build it once per configuration, not per request
            reranker = ReRanker(**{key: v for key, v in self.rerank.items() if key != "rules"}, rules=self._rules())
            cached = (self.rerank, reranker)
            self.__dict__["_reranker_cache"] = cached
        return cached[1]

    def _rules(self) -> BusinessRules:
        rules = (self.rerank or {}).get("rules") or {}
        return BusinessRules(
            pin=dict(rules.get("pin", {})), block=set(rules.get("block", [])), boost=dict(rules.get("boost", {}))
        )

    def _save_extra(self, path: Path) -> None:
        self.candidates_.save(path / "candidates")
        self.ranker_.save(path / "ranker")
        if self.realtime_ is not None:
            self.realtime_.save(path / "realtime")

    def _load_extra(self, path: Path) -> None:
        loaded = Recommender.load(path / "candidates")
        assert isinstance(loaded, CandidateRecommender)
        self.candidates_ = loaded
        self.ranker_ = GBDTRanker.load(path / "ranker")
        self.realtime_ = RealtimeRanker.load(path / "realtime") if (path / "realtime").is_dir() else None


def pair_scores(model: CandidateRecommender, sources: list[str], users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(rows, sources): each candidate source's score of the pair (users[j], items[j]) (ids); NaN
    where the sources have not seen the user or the item."""
    uidx = model.user_index().lookup(np.asarray(users).astype(str))
    iidx = model.item_index().lookup(np.asarray(items).astype(str))
    known = np.flatnonzero((uidx >= 0) & (iidx >= 0))
    out = np.full((uidx.size, len(sources)), np.nan)
    if known.size:
        for s, source in enumerate(sources):
            out[known, s] = model.sources_[source]._score_pairs(uidx[known], iidx[known])
    return out


def _top_per_row(row: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Positions of each row's ``n`` best entries by ``score`` (ties: the earlier entry)."""
    order = np.lexsort((np.arange(row.size), -score, row))
    rows = row[order]
    slot = np.arange(rows.size) - np.searchsorted(rows, rows)
    return np.sort(order[slot < n])
