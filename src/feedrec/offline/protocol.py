"""The benchmark protocol (../shared/data/README.md), exactly:

1. Deduplicate (user, item), keeping the earliest interaction.
2. Split chronologically: ``user`` (per user, the last 10%, at least one) or ``global`` (last 10%).
3. Test users have at least one training interaction; their targets are test items not in their
   training history; items never seen in training are not candidates.
4. Rank the full catalogue of training items, excluding each user's training history, and average
   Recall@k (hits / min(|targets|, k)), NDCG@k, HR@k and MRR@k over test users.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from feedrec.config import FeedrecConfig, SplitConfig
from feedrec.data.interactions import Interactions
from feedrec.data.side import SideEncoder, SideInfo
from feedrec.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    recall_at_k,
)
from feedrec.models import build_model
from feedrec.models.base import Recommender
from feedrec.offline.split import Protocol, Split, train_valid_test


@dataclass
class ProtocolData:
    """A split ready to evaluate: training interactions, test users and their targets."""

    train: Interactions
    test_users: np.ndarray  # (n,) user ids
    targets: list[np.ndarray]  # per test user: target item indices into train.items
    n_users: int  # after deduplication, the whole data set
    n_items: int


@dataclass
class EvalReport:
    dataset: str
    protocol: str
    k: int
    n_users: int
    n_items: int
    n_test_users: int
    models: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "k": self.k,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_test_users": self.n_test_users,
            "models": self.models,
        }


def dedupe_earliest(df: pl.DataFrame) -> pl.DataFrame:
    """One row per (user, item): the earliest (ties keep the input order)."""
    return (
        df.with_row_index("_order")
        .sort(["timestamp", "_order"])
        .unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
        .sort("_order")
    )


def prepare(df: pl.DataFrame, *, protocol: Protocol, test_ratio: float = 0.1) -> ProtocolData:
    """Steps 1-3 of the protocol on a frame of ``user_id``, ``item_id``, ``timestamp``: the split's
    test part against everything before it."""
    df = dedupe_earliest(df.select("user_id", "item_id", "timestamp"))
    split = train_valid_test(df, SplitConfig(protocol=protocol, test_ratio=test_ratio))
    return for_split(split, df)


def for_split(split: Split, whole: pl.DataFrame) -> ProtocolData:
    """The protocol's data for a split made already: train + validation against the test part."""
    return targets_after(
        split.rest, split.test, n_users=whole["user_id"].n_unique(), n_items=whole["item_id"].n_unique()
    )


def targets_after(train_df: pl.DataFrame, test_df: pl.DataFrame, *, n_users: int = 0, n_items: int = 0) -> ProtocolData:
    """Step 3 for an existing split: test users are those with training history; their targets are
    test items that are training items and not already in their history."""
    train = Interactions.from_frame(train_df)
    test_items = train.items.lookup(test_df["item_id"].cast(pl.Utf8).to_numpy())
    test_users = train.users.lookup(test_df["user_id"].cast(pl.Utf8).to_numpy())
    keep = (test_items >= 0) & (test_users >= 0)
    tu, ti = test_users[keep], test_items[keep]
    n_train_items = np.int64(train.n_items)
    history = train.user_idx.astype(np.int64) * n_train_items + train.item_idx
    fresh = ~np.isin(tu * n_train_items + ti, history)  # not already in the user's training history
    tu, ti = tu[fresh], ti[fresh]
    order = np.lexsort((ti, tu))
    tu, ti = tu[order], ti[order]
    users, starts = np.unique(tu, return_index=True)
    targets = np.split(ti, starts[1:]) if users.size else []
    return ProtocolData(
        train=train,
        test_users=train.users.ids[users],
        targets=[np.unique(t) for t in targets],
        n_users=n_users or train.n_users,
        n_items=n_items or train.n_items,
    )


def sample_test_users(data: ProtocolData, n: int | None, *, seed: int = 42) -> ProtocolData:
    """``data`` with at most ``n`` of its test users (a seeded random sample, in the original order)."""
    if n is None or data.test_users.size <= n:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(data.test_users.size, n, replace=False))
    return dataclasses.replace(data, test_users=data.test_users[keep], targets=[data.targets[i] for i in keep])


def item_topics(side: SideInfo | None, data: ProtocolData) -> np.ndarray | None:
    """(n_train_items, n_topics) topic indicators for diversity, when items carry topics."""
    if side is None or side.items is None:
        return None
    return SideEncoder.fit(side).encode_items(side.items, data.train.items).topics.toarray()


def evaluate_recommender(
    model: Recommender,
    data: ProtocolData,
    *,
    k: int,
    recall_cutoffs: tuple[int, ...] = (),
    item_topics: np.ndarray | None = None,
) -> dict[str, float]:
    """Step 4 for one fitted model; ``recall_cutoffs`` adds recall@N for candidate-set sizes N, and
    ``item_topics`` ((n_items, n_topics), aligned to the training items) adds intra-list diversity.
    Novelty is always reported: mean self-information of the recommended items, in bits."""
    cutoffs = [c for c in recall_cutoffs if c != k]
    ids, _ = model.recommend(data.test_users, k=max([k, *cutoffs]), exclude_seen=True)
    pred = data.train.items.lookup(ids.ravel()).reshape(ids.shape)
    metrics = {
        f"recall@{k}": recall_at_k(data.targets, pred, k=k),
        f"ndcg@{k}": ndcg_at_k(data.targets, pred, k=k),
        f"hr@{k}": hit_rate_at_k(data.targets, pred, k=k),
        f"mrr@{k}": mrr_at_k(data.targets, pred, k=k),
        f"coverage@{k}": catalog_coverage(pred, n_items=data.train.n_items, k=k),
    }
    for c in cutoffs:
        metrics[f"recall@{c}"] = recall_at_k(data.targets, pred, k=c)
    users_per_item = np.bincount(data.train.item_idx, minlength=data.train.n_items)
    p_item = np.maximum(users_per_item, 1) / max(data.train.n_users, 1)  # never-seen items count as seen once
    metrics[f"novelty@{k}"] = novelty(pred, item_popularity=np.minimum(p_item, 1.0), k=k)
    if item_topics is not None and item_topics.any():
        metrics[f"diversity@{k}"] = intra_list_diversity(pred, item_features=item_topics, k=k)
    return metrics


def run_protocol(
    df: pl.DataFrame,
    *,
    dataset: str,
    protocol: Protocol,
    k: int,
    model_names: list[str],
    cfg: FeedrecConfig,
    side: SideInfo | None = None,
    on_model: Callable[[str], None] | None = None,
    on_fitted: Callable[[str, Recommender], None] | None = None,
    split: Split | None = None,
) -> EvalReport:
    """Prepare the split once (or take ``split``, made by the caller from ``df``), then fit and
    evaluate each named model on it (``on_fitted`` gets each fitted model, for a caller that keeps one)."""
    if split is not None and split.protocol != protocol:
        raise ValueError(f"the split was made with protocol {split.protocol!r}, not {protocol!r}")
    if split is not None:
        data = for_split(split, dedupe_earliest(df.select("user_id", "item_id", "timestamp")))
    else:
        data = prepare(df, protocol=protocol, test_ratio=cfg.split.test_ratio)
    if data.test_users.size == 0:
        raise ValueError("no test users: every user's test items are new or already seen; more data is needed")
    report = EvalReport(
        dataset=dataset,
        protocol=protocol,
        k=k,
        n_users=data.n_users,
        n_items=data.n_items,
        n_test_users=int(data.test_users.size),
    )
    topics = item_topics(side, data)
    for name in model_names:
        if on_model:
            on_model(name)
        model = build_model(name, cfg)
        start = time.perf_counter()
        model.fit(data.train, side)
        fit_seconds = time.perf_counter() - start
        metrics = evaluate_recommender(
            model, data, k=k, recall_cutoffs=tuple(cfg.eval.recall_cutoffs), item_topics=topics
        )
        report.models[name] = {key: round(value, 6) for key, value in metrics.items()} | {
            "fit_seconds": round(fit_seconds, 3)
        }
        if on_fitted:
            on_fitted(name, model)
    return report
