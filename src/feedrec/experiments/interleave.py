"""Team-draft interleaving (Radlinski, Kurup and Joachims, 2008): two rankings merged into one
feed; each click is credited to the team (ranking) that placed the item.

Each round, the team with fewer picks so far (a coin flip when even) adds its highest-ranked item
not shown yet. The analysis (``feedrec.experiments.analysis``) tests each exposed user's credited
clicks, A minus B, with a paired t-test, and reports the sign test over the users who prefer a team
beside it (``feedrec.experiments.stats``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

TEAMS = ("A", "B")


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """The interleaved feed of at most ``k`` items and the team that placed each."""
    rankings = (list(a), list(b))
    at = [0, 0]
    picks = [0, 0]
    shown: set[str] = set()
    items: list[str] = []
    teams: list[str] = []
    while len(items) < k:
        for side in (0, 1):
            while at[side] < len(rankings[side]) and rankings[side][at[side]] in shown:
                at[side] += 1
        left = [at[side] < len(rankings[side]) for side in (0, 1)]
        if not any(left):
            break
        side = 0 if picks[0] < picks[1] else 1 if picks[1] < picks[0] else int(rng.random() < 0.5)
        if not left[side]:
            side = 1 - side
        item = rankings[side][at[side]]
        shown.add(item)
        items.append(item)
        teams.append(TEAMS[side])
        picks[side] += 1
    return items, teams
