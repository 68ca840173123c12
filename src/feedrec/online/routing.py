"""How an experiment's arm is served when it is more than one bundle's feed: a team-draft
interleaving of two bundles (``feedrec.experiments.interleave``), or an arm that logs for
off-policy evaluation (the shadow versions' slates, and when it explores a Plackett-Luce sample
of its candidates with their propensities). ``FeedService.feed`` routes here."""

from __future__ import annotations

import random
import time
import uuid
from typing import TYPE_CHECKING, Any

from feedrec.experiments import explore
from feedrec.experiments.assignment import Assignment
from feedrec.experiments.definition import Arm
from feedrec.experiments.interleave import team_draft

if TYPE_CHECKING:
    from feedrec.online.service import Bundle, Feed, FeedItem, FeedService


def for_ope(
    service: FeedService,
    bundle: Bundle,
    arm: Arm,
    user_id: str,
    k: int,
    surface: str | None,
    at: float | None,
    request_id: str,
    record: dict[str, Any] | None,
) -> tuple[list[FeedItem], str | None, dict[str, float], dict[str, Any]]:
    """An arm that logs for off-policy evaluation: the slates of the versions it shadows and,
    when it explores, a Plackett-Luce sample of its candidates (``feedrec.experiments.explore``)
    with what an estimator needs. Returns (items, fallback reason, stage timings, what to log)."""
    extra: dict[str, Any] = {}
    held = service.bundles
    shadows: dict[str, list[FeedItem]] = {}
    for v in arm.shadow:  # each shadow's feed for the same request, timed, its fallback noted
        if v in held:
            t = time.perf_counter()
            shadows[v], why_v, _ = service.personal(held[v], user_id, k, surface, at, None)
            extra.setdefault("shadow_ms", {})[v] = round((time.perf_counter() - t) * 1e3, 3)
            if why_v is not None:
                extra.setdefault("shadow_fallback", {})[v] = why_v
    if shadows:
        extra["shadow"] = {v: [i.item_id for i in slate] for v, slate in shadows.items()}
    if arm.explore is None:
        items, why, stages = service.personal(bundle, user_id, k, surface, at, record)
        return items, why, stages, extra
    # The bundle's longer list scores most of the shadows' items too (the reward model's input).
    ranked, why, stages = service.personal(bundle, user_id, max(3 * arm.explore_top, k), surface, at, None)
    own = {i.item_id: i for i in ranked}
    pool = {i.item_id: i for slate in shadows.values() for i in slate} | own
    slates = [[i.item_id for i in slate] for slate in shadows.values()]
    candidates = explore.merge([i.item_id for i in ranked[: arm.explore_top]], slates, arm.explore_top)
    ranks = explore.sample(len(candidates), min(k, len(candidates)), arm.explore, random.Random(request_id))
    table = explore.marginals(len(candidates), len(ranks), arm.explore) if ranks else None
    extra["explore"] = {
        "temperature": arm.explore,
        "candidates": candidates,
        "scores": [own[c].score if c in own else None for c in candidates],  # the bundle's own scores
        "ranks": ranks,
        "propensities": [float(table[r, j]) for j, r in enumerate(ranks)] if table is not None else [],
    }
    return [pool[candidates[r]] for r in ranks], why, stages, extra


def interleaved(
    service: FeedService,
    assignment: Assignment,
    user_id: str,
    k: int,
    surface: str | None,
    at: float | None,
    start: float,
) -> Feed:
    """A team-draft interleaving of the two versions' feeds (``feedrec.experiments.interleave``)."""
    a, b = (service.bundles[v] for v in assignment.arm.interleave or ())
    feed_a, why_a, stages = service.personal(a, user_id, k, surface, at, None)
    feed_b, why_b, stages_b = service.personal(b, user_id, k, surface, at, None)
    stages.update({f"{name}_b": ms for name, ms in stages_b.items()})
    request_id = uuid.uuid4().hex
    ids, teams = team_draft([i.item_id for i in feed_a], [i.item_id for i in feed_b], k, random.Random(request_id))
    from feedrec.online.service import Feed  # the service imports this module

    by_id = {i.item_id: i for i in feed_b} | {i.item_id: i for i in feed_a}
    items = [by_id[i] for i in ids]
    version = f"{a.version}+{b.version}"
    service.log_served(request_id, user_id, surface, items, version, at)
    why = why_a or why_b
    feed = Feed(request_id, user_id, version, items, why is not None, 0.0, why, stages)
    return service.finish(feed, assignment, at, start, teams)
