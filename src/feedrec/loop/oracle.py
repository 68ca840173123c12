"""What the world knows about a slate: its expected engagement, and the best slate there could be.

The oracle's slate for a user at time t is the top-k items by ground-truth relevance among those
published by t, excluding what the user already engaged with or hid, with fatigue counted; placed
best first, it has the largest expected clicks of any k-slate (the position weights fall, so by the
rearrangement inequality sorting is optimal; ``tests/unit/loop`` checks it by brute force).
"""

from __future__ import annotations

import numpy as np

from feedrec.data.world import World, examine, sigmoid


def oracle_slate(world: World, user: int, t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(items, P(click) per slot) of the best ``k``-slate for ``user`` at ``t``."""
    mask = world.item_created <= t
    done, _ = world.engaged.row(user)
    mask[done] = False
    available = np.flatnonzero(mask)
    if available.size == 0:
        return np.empty(0, np.int64), np.empty(0)
    n = available.size
    seen = np.zeros(world.n_items, np.int64)  # the user's exposures, dense: one scatter, no search
    shown, counts = world.exposures.row(user)
    seen[shown] = counts
    rel = sigmoid(world.logit(np.full(n, user), available, np.full(n, t, np.int64), seen[available]))
    k = min(k, n)
    top = np.argpartition(-rel, k - 1)[:k] if k < n else np.arange(n)
    top = top[np.lexsort((available[top], -rel[top]))]  # best first; ties by item id
    return available[top], examine(np.arange(k)) * rel[top]
