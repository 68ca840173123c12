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
unit of independence) that fits the examination curve again in every draw. Diagnostics: the
share of the candidate's slots among the logged candidates (support) and matched by the logged
slate, the effective sample size of the weights.
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


def _examination(harvest: np.ndarray, valid: np.ndarray, shown_score: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """theta_j, the examination of position j in the logging ranker's score scale, from sums over
    requests (or, with a leading axis, over each bootstrap draw's requests). Its shape by
    intervention harvesting: E[c_j / pi(s_j, j)] = theta_j x (the candidates' total relevance),
    the same factor at every position, since exploration can put any candidate anywhere
    (``harvest``: the sum of c_j / pi(s_j, j), ``valid``: the requests with a position j); its
    scale: the ranker's scores of the shown items (``shown_score``, summed per position) times
    theta predict as many clicks (``clicks``) as happened."""
    shape = harvest / np.maximum(valid, 1)
    top = shape[..., :1]
    shape = np.where(top > 0, shape / np.where(top > 0, top, 1.0), 0.0)
    predicted = (shape * shown_score).sum(-1, keepdims=True)
    return shape * np.where(predicted > 0, np.asarray(clicks)[..., None] / np.where(predicted > 0, predicted, 1.0), 0.0)


def _per_request(log: Logged) -> dict[str, Any]:
    """Per request, what each estimator sums: IPS's clicks, SNIPS's per-position weights, and the
    parts of DR and PBM that do not depend on the examination curve (so that a bootstrap draw can
    fit the curve again, ``_curve_sums``); the curve's own sums; the diagnostics."""
    n, k = log.shown_rank.shape
    rows = np.arange(n)
    # An item the logging bundle did not score (a shadow's, merged in; or one outside the
    # candidates): scored as the lowest it did score.
    floor = np.nanmin(np.where(np.isnan(log.scores), np.inf, log.scores), axis=1)
    floor = np.where(np.isfinite(floor), floor, 0.0)
    filled = np.where(np.isnan(log.scores), floor[:, None], log.scores)
    valid = log.shown_rank >= 0
    shown_score = np.where(valid, filled[rows[:, None], np.maximum(log.shown_rank, 0)], 0.0)
    target_score = np.where(
        valid,
        np.where(log.target_rank >= 0, filled[rows[:, None], np.maximum(log.target_rank, 0)], floor[:, None]),
        0.0,
    )
    prop_shown = np.zeros((n, k))
    for row in range(n):
        kn = int(log.slots[row])
        prop_shown[row, :kn] = log.tables[row][log.shown_rank[row, :kn], np.arange(kn)]
    harvest = np.where(valid & (prop_shown > 0), log.clicks / np.where(prop_shown > 0, prop_shown, 1.0), 0.0)
    # PBM: a click on the item shown at j' counts with the policy's examination of that item
    # (want @ theta) over the logging policy's expected examination of it (expect @ theta).
    clicked_rows, clicked_at = np.nonzero(log.clicks > 0)
    want = np.zeros((clicked_rows.size, k))
    expect = np.zeros((clicked_rows.size, k))
    for m, (at_row, jp) in enumerate(zip(clicked_rows, clicked_at, strict=True)):
        kn, rank = int(log.slots[at_row]), log.shown_rank[at_row, jp]
        want[m, :kn] = log.target_rank[at_row, :kn] == rank
        expect[m, :kn] = log.tables[at_row][rank, :kn]
    matched = valid & (log.shown_rank == log.target_rank)
    w = np.where(matched, 1.0 / np.where(prop_shown > 0, prop_shown, np.inf), 0.0)
    supported = (log.target_rank >= 0) & valid
    ess = [(w[:, j].sum() ** 2) / max((w[:, j] ** 2).sum(), 1e-12) for j in range(k)]
    theta = _examination(harvest.sum(0), valid.sum(0), shown_score.sum(0), log.clicks.sum())
    return {
        "ips": (w * log.clicks).sum(1),
        "snips_num": w * log.clicks,
        "snips_den": w,
        # DR = theta @ dr_theta + dr_rest: the reward model's value of the policy's slate, plus
        # the matched slots' weighted residuals.
        "dr_theta": w * -shown_score + target_score,
        "dr_rest": (w * log.clicks).sum(1),
        "harvest": harvest,
        "valid": valid.astype(np.float64),
        "shown_score": shown_score,
        "clicks": log.clicks.sum(1),
        "pbm_pairs": (clicked_rows, log.clicks[clicked_rows, clicked_at], want, expect),
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


def _pbm_sums(pairs: tuple[np.ndarray, ...], theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """PBM's numerator for each curve in ``theta`` (draws, k), each clicked pair weighted by
    ``weights`` (draws, pairs): how many times its user was drawn."""
    _, clicks, want, expect = pairs
    wanted, expected = theta @ want.T, theta @ expect.T  # (draws, pairs)
    ratio = np.where(expected > 0, wanted / np.where(expected > 0, expected, 1.0), 0.0)
    return (weights * clicks[None, :] * ratio).sum(1)


def _value(name: str, sums: dict[str, np.ndarray]) -> float:
    if name == "snips":
        num, den = sums["snips_num"], sums["snips_den"]
        per_position = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return float(np.nanmean(per_position))
    return float(sums[name] / sums["slots"])


def _draws(log: Logged, per: dict[str, Any], counts: np.ndarray, estimators: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each estimator's value for each row of ``counts`` (draws, users): how many times each user
    is drawn (all ones: the estimate itself). Every estimator is a function of per-user sums, so a
    draw is a reweighting; the examination curve is fitted again from each draw's sums, so DR's and
    PBM's intervals carry the curve's uncertainty as well as the clicks'."""

    def by_user(values: np.ndarray) -> np.ndarray:
        out = np.zeros((log.n_users, *values.shape[1:]))
        np.add.at(out, log.users, values)
        return out

    keys = ("ips", "snips_num", "snips_den", "dr_theta", "dr_rest", "harvest", "valid", "shown_score", "clicks")
    user_sums = {key: by_user(per[key]) for key in keys} | {"slots": by_user(log.slots)}
    pairs = per["pbm_pairs"]
    pair_user = log.users[pairs[0]]
    values: dict[str, list[float]] = {name: [] for name in estimators}
    for chunk in np.array_split(counts, max(1, len(counts) // 100)):  # bounded memory: (chunk, pairs)
        sums = {name: np.tensordot(chunk, s, axes=(1, 0)) for name, s in user_sums.items()}
        theta = _examination(sums["harvest"], sums["valid"], sums["shown_score"], sums["clicks"])
        sums["dr"] = (theta * sums["dr_theta"]).sum(-1) + sums["dr_rest"]
        sums["pbm"] = _pbm_sums(pairs, theta, chunk[:, pair_user])
        for name in estimators:
            values[name] += [_value(name, {key: d[b] for key, d in sums.items()}) for b in range(len(chunk))]
    return {name: np.asarray(v) for name, v in values.items()}


def estimate(
    log: Logged, estimators: tuple[str, ...] = ESTIMATORS, *, boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Each estimator's CTR with a 95 % bootstrap interval over users (``_draws``), and the
    diagnostics."""
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise OpeError(f"unknown estimator {unknown[0]!r}; known: {', '.join(ESTIMATORS)}")
    per = _per_request(log)
    point = _draws(log, per, np.ones((1, log.n_users)), estimators)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(log.n_users, np.full(log.n_users, 1 / log.n_users), size=boot)  # (boot, users)
    drawn = _draws(log, per, counts, estimators)
    out: dict[str, Any] = {}
    for name in estimators:
        low, high = np.nanpercentile(drawn[name], [2.5, 97.5])
        out[name] = {"ctr": float(point[name][0]), "ci_low": float(low), "ci_high": float(high),
                     "se": float(np.nanstd(drawn[name], ddof=1))}  # fmt: skip
    return {
        "estimators": out,
        "diagnostics": per["diagnostics"],
        "logged_ctr": float(log.clicks.sum() / log.slots.sum()),
    }
