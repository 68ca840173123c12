"""Two-tower retrieval (PyTorch): a user tower and an item tower meeting in one embedding space.

Item tower: item-id embedding + content (topics, creator, age since publish) -> MLP -> unit vector.
User tower: user-id embedding + the user's last ``history_size`` items (content-aware item vectors,
pooled with learned recency weights) + user attributes -> MLP -> unit vector.

Training: each positive (user, item, t) sees only the user's history *before* it (point in time).
Loss: softmax over the in-batch items (plus ``n_random_negatives`` uniform items), with the logQ
correction (subtract log of each negative's sampling probability) so that popular items are not
over-penalised; accidental hits (the same item elsewhere in the batch) are masked. Early stopping
on NDCG@10 of a validation carve (each user's latest ``valid_ratio`` of training interactions).

Cold start: ids are dropped at random during training (``id_dropout``), so the towers also work
without them: items nobody interacted with are embedded from content alone, and a new user from
history and attributes alone (``embed_new_users``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
import torch
from torch import nn

from feedrec.data.interactions import IdIndex, Interactions
from feedrec.data.side import N_AGE_BUCKETS, SideEncoder, SideInfo, age_buckets
from feedrec.metrics import ndcg_at_k
from feedrec.models.base import Recommender, top_k
from feedrec.models.index import INDEX_KINDS, FaissIndex


def _mlp(inp: int, hidden: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inp, hidden), nn.GELU(), nn.Linear(hidden, out))


MAX_VALID_USERS = 5000  # users scored for early stopping, at most ...
VALID_PAIRS = 1_000_000_000  # ... and fewer for large catalogues (at least 500): users x items scored per epoch


class Towers(nn.Module):
    def __init__(
        self,
        *,
        n_users: int,
        n_items: int,
        n_topics: int,
        n_creators: int,
        n_attr_values: int,
        history_size: int,
        dim: int,
        hidden: int,
    ) -> None:
        super().__init__()
        # The id tables get sparse gradients: a step updates the rows its batch touched, not every
        # row of every table (with dense Adam, an epoch over 10^5 users and items took 4x as long).
        self.user_id = nn.Embedding(n_users + 1, dim, sparse=True)  # row 0: no id (a new user)
        self.item_id = nn.Embedding(n_items + 1, dim, sparse=True)  # row 0: no id (an item without interactions)
        self.hist_id = nn.Embedding(n_items + 1, dim, padding_idx=0, sparse=True)
        self.topic = nn.Linear(n_topics, dim, bias=False)
        self.creator = nn.Embedding(n_creators, dim, sparse=True)
        self.age = nn.Embedding(N_AGE_BUCKETS, dim)
        self.attr = nn.Embedding(n_attr_values, dim, padding_idx=0)
        self.recency = nn.Parameter(torch.linspace(0.0, -2.0, history_size))  # position 0 = latest
        self.user_mlp = _mlp(3 * dim, hidden, dim)
        self.item_mlp = _mlp(4 * dim, hidden, dim)
        for emb in (self.user_id, self.item_id, self.hist_id, self.creator, self.age, self.attr):
            nn.init.normal_(emb.weight, std=0.05)

    def items(self, ids: torch.Tensor, topics: torch.Tensor, creator: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.item_id(ids), self.topic(topics), self.creator(creator), self.age(age)], dim=-1)
        return nn.functional.normalize(self.item_mlp(x), dim=-1)

    def users(
        self, ids: torch.Tensor, hist: torch.Tensor, hist_topics: torch.Tensor, attrs: torch.Tensor
    ) -> torch.Tensor:
        """ids (B,), hist (B, H) item codes with 0 = padding, hist_topics (B, H, T), attrs (B, A)."""
        mask = hist > 0
        logits = self.recency[None, : hist.shape[1]].expand_as(hist).masked_fill(~mask, -1e9)
        weights = torch.softmax(logits, dim=1) * mask.any(dim=1, keepdim=True)
        item_vecs = self.hist_id(hist) + self.topic(hist_topics)
        pooled = (weights[..., None] * item_vecs).sum(dim=1)
        x = torch.cat([self.user_id(ids), pooled, self.attr(attrs).sum(dim=1)], dim=-1)
        return nn.functional.normalize(self.user_mlp(x), dim=-1)


def _histories(user: np.ndarray, item_code: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """For each interaction (in ``order``), the codes of the same user's ``size`` previous items, latest first."""
    u, codes = user[order], item_code[order]
    n = u.size
    new_user = np.r_[True, u[1:] != u[:-1]]
    start = np.flatnonzero(new_user)[np.cumsum(new_user) - 1]
    pos = np.arange(n)
    hist = np.zeros((n, size), np.int64)
    for j in range(1, size + 1):
        prev = pos - j
        ok = prev >= start
        hist[ok, j - 1] = codes[prev[ok]]
    out = np.empty_like(hist)
    out[order] = hist
    return out


class TwoTowerRecommender(Recommender):
    _state_attrs = (
        "net_",
        "user_emb_",
        "item_emb_",
        "topic_vocab_",
        "creator_vocab_",
        "attr_names_",
        "attr_vocab_",
        "item_topics_",
        "item_creator_",
        "item_created_",
        "item_code_",
        "now_",
    )
    net_: dict[str, np.ndarray]
    user_emb_: np.ndarray  # (n_users, dim) float32, from each user's full training history
    item_emb_: np.ndarray  # (n_items, dim) float32, at the end of the training data
    item_topics_: sp.csr_matrix
    item_creator_: np.ndarray
    item_created_: np.ndarray
    item_code_: np.ndarray  # (n_items,) id code in the network, 0 for items without interactions
    now_: np.ndarray  # () float64: the time of the last training interaction
    _index: FaissIndex | None = None  # over item_emb_, when ann != "exact"

    def __init__(
        self,
        dim: int = 64,
        hidden: int = 128,
        history_size: int = 20,
        temperature: float = 0.05,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        batch_size: int = 512,
        epochs: int = 30,
        patience: int = 3,
        id_dropout: float = 0.1,
        n_random_negatives: int = 0,
        logq_correction: bool = True,
        valid_ratio: float = 0.1,
        ann: str = "exact",
        seed: int = 42,
        num_threads: int = 0,
        verbose: bool = False,
    ) -> None:
        self.dim = dim
        self.hidden = hidden
        self.history_size = history_size
        self.temperature = temperature
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.id_dropout = id_dropout
        self.n_random_negatives = n_random_negatives
        self.logq_correction = logq_correction
        self.valid_ratio = valid_ratio
        self.ann = ann
        self.seed = seed
        self.num_threads = num_threads
        self.verbose = verbose

    def _validate_params(self) -> None:
        if self.dim < 1 or self.hidden < 1 or self.history_size < 1 or self.batch_size < 2:
            raise ValueError("dim, hidden, history_size must be >= 1 and batch_size >= 2")
        if not 0 <= self.id_dropout < 1 or not 0 < self.valid_ratio < 1:
            raise ValueError("id_dropout must be in [0, 1) and valid_ratio in (0, 1)")
        if self.temperature <= 0 or self.lr <= 0 or self.epochs < 1 or self.patience < 1:
            raise ValueError("temperature and lr must be > 0; epochs and patience >= 1")
        if self.n_random_negatives < 0:
            raise ValueError("n_random_negatives must be >= 0")
        if self.ann != "exact" and self.ann not in INDEX_KINDS:
            raise ValueError(f"ann must be 'exact' or one of {', '.join(INDEX_KINDS)}, got {self.ann!r}")

    # -- encoding --------------------------------------------------------------------------------
    def _encoder(self) -> SideEncoder:
        return SideEncoder(self.topic_vocab_, self.creator_vocab_, self.attr_names_, self.attr_vocab_)

    def _net(self) -> Towers:
        return Towers(
            n_users=self.user_ids_.size,
            n_items=self.item_ids_.size,
            n_topics=self.topic_vocab_.size + 1,
            n_creators=self.creator_vocab_.size + 1,
            n_attr_values=self.attr_vocab_.size + 1,
            history_size=self.history_size,
            dim=self.dim,
            hidden=self.hidden,
        )

    # -- training --------------------------------------------------------------------------------
    def _fit(self, interactions: Interactions, side: SideInfo | None = None) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        side = side or SideInfo()
        enc = SideEncoder.fit(side)
        self.topic_vocab_, self.creator_vocab_ = enc.topic_vocab, enc.creator_vocab
        self.attr_names_, self.attr_vocab_ = enc.attr_names, enc.attr_vocab
        feats = enc.encode_items(side.items, interactions.items)
        self.item_topics_, self.item_creator_, self.item_created_ = feats.topics, feats.creator, feats.created_at
        user_attrs = torch.from_numpy(enc.encode_users(side.users, interactions.users).attrs)
        counts = np.bincount(interactions.item_idx, minlength=interactions.n_items)
        self.item_code_ = np.where(counts > 0, np.arange(1, interactions.n_items + 1), 0)
        self.now_ = np.asarray(float(interactions.timestamps.max()))

        u, i, t = (
            interactions.user_idx.astype(np.int64),
            interactions.item_idx.astype(np.int64),
            interactions.timestamps,
        )
        order = np.lexsort((np.arange(u.size), t, u))
        hist = _histories(u, self.item_code_[i], order, self.history_size)
        is_valid = interactions.latest_mask(self.valid_ratio)  # validation carve for early stopping
        train = np.flatnonzero(~is_valid)

        topics_all = torch.from_numpy(self.item_topics_.toarray())
        net = self._net()
        sparse = [p for m in net.modules() if isinstance(m, nn.Embedding) and m.sparse for p in m.parameters()]
        dense = [p for p in net.parameters() if all(p is not q for q in sparse)]
        # Lazy (sparse) Adam for the id tables, Adam for the rest; weight decay applies to the dense part.
        opts = [
            torch.optim.SparseAdam(sparse, lr=self.lr),
            torch.optim.Adam(dense, lr=self.lr, weight_decay=self.weight_decay),
        ]
        # logQ: log of the expected count of each item among a batch's in-batch negatives.
        train_counts = np.maximum(np.bincount(i[train], minlength=counts.size), 1)
        log_q_item = torch.from_numpy(np.log(train_counts / max(train.size, 1) * self.batch_size))
        n_items = interactions.n_items
        ti = torch.from_numpy(i)
        codes = torch.from_numpy(self.item_code_)
        hist_t = torch.from_numpy(hist)
        uids = torch.from_numpy(u + 1)

        best, best_state, stale = -1.0, copy.deepcopy(net.state_dict()), 0
        for epoch in range(self.epochs):
            net.train()
            perm = train[rng.permutation(train.size)]
            total = 0.0
            for lo in range(0, perm.size - 1, self.batch_size):
                b = torch.from_numpy(perm[lo : lo + self.batch_size])
                if b.numel() < 2:
                    continue
                items = ti[b]
                user_ids = uids[b] * (torch.rand(b.numel()) >= self.id_dropout)
                item_codes = codes[items] * (torch.rand(b.numel()) >= self.id_dropout)
                h = hist_t[b]
                ue = net.users(
                    user_ids, h, topics_all[torch.clamp(h - 1, min=0)] * (h > 0)[..., None], user_attrs[u[b.numpy()]]
                )
                age = torch.from_numpy(age_buckets(self.item_created_[items.numpy()], t[b.numpy()]))
                ie = net.items(item_codes, topics_all[items], torch.from_numpy(self.item_creator_[items.numpy()]), age)
                logits = ue @ ie.T / self.temperature
                if self.logq_correction:
                    logits = logits - log_q_item[items][None, :]
                same = items[None, :] == items[:, None]
                logits = logits.masked_fill(same & ~torch.eye(items.numel(), dtype=torch.bool), -1e9)
                if self.n_random_negatives:
                    neg = torch.from_numpy(rng.integers(0, n_items, self.n_random_negatives))
                    ne = net.items(
                        codes[neg],
                        topics_all[neg],
                        torch.from_numpy(self.item_creator_[neg.numpy()]),
                        torch.from_numpy(
                            age_buckets(self.item_created_[neg.numpy()], np.full(neg.numel(), float(self.now_)))
                        ),
                    )
                    extra = ue @ ne.T / self.temperature
                    if self.logq_correction:
                        extra = extra - float(np.log(self.n_random_negatives / n_items))
                    extra = extra.masked_fill(neg[None, :] == items[:, None], -1e9)
                    logits = torch.cat([logits, extra], dim=1)
                loss = nn.functional.cross_entropy(logits, torch.arange(items.numel()))
                for opt in opts:
                    opt.zero_grad()
                loss.backward()
                for opt in opts:
                    opt.step()
                total += float(loss.detach()) * items.numel()
            score = self._validate(net, interactions, hist, is_valid, user_attrs, topics_all)
            if self.verbose:
                print(f"epoch {epoch}: loss {total / max(train.size, 1):.4f} valid ndcg@10 {score:.4f}")
            if score > best:
                best, best_state, stale = score, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        net.load_state_dict(best_state)
        self.best_valid_ndcg_ = best
        self.net_ = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
        self._embed_all(net, interactions, user_attrs, topics_all)
        self._index = None if self.ann == "exact" else FaissIndex(self.ann, seed=self.seed).build(self.item_emb_)

    def _user_histories_now(self, interactions: Interactions, mask: np.ndarray | None = None) -> np.ndarray:
        """(n_users, H) codes of each user's latest items (restricted to ``mask`` rows), latest first."""
        rows = np.flatnonzero(mask) if mask is not None else np.arange(len(interactions))
        u = interactions.user_idx[rows].astype(np.int64)
        order = np.lexsort((rows, interactions.timestamps[rows], u))
        u_sorted = u[order]
        codes = self.item_code_[interactions.item_idx[rows][order]]
        last = np.r_[u_sorted[1:] != u_sorted[:-1], True]
        hist = np.zeros((interactions.n_users, self.history_size), np.int64)
        ends = np.flatnonzero(last)
        starts = np.r_[0, ends[:-1] + 1]
        for j in range(self.history_size):
            idx = ends - j
            ok = idx >= starts
            hist[u_sorted[ends[ok]], j] = codes[idx[ok]]
        return hist

    @torch.no_grad()
    def _validate(
        self,
        net: Towers,
        inter: Interactions,
        hist: np.ndarray,
        is_valid: np.ndarray,
        user_attrs: torch.Tensor,
        topics_all: torch.Tensor,
    ) -> float:
        net.eval()
        valid_users = np.unique(inter.user_idx[is_valid])
        if valid_users.size == 0:
            return 0.0
        # A fixed sample: early stopping needs a trend, not every user (and scoring is users x items).
        cap = int(np.clip(VALID_PAIRS // max(inter.n_items, 1), 500, MAX_VALID_USERS))
        if valid_users.size > cap:
            rng = np.random.default_rng(self.seed)
            valid_users = np.sort(rng.choice(valid_users, cap, replace=False))
        train_hist = self._user_histories_now(inter, ~is_valid)[valid_users]
        ue = self._users_tensor(net, valid_users + 1, train_hist, user_attrs[valid_users], topics_all)
        ie = self._items_tensor(net, np.arange(inter.n_items), float(inter.timestamps[~is_valid].max()), topics_all)
        seen = sp.csr_matrix(
            (np.ones(int((~is_valid).sum())), (inter.user_idx[~is_valid], inter.item_idx[~is_valid])),
            shape=(inter.n_users, inter.n_items),
        )[valid_users]
        pred = np.empty((valid_users.size, min(10, inter.n_items)), np.int64)
        step = max(1, 20_000_000 // max(inter.n_items, 1))  # score blocks of users: memory stays bounded
        for lo in range(0, valid_users.size, step):
            scores = (ue[lo : lo + step] @ ie.T).numpy()
            block = seen[lo : lo + step].tocoo()
            scores[block.row, block.col] = -np.inf
            pred[lo : lo + step] = top_k(scores, 10)[0]
        targets = pl.DataFrame({"u": inter.user_idx[is_valid], "i": inter.item_idx[is_valid]}).group_by("u").agg("i")
        lookup = dict(zip(targets["u"].to_list(), targets["i"].to_list(), strict=True))
        return ndcg_at_k([np.asarray(lookup[v]) for v in valid_users], pred, k=min(10, pred.shape[1]))

    def _users_tensor(
        self, net: Towers, id_codes: np.ndarray, hist: np.ndarray, attrs: torch.Tensor, topics_all: torch.Tensor
    ) -> torch.Tensor:
        out = []
        for lo in range(0, id_codes.size, 4096):
            h = torch.from_numpy(hist[lo : lo + 4096])
            ht = topics_all[torch.clamp(h - 1, min=0)] * (h > 0)[..., None]
            out.append(net.users(torch.from_numpy(id_codes[lo : lo + 4096]), h, ht, attrs[lo : lo + 4096]))
        return torch.cat(out) if out else torch.zeros((0, self.dim))

    def _items_tensor(self, net: Towers, rows: np.ndarray, now: float, topics_all: torch.Tensor) -> torch.Tensor:
        age = torch.from_numpy(age_buckets(self.item_created_[rows], np.full(rows.size, now)))
        out = []
        for lo in range(0, rows.size, 65536):
            r = rows[lo : lo + 65536]
            out.append(
                net.items(
                    torch.from_numpy(self.item_code_[r]),
                    topics_all[r],
                    torch.from_numpy(self.item_creator_[r]),
                    age[lo : lo + 65536],
                )
            )
        return torch.cat(out)

    @torch.no_grad()
    def _embed_all(self, net: Towers, inter: Interactions, user_attrs: torch.Tensor, topics_all: torch.Tensor) -> None:
        net.eval()
        hist = self._user_histories_now(inter)
        self._user_hist_ = hist
        ids = np.arange(1, inter.n_users + 1)
        self.user_emb_ = self._users_tensor(net, ids, hist, user_attrs, topics_all).numpy().astype(np.float32)
        self.item_emb_ = (
            self._items_tensor(net, np.arange(inter.n_items), float(self.now_), topics_all).numpy().astype(np.float32)
        )

    # -- serving ---------------------------------------------------------------------------------
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_emb_[user_idx] @ self.item_emb_.T

    def _score_pairs(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        out = np.empty(user_idx.size, np.float64)
        for lo in range(0, user_idx.size, 1_000_000):  # bounded temporaries for tens of millions of pairs
            u, i = user_idx[lo : lo + 1_000_000], item_idx[lo : lo + 1_000_000]
            out[lo : lo + u.size] = np.einsum("ij,ij->i", self.user_emb_[u], self.item_emb_[i])
        return out

    def _recommend_known(self, user_idx: np.ndarray, k: int, *, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            return super()._recommend_known(user_idx, k, exclude_seen=exclude_seen)
        indptr, indices = self.user_items_.indptr, self.user_items_.indices
        exclude = [indices[indptr[u] : indptr[u + 1]] for u in user_idx.tolist()] if exclude_seen else None
        return self._index.search(self.user_emb_[user_idx], k, exclude=exclude)

    def _save_extra(self, path: Path) -> None:
        if self._index is not None:
            self._index.save(path / "items.faiss")

    def _load_extra(self, path: Path) -> None:
        self._index = FaissIndex.load(path / "items.faiss", self.ann) if self.ann != "exact" else None

    def network(self) -> Towers:
        net = self._net()
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.net_.items()})
        return net.eval()

    @torch.no_grad()
    def embed_new_users(
        self, histories: list[list[str]], attributes: list[dict[str, object]] | None = None
    ) -> np.ndarray:
        """Embeddings (n, dim) of users the model never saw, from their items (oldest first) and attributes."""
        index = self.item_index()
        hist = np.zeros((len(histories), self.history_size), np.int64)
        for r, items in enumerate(histories):
            pos = index.lookup(list(reversed(items))[: self.history_size]) if items else np.zeros(0, np.int64)
            codes = self.item_code_[pos[pos >= 0]]
            hist[r, : codes.size] = codes
        ids = [f"new{r:09d}" for r in range(len(histories))]  # sorted, as IdIndex needs
        users = pa.table(
            {
                "user_id": ids,
                "created_at": pa.nulls(len(ids), pa.timestamp("us", tz="UTC")),
                "attributes": [json.dumps(a) for a in (attributes or [{}] * len(ids))],
            }
        )
        attrs = self._encoder().encode_users(users, IdIndex(np.asarray(ids))).attrs
        topics_all = torch.from_numpy(self.item_topics_.toarray())
        net = self.network()
        return self._users_tensor(net, np.zeros(len(ids), np.int64), hist, torch.from_numpy(attrs), topics_all).numpy()

    @torch.no_grad()
    def embed_items(self, items_table: pa.Table) -> np.ndarray:
        """Embeddings (n, dim), in table order, of items from content alone (items published after training)."""
        ids = [str(x) for x in items_table.column("item_id").to_pylist()]
        index = IdIndex.from_values(ids)
        feats = self._encoder().encode_items(items_table, index)
        net = self.network()
        order = index.lookup(ids)
        age = feats.age_bucket(float(self.now_))[order]
        return net.items(
            torch.zeros(len(ids), dtype=torch.long),
            torch.from_numpy(feats.topics.toarray()[order]),
            torch.from_numpy(feats.creator[order]),
            torch.from_numpy(age),
        ).numpy()
