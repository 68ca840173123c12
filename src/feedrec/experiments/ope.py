"""``feedrec ope``: a candidate bundle's CTR estimated from feeds another policy served.

The log: the exposures of an exploring arm (``feedrec.experiments.explore``: a Plackett-Luce
sample of the logging bundle's top items, with the table of propensities P(rank r at position
j)), each with the slate the candidate (``policy``, a shadow version) would have shown the same
request, and the clicks that followed (attributed as in the analysis). With s the logged slate,
sigma the candidate's, c the clicks, pi(i, j) the logging propensity of item i at position j and
w_j = 1[s_j = sigma_j] / pi(s_j, j), per request, CTR being clicks per slot:

- ``ips``: sum_j w_j c_j / k (item-position IPS: unbiased when a click depends on the item and
  its position only and sigma's items are among the logged candidates);
- ``snips``: per position, sum w c / sum w over requests, averaged over positions;
- ``dr``: doubly robust, sum_j [r(sigma_j, j) + w_j (c_j - r(s_j, j))] / k, with the reward
  model r(i, j) = theta_j p(i): p the logging bundle's impression ranker's calibrated score
  (at the top position) and theta_j the examination of position j (``_examination``: its shape
  harvested from the exploration, its scale fitted to the clicks);
- ``pbm``: the position-based model's estimator (Li et al., 2018), sum over shown items i of
  c_i (sum_j theta_j 1[sigma_j = i]) / (sum_j theta_j pi(i, j)) / k.

Each estimate is a ratio of per-request sums; its 95 % interval is a bootstrap over users (the
unit of independence). Diagnostics: the share of the candidate's slots among the logged
candidates (support) and matched by the logged slate, the effective sample size of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from feedrec.data.store import EventStore
from feedrec.experiments.explore import marginals
from feedrec.experiments.exposures import read_records
from feedrec.experiments.store import ExperimentStore

ESTIMATORS = ("ips", "snips", "dr", "pbm")


class OpeError(ValueError):
    """Nothing to estimate from: the message says what the log lacks."""


@dataclass
class Logged:
    """The exploring feeds that carry ``policy``'s slate: per request, padded to k positions."""

    users: np.ndarray  # (n,) user index
    shown_rank: np.ndarray  # (n, k) the logged item's rank among the candidates (-1: no item)
    target_rank: np.ndarray  # (n, k) the policy's item's rank among the candidates (-1: not among them)
    clicks: np.ndarray  # (n, k) clicks on the logged item at each position
    scores: np.ndarray  # (n, top) the logging ranker's score of each candidate (nan: none)
    tables: list[np.ndarray]  # per request, (top_n, k_n) P(rank at position)
    slots: np.ndarray  # (n,) positions shown
    n_users: int


def load(
    events: EventStore,
    store: ExperimentStore,
    policy: str,
    *,
    experiment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    window_s: float = 3600,
) -> Logged:
    records = [
        r
        for r in read_records(store.exposures_dir, experiment)
        if "explore" in r and policy in (r.get("shadow") or {}) and r["explore"]["ranks"]
    ]
    times = [datetime.fromisoformat(r["time"]) for r in records]
    records = [
        r for r, t in zip(records, times, strict=True) if (since is None or t >= since) and (until is None or t < until)
    ]
    if not records:
        raise OpeError(
            f"no exploring exposures with {policy!r}'s slate logged"
            + (f" in experiment {experiment!r}" if experiment else "")
            + ": run an arm with explore and shadow=["
            + policy
            + "]"
        )
    first = min(datetime.fromisoformat(r["time"]) for r in records)
    last = max(datetime.fromisoformat(r["time"]) for r in records)
    clicked = pl.DataFrame(
        pl.from_arrow(
            events.scan(
                columns=["request_id", "user_id", "item_id", "timestamp"],
                types=["click"],
                start=first,
                end=last + timedelta(seconds=window_s),
            )
        )
    )
    served = pl.DataFrame(
        {
            "request_id": [r["request_id"] for r in records],
            "exposed_user": [r["user_id"] for r in records],
            "exposed_at": [datetime.fromisoformat(r["time"]) for r in records],
        },
        schema_overrides={"exposed_at": pl.Datetime("us", "UTC")},
    )
    hits = (
        clicked.join(served, on="request_id")
        .filter(
            (pl.col("user_id") == pl.col("exposed_user"))
            & (pl.col("timestamp") >= pl.col("exposed_at"))
            & (pl.col("timestamp") < pl.col("exposed_at") + timedelta(seconds=window_s))
        )
        .group_by("request_id", "item_id")
        .len()
    )
    click_of = {(r, i): n for r, i, n in hits.iter_rows()}
    k = max(len(r["items"]) for r in records)
    top = max(len(r["explore"]["candidates"]) for r in records)
    n = len(records)
    shown_rank = np.full((n, k), -1, np.int64)
    target_rank = np.full((n, k), -1, np.int64)
    clicks = np.zeros((n, k))
    scores = np.full((n, top), np.nan)
    tables = []
    user_index: dict[str, int] = {}
    users = np.zeros(n, np.int64)
    for row, r in enumerate(records):
        e = r["explore"]
        rank_of = {item: rank for rank, item in enumerate(e["candidates"])}
        ranks = e["ranks"]
        shown_rank[row, : len(ranks)] = ranks
        for j, item in enumerate(r["shadow"][policy][:k]):
            target_rank[row, j] = rank_of.get(item, -1)
        for j, item in enumerate(r["items"]):
            clicks[row, j] = min(click_of.get((r["request_id"], item), 0), 1)
        scores[row, : len(e["scores"])] = [np.nan if x is None else x for x in e["scores"]]
        tables.append(marginals(len(e["candidates"]), len(ranks), float(e["temperature"])))
        users[row] = user_index.setdefault(r["user_id"], len(user_index))
    slots = np.asarray([len(r["explore"]["ranks"]) for r in records], np.float64)
    return Logged(users, shown_rank, target_rank, clicks, scores, tables, slots, len(user_index))


def _examination(log: Logged, prop_shown: np.ndarray, shown_score: np.ndarray) -> np.ndarray:
    """theta_j, the examination of position j in the logging ranker's score scale. Its shape by
    intervention harvesting: E[c_j / pi(s_j, j)] = theta_j x (the candidates' total relevance),
    the same factor at every position, since exploration can put any candidate anywhere; its
    scale: the ranker's scores of the shown items times theta predict as many clicks as happened."""
    valid = log.shown_rank >= 0
    harvested = np.where(valid & (prop_shown > 0), log.clicks / np.where(prop_shown > 0, prop_shown, 1.0), 0.0)
    shape = harvested.sum(0) / np.maximum(valid.sum(0), 1)
    if shape[0] <= 0:
        return np.zeros(shape.size)
    shape = shape / shape[0]
    predicted = float(np.nansum(np.where(valid, shown_score, np.nan) * shape[None, :]))
    return shape * (float(log.clicks.sum()) / predicted if predicted > 0 else 0.0)


def _per_request(log: Logged) -> dict[str, Any]:
    """Each estimator's per-request numerator (clicks per request; the denominator is the slots),
    the per-position weights SNIPS normalizes, and the diagnostics."""
    n, k = log.shown_rank.shape
    rows = np.arange(n)
    # An item the logging bundle did not score (a shadow's, merged in; or one outside the
    # candidates): scored as the lowest it did score.
    floor = np.nanmin(np.where(np.isnan(log.scores), np.inf, log.scores), axis=1)
    floor = np.where(np.isfinite(floor), floor, 0.0)
    filled = np.where(np.isnan(log.scores), floor[:, None], log.scores)
    shown_score = np.where(log.shown_rank >= 0, filled[rows[:, None], np.maximum(log.shown_rank, 0)], np.nan)
    prop_shown = np.zeros((n, k))
    for row in range(n):
        kn = int(log.slots[row])
        prop_shown[row, :kn] = log.tables[row][log.shown_rank[row, :kn], np.arange(kn)]
    theta = _examination(log, prop_shown, shown_score)
    pbm = np.zeros(n)
    reward_target = np.zeros((n, k))

    for row in range(n):
        table, kn = log.tables[row], int(log.slots[row])
        for j in range(kn):
            t = log.target_rank[row, j]
            score = filled[row, t] if t >= 0 else floor[row]
            reward_target[row, j] = theta[j] * score
        # PBM: a click on the item shown at j' counts with the policy's examination of that item
        # over the logging policy's expected examination of it.
        for jp in range(kn):
            if log.clicks[row, jp] == 0:
                continue
            rank = log.shown_rank[row, jp]
            wanted = sum(theta[j] for j in range(kn) if log.target_rank[row, j] == rank)
            expected = float(theta[:kn] @ table[rank, :kn])
            pbm[row] += log.clicks[row, jp] * wanted / expected if expected > 0 else 0.0
    valid = log.shown_rank >= 0
    matched = valid & (log.shown_rank == log.target_rank)
    w = np.where(matched, 1.0 / np.where(prop_shown > 0, prop_shown, np.inf), 0.0)
    reward_shown = np.where(valid, theta[None, :] * np.nan_to_num(shown_score), 0.0)
    ips = (w * log.clicks).sum(1)
    dr = (np.where(valid, reward_target, 0.0) + w * (log.clicks - reward_shown)).sum(1)
    supported = (log.target_rank >= 0) & valid
    ess = [(w[:, j].sum() ** 2) / max((w[:, j] ** 2).sum(), 1e-12) for j in range(k)]
    return {
        "ips": ips,
        "dr": dr,
        "pbm": pbm,
        "snips_num": w * log.clicks,
        "snips_den": w,
        "diagnostics": {
            "requests": int(n),
            "users": int(log.n_users),
            "support": float(supported.sum() / valid.sum()),
            "matched": float(matched.sum() / valid.sum()),
            "ess_per_position": [round(float(e), 1) for e in ess],
            "max_weight": float(w.max()),
            "mean_weight_per_position": [round(float(x), 3) for x in w.sum(0) / n],
            "theta": [round(float(x), 4) for x in theta / theta[0]] if theta[0] > 0 else [],
        },
    }


def _value(name: str, sums: dict[str, np.ndarray]) -> float:
    if name == "snips":
        num, den = sums["snips_num"], sums["snips_den"]
        per_position = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return float(np.nanmean(per_position))
    return float(sums[name] / sums["slots"])


def estimate(
    log: Logged, estimators: tuple[str, ...] = ESTIMATORS, *, boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Each estimator's CTR with a 95 % bootstrap interval over users, and the diagnostics."""
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise OpeError(f"unknown estimator {unknown[0]!r}; known: {', '.join(ESTIMATORS)}")
    per = _per_request(log)

    # Per-user sums: every estimator is a function of them, so a bootstrap draw is a reweighting.
    def by_user(values: np.ndarray) -> np.ndarray:
        out = np.zeros((log.n_users, *values.shape[1:]))
        np.add.at(out, log.users, values)
        return out

    user_sums = {
        "ips": by_user(per["ips"]),
        "dr": by_user(per["dr"]),
        "pbm": by_user(per["pbm"]),
        "snips_num": by_user(per["snips_num"]),
        "snips_den": by_user(per["snips_den"]),
        "slots": by_user(log.slots),
    }
    total = {name: s.sum(0) for name, s in user_sums.items()}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(log.n_users, np.full(log.n_users, 1 / log.n_users), size=boot)  # (boot, users)
    drawn = {name: np.tensordot(counts, s, axes=(1, 0)) for name, s in user_sums.items()}
    out: dict[str, Any] = {}
    for name in estimators:
        values = [_value(name, {key: d[b] for key, d in drawn.items()}) for b in range(boot)]
        low, high = np.nanpercentile(values, [2.5, 97.5])
        out[name] = {"ctr": _value(name, total), "ci_low": float(low), "ci_high": float(high),
                     "se": float(np.nanstd(values, ddof=1))}  # fmt: skip
    return {
        "estimators": out,
        "diagnostics": per["diagnostics"],
        "logged_ctr": float(log.clicks.sum() / log.slots.sum()),
    }
