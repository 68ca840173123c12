"""Who gets which arm: deterministic salted hashes of the user id into buckets.

A user's place in a layer is ``bucket("layer:<layer>", user)``; an experiment owns a range of its
layer's buckets (allotted at start), so experiments in one layer never share a user, while the
hashes of different layers are independent: a user's arm in one layer says nothing about their
arm in another (orthogonal layers). Within an experiment, the arm is ``bucket(salt, user)``
against the arms' cumulative weights; a new salt re-randomizes. The global holdout,
``bucket("holdout:<salt>", user) < holdout``, keeps a share of all users out of every experiment.

Every arm here chooses the whole bundle that serves a feed, so a user in running experiments of
several layers is served (and exposed) by the first of them, layers in name order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from feedrec.experiments.definition import BUCKETS, Arm, Experiment, ExperimentsState


def bucket(salt: str, user_id: str, n: int = BUCKETS) -> int:
    """A uniform, stable bucket in [0, n) for ``user_id`` under ``salt`` (BLAKE2b, 64 bits)."""
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def buckets(salt: str, user_ids: Sequence[str], n: int = BUCKETS) -> np.ndarray:
    """``bucket`` for many users: (n_users,) int64."""
    return np.fromiter((bucket(salt, u, n) for u in user_ids), np.int64, len(user_ids))


def arm_index(arms: Sequence[Arm], b: np.ndarray | int) -> np.ndarray:
    """The arm each arm-bucket ``b`` falls in, by the arms' cumulative weights."""
    weights = np.asarray([a.weight for a in arms], np.float64)
    edges = np.cumsum(weights) / weights.sum() * BUCKETS
    return np.minimum(np.searchsorted(edges, np.asarray(b), side="right"), len(arms) - 1)


@dataclass(frozen=True)
class Assignment:
    experiment: Experiment
    arm: Arm


class Assigner:
    """Routes users by one ``ExperimentsState`` (immutable: the server swaps in a new one)."""

    def __init__(self, state: ExperimentsState) -> None:
        self.state = state
        layers: dict[str, list[Experiment]] = {}
        for experiment in state.running():
            layers.setdefault(experiment.layer, []).append(experiment)
        self.layers = dict(sorted(layers.items()))

    @property
    def versions(self) -> set[str]:
        """Every bundle a running experiment serves."""
        return {v for experiments in self.layers.values() for e in experiments for v in e.versions}

    def held_out(self, user_id: str) -> bool:
        return self.state.holdout > 0 and bucket(f"holdout:{self.state.holdout_salt}", user_id) < round(
            self.state.holdout * BUCKETS
        )

    def assignments(self, user_id: str) -> list[Assignment]:
        """The user's arm in each layer they have one in (none when held out)."""
        if not self.layers or self.held_out(user_id):
            return []
        out = []
        for layer, experiments in self.layers.items():
            b = bucket(f"layer:{layer}", user_id)
            for e in experiments:
                if e.buckets is not None and e.buckets[0] <= b < e.buckets[1]:
                    out.append(Assignment(e, e.arms[int(arm_index(e.arms, bucket(e.salt, user_id)))]))
                    break
        return out

    def assign(self, user_id: str) -> Assignment | None:
        """The arm that serves ``user_id``'s feed: the first layer's, or None (production)."""
        found = self.assignments(user_id)
        return found[0] if found else None
