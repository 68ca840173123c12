"""The model contract: ``fit(interactions) -> self``, ``recommend(user_ids, k)``, ``save``, ``load``.

Like ``implicit``'s recommender base and scikit-learn's estimators: hyperparameters are keyword
arguments of ``__init__`` stored as-is (no logic there); validation happens in ``fit``; learned
state ends in ``_`` and is listed in ``_state_attrs`` so that ``save``/``load`` need no per-model code.

A subclass implements ``_fit`` and ``_score`` (dense scores for known users). The base class does
the rest: id translation, excluding seen items, top-k selection, and a popularity fallback for
users it has never seen (the cold-start feed).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import scipy.sparse as sp

from feedrec import __version__
from feedrec.data.interactions import IdIndex, Interactions
from feedrec.data.side import SideInfo

#: Pad value of an item list shorter than k.
PAD_ID = ""


class NotFittedError(RuntimeError):
    pass


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of (n, m) scores: (indices, scores), best first; ties go to the lower index,
    at any k (so the first 10 of a top-500 list are the top 10)."""
    n, m = scores.shape
    kk = min(k, m)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        # argpartition picks arbitrarily among items tied with the k-th score; redo those rows.
        tied = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > kk)
        for r in tied:
            above = np.flatnonzero(scores[r] > kth[r])
            at = np.flatnonzero(scores[r] == kth[r])[: kk - above.size]
            part[r] = np.concatenate([above, at])
    else:
        part = np.tile(np.arange(m), (n, 1))
    part.sort(axis=1)  # lower index first, so the stable sort below breaks ties by index
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


@dataclass
class CandidateSet:
    """Fused candidates of a batch of users, sorted by user row, then fused rank."""

    row: np.ndarray  # (c,) the user's position in the request
    item: np.ndarray  # (c,) position in the catalogue (item_ids_)
    rrf: np.ndarray  # (c,) fused score
    pos: np.ndarray  # (c,) fused rank within the user's list
    source: np.ndarray  # (c,) index into names: the source that ranked the item highest
    rank: np.ndarray  # (c, n_sources) each source's rank of the item; NaN where it did not propose it
    score: np.ndarray  # (c, n_sources) each source's own score; NaN likewise
    names: list[str]

    def take(self, mask: np.ndarray) -> CandidateSet:
        return CandidateSet(
            self.row[mask],
            self.item[mask],
            self.rrf[mask],
            self.pos[mask],
            self.source[mask],
            self.rank[mask],
            self.score[mask],
            self.names,
        )


@dataclass(frozen=True)
class RequestContext:
    """What a server knows about one request beyond the user: its moment (epoch seconds; None: the
    bundle's own training time), its surface, and the online feature store (None offline: a
    pipeline with a real-time ranker then ranks with its retrieval-feature ranker)."""

    now: float | None = None
    surface: str | None = None
    features: Any = None  # a feedrec.features.online.OnlineFeatureStore
    # When a dict, the ranker records its inputs there ("items", "names", "matrix"): the features
    # the server ranked with, for the served log.
    record: dict[str, Any] | None = None


class ServedPipeline(Protocol):
    """The stages a server runs per request, one by one, so that it can time, budget and fall back
    from each: ``retrieve`` (a candidate set, without the items in ``exclude``), ``rank`` (a score
    per candidate), ``arrange`` (each user's top ``k``, shaped by the re-ranker unless ``rerank``
    is off) and ``popular`` (the fallback when retrieval fails). ``Recommender.serving()`` gives a
    model's pipeline: the whole feed's own stages, or ``SingleStage`` for a one-stage model."""

    def retrieve(self, users: np.ndarray, k: int, *, exclude: Sequence[str] = ()) -> CandidateSet: ...

    def rank(
        self, users: np.ndarray, candidates: CandidateSet, context: RequestContext | None = None
    ) -> np.ndarray: ...

    def arrange(
        self,
        n_users: int,
        candidates: CandidateSet,
        scores: np.ndarray,
        k: int,
        *,
        rerank: bool = True,
        now: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def popular(self, k: int, *, exclude: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def arrange_by_score(
    item_ids: np.ndarray, n_users: int, c: CandidateSet, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's top ``k`` candidates by ``scores`` (ties: the earlier candidate), unshaped:
    (item_ids, scores, sources), each (n_users, k), padded with PAD_ID."""
    out_ids = np.full((n_users, k), PAD_ID, dtype=object)
    out_scores = np.full((n_users, k), np.nan, np.float32)
    out_src = np.full((n_users, k), "", dtype=object)
    if c.row.size:
        names = np.asarray(c.names, dtype=object)
        order = np.lexsort((c.item, c.pos, -scores, c.row))
        rows = c.row[order]
        slot = np.arange(rows.size) - np.searchsorted(rows, rows)  # rank within the user's list
        keep = slot < k
        take = order[keep]
        out_ids[rows[keep], slot[keep]] = item_ids[c.item[take]]
        out_scores[rows[keep], slot[keep]] = scores[take]
        out_src[rows[keep], slot[keep]] = names[c.source[take]]
    return out_ids.astype(str), out_scores, out_src.astype(str)


class SingleStage:
    """A one-stage model as a served pipeline: its own top-k (with sources, when it has them) is
    the candidate set, in its order; ranking keeps that order and arranging cuts it to ``k``."""

    def __init__(self, model: Recommender) -> None:
        self.model = model

    def retrieve(self, users: np.ndarray, k: int, *, exclude: Sequence[str] = ()) -> CandidateSet:
        model = self.model
        with_sources = getattr(model, "recommend_with_sources", None)
        if with_sources is not None:
            ids, scores, sources = with_sources(users, k + len(exclude))
        else:
            ids, scores = model.recommend(users, k + len(exclude))
            sources = np.full(ids.shape, type(model).__name__, dtype=object)
        rows, cols = np.nonzero((ids != PAD_ID) & ~np.isin(ids, list(exclude)))
        kept = np.asarray(sources, dtype=str)[rows, cols]
        names = sorted(set(kept.tolist())) or [type(model).__name__]
        source = np.searchsorted(np.asarray(names), kept).astype(np.int64)
        item = model.item_index().lookup(ids[rows, cols])
        score = np.asarray(scores, np.float64)[rows, cols]
        pos = cols.astype(np.int64)
        nan = np.full((rows.size, 1), np.nan)
        return CandidateSet(rows.astype(np.int64), item, score, pos, source, nan, nan, names)

    def rank(self, users: np.ndarray, candidates: CandidateSet, context: RequestContext | None = None) -> np.ndarray:
        return candidates.rrf

    def arrange(
        self,
        n_users: int,
        candidates: CandidateSet,
        scores: np.ndarray,
        k: int,
        *,
        rerank: bool = True,
        now: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return arrange_by_score(self.model.item_ids_, n_users, candidates, scores, k)

    def popular(self, k: int, *, exclude: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.model.popular(k, exclude=exclude)


class Recommender(ABC):
    """Base of every retrieval model."""

    #: Learned attributes (ndarray, scipy CSR, or dict of ndarrays) written by ``save`` beside the base state.
    _state_attrs: ClassVar[tuple[str, ...]] = ()
    _base_attrs: ClassVar[tuple[str, ...]] = ("user_ids_", "item_ids_", "user_items_", "item_counts_")

    user_ids_: np.ndarray
    item_ids_: np.ndarray
    user_items_: sp.csr_matrix  # (n_users, n_items) 1 where the user interacted in training
    item_counts_: np.ndarray  # (n_items,) training interactions per item

    # -- parameters (scikit-learn's rule) --------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def serving(self) -> ServedPipeline:
        """The stages a server runs for this model (``ServedPipeline``); one stage unless overridden."""
        return SingleStage(self)

    def popular(self, k: int, *, exclude: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` most interacted-with training items, less ``exclude``: (item_ids, counts,
        sources), each (k,) or shorter. The served pipelines' fallback when retrieval fails."""
        order = np.argsort(-self.item_counts_, kind="stable")[: k + len(exclude)]
        if exclude:
            order = order[~np.isin(self.item_ids_[order], list(exclude))]
        order = order[:k]
        return self.item_ids_[order], self.item_counts_[order], np.full(order.size, "popularity")

    def set_params(self, **params: Any) -> Self:
        """Change hyperparameters (before ``fit``); an unknown name is an error that lists the known."""
        known = self.get_params()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {unknown}; its parameters: {sorted(known)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def clone(self) -> Self:
        """A new, unfitted model with the same hyperparameters (copied, so changing one changes neither)."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- id lookups ------------------------------------------------------------------------------
    def user_index(self) -> IdIndex:
        """Lookup of the user ids the model knows; built once per fitted/loaded state, not per call."""
        return self._cached_index("user_ids_")

    def item_index(self) -> IdIndex:
        """Lookup of the catalogue's item ids; built once per fitted/loaded state, not per call."""
        return self._cached_index("item_ids_")

    def _cached_index(self, attr: str) -> IdIndex:
        ids = getattr(self, attr)
        cache: dict[str, tuple[np.ndarray, IdIndex]] = self.__dict__.setdefault("_index_cache", {})
        hit = cache.get(attr)
        if hit is None or hit[0] is not ids:  # fit() or load() replaced the ids: rebuild
            hit = (ids, IdIndex(ids))
            cache[attr] = hit
        return hit[1]

    # -- contract --------------------------------------------------------------------------------
    def fit(self, interactions: Interactions, side: SideInfo | None = None) -> Self:
        """Learn from ``interactions`` (and item/user side information where the model uses it)."""
        if len(interactions) == 0:
            raise ValueError(f"{type(self).__name__}.fit: no interactions to learn from")
        self._validate_params()
        self.user_ids_ = interactions.users.ids
        self.item_ids_ = interactions.items.ids
        self.user_items_ = interactions.to_csr(binary=True)
        self.item_counts_ = np.bincount(interactions.item_idx, minlength=interactions.n_items).astype(np.float64)
        self._fit(interactions, side)
        return self

    def recommend(
        self, user_ids: np.ndarray | list[str], k: int = 10, *, exclude_seen: bool = True, batch_size: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each user: ``(item_ids (n, k) str, scores (n, k) float32)``.

        Unknown users get the most popular items. A row with fewer than k candidates is padded
        with ``PAD_ID`` and NaN scores.
        """
        out_idx, out_scores = self.recommend_indices(user_ids, k, exclude_seen=exclude_seen, batch_size=batch_size)
        ids = np.where(out_idx >= 0, self.item_ids_[np.maximum(out_idx, 0)], PAD_ID)
        return ids, out_scores

    def recommend_indices(
        self, user_ids: np.ndarray | list[str], k: int = 10, *, exclude_seen: bool = True, batch_size: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``recommend`` as catalogue positions into ``item_ids_`` (-1 padding) instead of ids."""
        if not hasattr(self, "item_ids_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() or load() first")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        users = np.atleast_1d(np.asarray(user_ids).astype(str))
        uidx = self.user_index().lookup(users)
        n_items = self.item_ids_.size
        kk = min(k, n_items)
        out_idx = np.full((users.size, k), -1, np.int64)
        out_scores = np.full((users.size, k), np.nan, np.float32)

        known = np.flatnonzero(uidx >= 0)
        step = batch_size or max(1, 2_000_000 // max(n_items, 1))
        for lo in range(0, known.size, step):
            rows = known[lo : lo + step]
            idx, sc = self._recommend_known(uidx[rows], kk, exclude_seen=exclude_seen)
            out_idx[rows, :kk], out_scores[rows, :kk] = idx, sc
        unknown = np.flatnonzero(uidx < 0)
        if unknown.size:
            idx, sc = top_k(self._cold_start_scores()[None, :], kk)
            out_idx[unknown, :kk], out_scores[unknown, :kk] = idx, sc

        invalid = ~np.isfinite(out_scores)  # seen items that filled a short row
        out_idx[invalid] = -1
        out_scores[invalid] = np.nan
        return out_idx, out_scores

    def score_items(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Scores of the pairs (user_ids[i], item_ids[i]); NaN where the user or the item is unknown.

        For the ranking stage, which wants every source's opinion of every candidate."""
        if not hasattr(self, "item_ids_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() or load() first")
        uidx = self.user_index().lookup(np.asarray(user_ids).astype(str))
        iidx = self.item_index().lookup(np.asarray(item_ids).astype(str))
        out = np.full(uidx.size, np.nan)
        ok = np.flatnonzero((uidx >= 0) & (iidx >= 0))
        if ok.size:
            out[ok] = self._score_pairs(uidx[ok], iidx[ok])
        return out

    def _static_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """For a source whose scores depend on the user only through a group (a segment, or no one):
        ``(table (groups, n_items), group of each known user (n_users,))``; None for personal scores.

        With it, top-k walks each group's precomputed order (O(k + seen) per user) and pair scores
        are a gather, instead of scoring the dense catalogue for every request."""
        return None

    def _static(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(table, group, order) from ``_static_table``, with each group's items best first (ties to
        the lower index, as ``top_k``); computed once per fitted/loaded state."""
        cache: dict[str, tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]] = self.__dict__.setdefault(
            "_static_cache", {}
        )
        hit = cache.get("static")
        if hit is None or hit[0] is not self.item_ids_:  # fit() or load() replaced the state: rebuild
            static = self._static_table()
            if static is None:
                return None
            table = np.asarray(static[0], np.float32)
            hit = (self.item_ids_, (table, static[1], np.argsort(-table, axis=1, kind="stable")))
            cache["static"] = hit
        return hit[1]

    def _static_top_k(self, user_idx: np.ndarray, k: int, *, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        table, group, order = self._static()  # type: ignore[misc]
        out_idx = np.empty((user_idx.size, k), np.int64)
        out_scores = np.empty((user_idx.size, k), np.float32)
        indptr, indices = self.user_items_.indptr, self.user_items_.indices
        for r, u in enumerate(user_idx.tolist()):
            g = int(group[u])
            seen = indices[indptr[u] : indptr[u + 1]] if exclude_seen else np.empty(0, np.int64)
            head = order[g, : k + seen.size]
            if seen.size:
                head = head[~np.isin(head, seen)]
            head = head[:k]
            scores = table[g, head].astype(np.float32)
            if head.size < k:  # a short row: padded like the dense path (invalid scores are dropped)
                head = np.concatenate([head, np.zeros(k - head.size, np.int64)])
                scores = np.concatenate([scores, np.full(k - scores.size, -np.inf, np.float32)])
            out_idx[r], out_scores[r] = head, scores
        return out_idx, out_scores

    def _score_pairs(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Pair scores; by default gathered from ``_score`` one block of distinct users at a time."""
        static = self._static()
        if static is not None:
            table, group, _ = static
            return table[group[user_idx], item_idx].astype(np.float64)
        users, inverse = np.unique(user_idx, return_inverse=True)
        out = np.empty(user_idx.size)
        step = max(1, 2_000_000 // max(self.item_ids_.size, 1))
        by_user = np.argsort(inverse, kind="stable")  # pairs grouped by user: each block is one slice
        bounds = np.searchsorted(inverse[by_user], np.arange(0, users.size + step, step))
        for b, lo in enumerate(range(0, users.size, step)):
            rows = by_user[bounds[b] : bounds[b + 1]]
            block = np.asarray(self._score(users[lo : lo + step]))
            out[rows] = block[inverse[rows] - lo, item_idx[rows]]
        return out

    def _recommend_known(self, user_idx: np.ndarray, k: int, *, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for known users; by default exhaustive over ``_score``."""
        if self._static() is not None:
            return self._static_top_k(user_idx, k, exclude_seen=exclude_seen)
        scores = np.array(self._score(user_idx), dtype=np.float32, copy=True)
        if exclude_seen:
            seen = self.user_items_[user_idx].tocoo()
            scores[seen.row, seen.col] = -np.inf
        return top_k(scores, k)

    def _cold_start_scores(self) -> np.ndarray:
        """Scores for a user the model has never seen: popularity."""
        return self.item_counts_.astype(np.float32)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write the model to the folder ``path`` (model.json + state.npz)."""
        if not hasattr(self, "item_ids_"):
            raise NotFittedError("save() needs a fitted model")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for name in (*self._base_attrs, *self._state_attrs):
            value = getattr(self, name)
            if isinstance(value, dict):  # e.g. a network's weights: name -> array
                arrays |= {f"{name}/{key}": np.asarray(v) for key, v in value.items()}
            elif sp.issparse(value):
                csr = sp.csr_matrix(value)
                arrays |= {
                    f"{name}.data": csr.data,
                    f"{name}.indices": csr.indices,
                    f"{name}.indptr": csr.indptr,
                    f"{name}.shape": np.asarray(csr.shape),
                }
            else:
                arrays[name] = np.asarray(value)
        np.savez(path / "state.npz", **arrays)  # type: ignore[arg-type]
        manifest = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": self.get_params(),
            "feedrec_version": __version__,
        }
        (path / "model.json").write_text(json.dumps(manifest, indent=2, default=str))
        self._save_extra(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> Recommender:
        """Read a model written by ``save``; the class comes from the manifest."""
        path = Path(path)
        manifest = json.loads((path / "model.json").read_text())
        module, _, name = manifest["class"].rpartition(".")
        klass = getattr(importlib.import_module(module), name)
        if not (isinstance(klass, type) and issubclass(klass, Recommender)):
            raise TypeError(f"{manifest['class']} is not a Recommender")
        if cls is not Recommender and not issubclass(klass, cls):
            raise TypeError(f"{path} holds a {name}, not a {cls.__name__}")
        model = klass(**manifest["params"])
        with np.load(path / "state.npz", allow_pickle=False) as state:
            for attr in (*klass._base_attrs, *klass._state_attrs):
                nested = [key for key in state.files if key.startswith(f"{attr}/")]
                if nested:
                    value = {key.split("/", 1)[1]: state[key] for key in nested}
                elif f"{attr}.indptr" in state:
                    shape = tuple(int(x) for x in state[f"{attr}.shape"])
                    value = sp.csr_matrix(
                        (state[f"{attr}.data"], state[f"{attr}.indices"], state[f"{attr}.indptr"]),
                        shape=shape,
                    )
                else:
                    value = state[attr]
                setattr(model, attr, value)
        model._load_extra(path)
        return model

    # -- for subclasses --------------------------------------------------------------------------
    def _save_extra(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Write state that is not an array (an ANN index, sub-models) into the folder ``path``."""

    def _load_extra(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Read what ``_save_extra`` wrote."""

    def _validate_params(self) -> None:  # noqa: B027 - optional hook
        """Raise ValueError for an unusable hyperparameter."""

    @abstractmethod
    def _fit(self, interactions: Interactions, side: SideInfo | None) -> None: ...

    @abstractmethod
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        """(len(user_idx), n_items) scores for known users; higher is better."""
