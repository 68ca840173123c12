"""``feedrec``: the whole pipeline as one model. Retrieve (candidates) -> rank (LightGBM) -> re-rank.

Fitting is two-stage, as production feeds train:
1. carve each user's latest ``valid_ratio`` of interactions off the training data;
2. fit the candidate sources on the rest and retrieve ``n_candidates`` for each carved user;
3. learn a LambdaMART ranker on those candidates (label: the user engaged with it in the carve) plus
   ``n_sampled_negatives`` random items per user (the ranking set's sampled negatives),
   with features from every source (rank, score), the fused score, and user/item activity; a fifth
   of the carved users are held out for the ranker's early stopping;
4. refit the candidate sources on all the training data, for serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from feedrec.data.interactions import Interactions
from feedrec.data.side import SideEncoder, SideInfo
from feedrec.models.base import PAD_ID, NotFittedError, Recommender
from feedrec.models.ranking.base import RankingSet
from feedrec.models.ranking.gbdt import GBDTRanker
from feedrec.models.rerank import BusinessRules, ItemCatalog, ReRanker
from feedrec.models.retrieval.candidates import CandidateRecommender


class FeedRecommender(Recommender):
    _state_attrs = ("item_topics_", "item_creator_", "item_created_", "now_")
    candidates_: CandidateRecommender
    ranker_: GBDTRanker
    item_topics_: sp.csr_matrix  # for re-ranking: topics, creators and publish times of the catalogue
    item_creator_: np.ndarray
    item_created_: np.ndarray
    now_: np.ndarray  # () the time of the last training interaction (freshness is measured from it)

    def __init__(
        self,
        candidates: dict[str, Any],
        ranker: dict[str, Any] | None = None,
        rerank: dict[str, Any] | None = None,
        n_candidates: int = 200,
        n_sampled_negatives: int = 20,
        valid_ratio: float = 0.1,
        seed: int = 42,
    ) -> None:
        self.candidates = candidates
        self.ranker = ranker
        self.rerank = rerank
        self.n_candidates = n_candidates
        self.n_sampled_negatives = n_sampled_negatives
        self.valid_ratio = valid_ratio
        self.seed = seed

    def _validate_params(self) -> None:
        if self.n_candidates < 1 or self.n_sampled_negatives < 0 or not 0 < self.valid_ratio < 1:
            raise ValueError("n_candidates must be >= 1, n_sampled_negatives >= 0 and valid_ratio in (0, 1)")

    # -- features ---------------------------------------------------------------------------------
    def _feature_names(self) -> list[str]:
        names = ["rrf", "pos", "n_sources", "item_log_count", "user_log_count"]
        for source in self.candidates["quotas"]:
            names += [f"rank_{source}", f"full_{source}"]
        return names

    def _features(self, table: pl.DataFrame, model: CandidateRecommender, users: np.ndarray) -> np.ndarray:
        sources = list(self.candidates["quotas"])
        item_counts = model.item_counts_[np.maximum(model.item_index().lookup(table["item"].to_numpy()), 0)]
        uidx = model.user_index().lookup(users)
        history = np.where(uidx >= 0, np.diff(model.user_items_.indptr)[np.maximum(uidx, 0)], 0)
        row_users = users[table["row"].to_numpy()]
        item_ids = table["item"].to_numpy()
        # Every source's score of every candidate, not only of those it proposed itself.
        full = {f"full_{s}": model.sources_[s].score_items(row_users, item_ids) for s in sources}
        table = table.with_columns(
            pl.sum_horizontal([pl.col(f"rank_{s}").is_not_null().cast(pl.Int32) for s in sources]).alias("n_sources"),
            pl.Series("item_log_count", np.log1p(item_counts)),
            pl.Series("user_log_count", np.log1p(history[table["row"].to_numpy()]).astype(np.float64)),
            *[pl.Series(name, values) for name, values in full.items()],
        )
        return table.select(self._feature_names()).cast(pl.Float32).to_numpy()

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
        table = stage1.candidate_table(users, self.n_candidates)
        table = table.with_columns(pl.Series("user", users[table["row"].to_numpy()]))
        labels = table.join(truth.with_columns(pl.lit(1.0).alias("label")), on=["user", "item"], how="left")
        if self.n_sampled_negatives:
            labels = pl.concat([labels, self._sampled_negatives(labels, stage1, users, truth)], how="diagonal_relaxed")
        labels = labels.sort(["row", "pos", "item"])
        y = labels["label"].fill_null(0.0).to_numpy().astype(np.float32)
        x = self._features(labels.drop("user", "label"), stage1, users)
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
        """``n_sampled_negatives`` random catalogue items per user, outside the user's candidates,
        history and carve: the ranking set's negatives besides the retrieved-but-not-engaged ones."""
        rng = np.random.default_rng(self.seed + 1)
        n = self.n_sampled_negatives
        drawn = pl.DataFrame(
            {
                "row": np.repeat(np.arange(users.size), n),
                "item": model.item_ids_[rng.integers(0, model.item_ids_.size, users.size * n)],
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
        if not hasattr(self, "ranker_"):
            raise NotFittedError("FeedRecommender is not fitted; call fit() or load() first")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        out_ids = np.full((users.size, k), PAD_ID, dtype=object)
        out_scores = np.full((users.size, k), np.nan, np.float32)
        out_src = np.full((users.size, k), "", dtype=object)
        table = self.candidates_.candidate_table(users, max(self.n_candidates, k), exclude_seen=exclude_seen)
        if table.height == 0:
            return out_ids.astype(str), out_scores, out_src.astype(str)
        scored = table.select("row", "item", "source").with_columns(
            pl.Series("score", self.ranker_.predict(self._features(table, self.candidates_, users)))
        )
        ranked = scored.sort(["row", "score", "item"], descending=[False, True, False])
        if self.rerank is None:
            top = ranked.with_columns(pl.int_range(pl.len()).over("row").alias("pos")).filter(pl.col("pos") < k)
            r, p = top["row"].to_numpy(), top["pos"].to_numpy()
            out_ids[r, p] = top["item"].to_numpy()
            out_scores[r, p] = top["score"].to_numpy()
            out_src[r, p] = top["source"].to_numpy()
            return out_ids.astype(str), out_scores, out_src.astype(str)
        reranker = ReRanker(**{key: v for key, v in self.rerank.items() if key != "rules"}, rules=self._rules())
        catalog = ItemCatalog(self.item_ids_, self.item_topics_, self.item_creator_, self.item_created_)
        for row, group in ranked.group_by("row", maintain_order=True):
            feed, final = reranker.rerank(
                group["item"].to_numpy(), group["score"].to_numpy(), catalog, k=k, now=float(self.now_)
            )
            source_of = dict(zip(group["item"].to_list(), group["source"].to_list(), strict=True))
            user_row = int(str(row[0]))
            out_ids[user_row, : feed.size] = feed
            out_scores[user_row, : feed.size] = final
            out_src[user_row, : feed.size] = [source_of.get(i, "rule") for i in feed.tolist()]
        return out_ids.astype(str), out_scores, out_src.astype(str)

    def _rules(self) -> BusinessRules:
        rules = (self.rerank or {}).get("rules") or {}
        return BusinessRules(
            pin=dict(rules.get("pin", {})), block=set(rules.get("block", [])), boost=dict(rules.get("boost", {}))
        )

    def _save_extra(self, path: Path) -> None:
        self.candidates_.save(path / "candidates")
        self.ranker_.save(path / "ranker")

    def _load_extra(self, path: Path) -> None:
        loaded = Recommender.load(path / "candidates")
        assert isinstance(loaded, CandidateRecommender)
        self.candidates_ = loaded
        self.ranker_ = GBDTRanker.load(path / "ranker")
