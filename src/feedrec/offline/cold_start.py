"""Cold-start evaluation on logs where users and items keep arriving (the simulator makes them).

Global time cut (the last ``test_ratio`` of positive interactions are test). Three slices:

- ``sparse_users``: test users with 1 to ``max_history - 1`` training interactions; Recall@k and
  NDCG@k of their ranked lists (the full catalogue, history excluded).
- ``new_users``: users whose first interaction comes after the cut; each model serves them its
  cold-start feed (``CandidateRecommender.recommend_new_users`` for the candidate set: segment
  trend + fresh + exploration; popularity for the others).
- ``new_items``: recall@N of test interactions with items *published after the cut*: the catalogue
  holds every item published before the end of the test window, as an index refreshed with new
  items' content embeddings would; models that need interactions cannot reach these items.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from feedrec.config import FeedrecConfig
from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.metrics import ndcg_at_k, recall_at_k
from feedrec.models import build_model
from feedrec.models.retrieval.candidates import CandidateRecommender
from feedrec.offline.protocol import dedupe_earliest
from feedrec.offline.split import train_valid_test


@dataclass
class ColdStartReport:
    k: int
    new_item_cutoff: int
    slices: dict[str, int] = field(default_factory=dict)  # slice -> users evaluated
    models: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"k": self.k, "new_item_cutoff": self.new_item_cutoff, "slices": self.slices, "models": self.models}


def _targets(test: pl.DataFrame, users: np.ndarray, items: Interactions) -> list[np.ndarray]:
    grouped = dict(test.group_by("user_id").agg(pl.col("item_id")).iter_rows())
    return [np.unique(items.items.lookup(np.asarray(grouped[u], dtype=str))) for u in users]


def _user_slice(name: str, ids: np.ndarray, targets: list[np.ndarray], train: Interactions, k: int) -> dict[str, float]:
    """Recall@k and NDCG@k of recommended ``ids`` against ``targets``, over users that have targets."""
    pred = train.items.lookup(ids.ravel()).reshape(ids.shape)
    keep = [i for i, t in enumerate(targets) if t.size]
    relevant = [targets[i] for i in keep]
    return {
        f"{name}.recall@{k}": recall_at_k(relevant, pred[keep], k=k),
        f"{name}.ndcg@{k}": ndcg_at_k(relevant, pred[keep], k=k),
    }


def evaluate_cold_start(
    events: pl.DataFrame,
    side: SideInfo,
    *,
    models: list[str],
    cfg: FeedrecConfig,
    k: int = 10,
    new_item_cutoff: int = 100,
    max_history: int = 5,
    on_model: Callable[[str], None] | None = None,
) -> ColdStartReport:
    if side.items is None:
        raise ValueError("cold-start evaluation needs the items table (publish times)")
    df = dedupe_earliest(events.select("user_id", "item_id", "timestamp"))
    # One time cut for everyone, so "new" users and items are new at the same moment.
    split = train_valid_test(df, cfg.split.model_copy(update={"protocol": "global"}))
    train_df, test_df = split.rest, split.test
    cut, end = test_df["timestamp"].min(), test_df["timestamp"].max()
    items = pl.DataFrame(pl.from_arrow(side.items)).select("item_id", "created_at")
    published = items.filter(pl.col("created_at").is_null() | (pl.col("created_at") <= end))["item_id"]
    new_items = set(items.filter(pl.col("created_at") > cut)["item_id"].to_list()) - set(train_df["item_id"].unique())
    train = Interactions.from_frame(train_df, catalogue=published.cast(pl.Utf8).to_numpy())
    test_df = test_df.filter(pl.col("item_id").is_in(published.implode()))

    counts = train_df.group_by("user_id").len()
    sparse = counts.filter(pl.col("len") < max_history)["user_id"].cast(pl.Utf8).to_numpy()
    sparse_test = test_df.filter(pl.col("user_id").is_in(sparse.tolist()))
    # Targets new to each user (not already in their history).
    sparse_test = sparse_test.join(train_df.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
    sparse_users = np.sort(sparse_test["user_id"].unique().cast(pl.Utf8).to_numpy())
    new_users = np.sort(
        test_df.filter(~pl.col("user_id").is_in(train_df["user_id"].unique().implode()))["user_id"]
        .unique()
        .cast(pl.Utf8)
        .to_numpy()
    )
    new_item_test = test_df.filter(pl.col("item_id").is_in(list(new_items)))
    new_item_users = np.sort(new_item_test["user_id"].unique().cast(pl.Utf8).to_numpy())
    new_item_users = new_item_users[train.users.lookup(new_item_users) >= 0]  # known users reaching new items

    attrs_by_user: dict[str, dict[str, object]] = {}
    if side.users is not None:
        for uid, text in zip(
            side.users.column("user_id").to_pylist(), side.users.column("attributes").to_pylist(), strict=True
        ):
            attrs_by_user[str(uid)] = json.loads(text) if text else {}

    report = ColdStartReport(
        k=k,
        new_item_cutoff=new_item_cutoff,
        slices={
            "sparse_users": int(sparse_users.size),
            "new_users": int(new_users.size),
            "new_items": int(new_item_users.size),
        },
    )
    for name in models:
        if on_model:
            on_model(name)
        model = build_model(name, cfg).fit(train, side)
        row: dict[str, float] = {}
        if sparse_users.size:
            ids, _ = model.recommend(sparse_users, k=k)
            row |= _user_slice("sparse_users", ids, _targets(sparse_test, sparse_users, train), train, k)
        if new_users.size:
            if isinstance(model, CandidateRecommender):
                ids, _ = model.recommend_new_users([attrs_by_user.get(u, {}) for u in new_users], k=k)
            else:
                ids, _ = model.recommend(new_users, k=k)  # unknown users: the model's cold-start feed
            row |= _user_slice("new_users", ids, _targets(test_df, new_users, train), train, k)
        if new_item_users.size:
            ids, _ = model.recommend(new_item_users, k=new_item_cutoff)
            pred = train.items.lookup(ids.ravel()).reshape(ids.shape)
            targets = _targets(new_item_test, new_item_users, train)
            row[f"new_items.recall@{new_item_cutoff}"] = recall_at_k(targets, pred, k=new_item_cutoff)
        report.models[name] = {key: round(v, 6) for key, v in row.items()}
    return report
