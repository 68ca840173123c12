"""The simulated world: who the users are, what the items are, and how a user reacts to a slate.

``World.draw(cfg)`` draws everything that exists: topics, creators and items (with publish times,
some after the logged window: the world goes on after it), users (tastes, a latent taste vector,
an activity rate, a scheduled taste shift; some join after the window) and the random state the
log's sessions continue from. ``World.log()`` simulates the logged window with the "production"
policy the log was collected under; ``save``/``load`` keep the world on disk (``DIR/world/``) so
that live traffic (``feedrec.loop``) can continue it, and a loaded world logs the same events.

The ground truth, shared by the log and the live loop:

    logit = -0.8 + b_u + 0.9*log(taste[topic]*T) + 0.6*quality + 3*<p_u, q_i> - 0.5*log1p(age_days)
            - 0.4*log1p(times the user was shown the item before)          (fatigue)
    relevance r = sigmoid(logit);  P(click) = examine(position) * r,  examine(pos) = (1 + pos) ** -0.7
    like, share and dwell seconds follow a click, increasing in r; hide follows an irrelevant skip.

``b_u`` is the user's own propensity to engage (``simulator.user_propensity_sd``; 0 by default):
some people click much more than others, whatever they are shown. It moves every item of a
user's feed alike, so it changes how much a user engages, never which slate is best; it is what
makes users differ from each other, which variance reduction (CUPED) and interleaving rely on.
It is drawn from a generator of its own, so a world with it is the same world otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from feedrec.config import SimulatorConfig

DAY = 86_400
LATENT_DIM = 8
FATIGUE = 0.4
NEVER = np.iinfo(np.int64).max
# Feed sessions peak in the evening (UTC hours).
DIURNAL = np.array([2, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 4, 5, 5, 4, 4, 5, 6, 7, 8, 8, 7, 5, 3], dtype=np.float64)
AGE_GROUPS = ("18-24", "25-34", "35-49", "50+")
COUNTRIES = ("us", "gb", "de", "fr", "in", "br")
FORMAT = 1  # the on-disk layout of DIR/world/

Progress = Callable[[int, int], None]  # (done, total) sessions


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def examine(position: np.ndarray) -> np.ndarray:
    """The chance that a user looks at the slot ``position`` (0 = top): the position bias."""
    return (1.0 + np.asarray(position, np.float64)) ** -0.7


class PairCounts:
    """Counts per (user, item) (exposures, engagements), as a sorted base array plus a small
    overlay of live additions: vectorized for a whole log, cheap for one slate at a time."""

    def __init__(self, n_items: int, keys: np.ndarray | None = None, counts: np.ndarray | None = None) -> None:
        self.n_items = n_items
        self.keys = np.empty(0, np.int64) if keys is None else keys.astype(np.int64)
        self.counts = np.empty(0, np.int64) if counts is None else counts.astype(np.int64)
        self.live: dict[int, dict[int, int]] = {}

    @classmethod
    def of(cls, n_items: int, users: np.ndarray, items: np.ndarray) -> PairCounts:
        keys, counts = np.unique(users.astype(np.int64) * n_items + items, return_counts=True)
        return cls(n_items, keys, counts)

    def row(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, counts) of one user."""
        lo, hi = np.searchsorted(self.keys, [user * self.n_items, (user + 1) * self.n_items])
        items, counts = self.keys[lo:hi] - user * self.n_items, self.counts[lo:hi]
        extra = self.live.get(user)
        if not extra:
            return items, counts
        dense = dict(zip(items.tolist(), counts.tolist(), strict=True))
        for item, n in extra.items():
            dense[item] = dense.get(item, 0) + n
        return np.fromiter(dense, np.int64, len(dense)), np.fromiter(dense.values(), np.int64, len(dense))

    def get(self, user: int, items: np.ndarray) -> np.ndarray:
        """The counts of (user, items[j])."""
        items = np.asarray(items, np.int64)
        out = np.zeros(items.size, np.int64)
        if self.keys.size:
            keys = user * self.n_items + items
            at = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
            hit = self.keys[at] == keys
            out[hit] = self.counts[at[hit]]
        extra = self.live.get(user)
        if extra:
            live_items = np.fromiter(extra, np.int64, len(extra))
            live_counts = np.fromiter(extra.values(), np.int64, len(extra))
            order = np.argsort(live_items)
            live_items, live_counts = live_items[order], live_counts[order]
            at = np.minimum(np.searchsorted(live_items, items), live_items.size - 1)
            hit = live_items[at] == items
            out[hit] += live_counts[at[hit]]
        return out

    def add(self, user: int, items: np.ndarray) -> None:
        extra = self.live.setdefault(user, {})
        for item in np.asarray(items).tolist():
            extra[item] = extra.get(item, 0) + 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything as sorted (keys, counts), the overlay merged in."""
        if not self.live:
            return self.keys, self.counts
        extra_k = [u * self.n_items + i for u, row in self.live.items() for i in row]
        extra_c = [n for row in self.live.values() for n in row.values()]
        keys = np.concatenate([self.keys, np.asarray(extra_k, np.int64)])
        counts = np.concatenate([self.counts, np.asarray(extra_c, np.int64)])
        uniq, inverse = np.unique(keys, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts).astype(np.int64)


@dataclass
class World:
    cfg: SimulatorConfig
    t0: int  # the logged window: [t0, t_end)
    t_end: int
    topic_mix: np.ndarray  # (T,) the global topic popularity; after a drift, topic_mix_drift
    topic_mix_drift: np.ndarray
    item_creator: np.ndarray
    item_topic: np.ndarray
    item_quality: np.ndarray
    item_vec: np.ndarray
    item_created: np.ndarray  # epoch seconds; some after t_end (published while the world lives on)
    user_age: np.ndarray
    user_country: np.ndarray
    taste: np.ndarray  # (n_users, T) before a user's shift
    taste_late: np.ndarray  # after it (the log's drift day, or an individual shift)
    taste_drift: np.ndarray  # after a live drift (``drift_at``)
    user_vec: np.ndarray
    shift_t: np.ndarray  # when each user's taste shifts (NEVER: it does not)
    user_joined: np.ndarray
    activity: np.ndarray  # mean sessions per day
    user_propensity: np.ndarray  # b_u: each user's logit offset (zeros: users equally inclined)
    rng_state: dict[str, Any]  # where the log's random draws start
    exposures: PairCounts  # how often each (user, item) has been shown
    engaged: PairCounts  # clicked (liked, shared) or hid
    clock: int  # the world's now: the end of what has been simulated
    drift_at: int | None = None  # a live drift: tastes and the topic mix shift at this time

    @property
    def n_items(self) -> int:
        return int(self.item_topic.size)

    @property
    def n_users(self) -> int:
        return int(self.user_vec.shape[0])

    # -- drawing ----------------------------------------------------------------------------------
    @classmethod
    def draw(cls, cfg: SimulatorConfig) -> World:
        rng = np.random.default_rng(cfg.seed)
        T = cfg.n_topics
        t0 = int(datetime.combine(cfg.start, datetime.min.time(), tzinfo=UTC).timestamp())
        t_end = t0 + cfg.days * DAY
        live = cfg.live_days * DAY
        drift_t = None if cfg.drift_day is None else t0 + cfg.drift_day * DAY
        # Items and users that arrive while the world lives on, at the logged window's rates.
        n_items = cfg.n_items + round(cfg.n_items * cfg.new_item_fraction * cfg.live_days / cfg.days)
        n_users = cfg.n_users + round(cfg.n_users * cfg.new_user_fraction * cfg.live_days / cfg.days)
        later_items, later_users = np.arange(n_items) >= cfg.n_items, np.arange(n_users) >= cfg.n_users

        topic_mix = rng.dirichlet(np.full(T, 1.5))
        topic_mix_drift = rng.dirichlet(np.full(T, 1.5))
        n_creators = max(1, round(cfg.n_items / cfg.items_per_creator))
        creator_topic = rng.choice(T, size=n_creators, p=topic_mix)
        creator_quality = rng.normal(0.0, 0.5, n_creators)
        creator_weight = rng.pareto(1.5, n_creators) + 1.0  # a few prolific creators
        item_creator = rng.choice(n_creators, size=n_items, p=creator_weight / creator_weight.sum())
        item_topic = np.where(
            rng.random(n_items) < 0.8, creator_topic[item_creator], rng.choice(T, size=n_items, p=topic_mix)
        )
        item_quality = creator_quality[item_creator] + rng.normal(0.0, 0.7, n_items)
        item_vec = rng.normal(0.0, 1.0, (n_items, LATENT_DIM)) / np.sqrt(LATENT_DIM)
        is_new_item = rng.random(n_items) < cfg.new_item_fraction
        u = rng.random(n_items)
        item_created = np.where(
            later_items,
            t_end + u * live,
            np.where(is_new_item, t0 + u * (t_end - t0), t0 - u * 60 * DAY),  # back catalogue: the 60 days before
        ).astype(np.int64)

        age_group = rng.integers(0, len(AGE_GROUPS), n_users)
        country = rng.integers(0, len(COUNTRIES), n_users)
        group_mix = rng.dirichlet(np.full(T, 1.0), len(AGE_GROUPS)) * 0.5 + topic_mix * 0.5
        group_mix_drift = rng.dirichlet(np.full(T, 1.0), len(AGE_GROUPS)) * 0.5 + topic_mix_drift * 0.5
        concentration = 0.3 * T

        def tastes(mix: np.ndarray) -> np.ndarray:
            return np.vstack([rng.dirichlet(concentration * mix[g]) for g in age_group])

        taste = tastes(group_mix)
        taste_late = tastes(group_mix_drift if drift_t is not None else group_mix)
        taste_drift = tastes(group_mix_drift)
        user_vec = rng.normal(0.0, 1.0, (n_users, LATENT_DIM)) / np.sqrt(LATENT_DIM)
        if drift_t is not None:
            shift_t = np.full(n_users, drift_t, np.int64)
        else:
            shifts = rng.random(n_users) < cfg.taste_shift_fraction
            when = (t0 + rng.random(n_users) * (t_end + live - t0)).astype(np.int64)
            shift_t = np.where(shifts, when, NEVER)
        is_new_user = rng.random(n_users) < cfg.new_user_fraction
        u = rng.random(n_users)
        user_joined = np.where(
            later_users,
            t_end + u * live,
            np.where(is_new_user, t0 + u * 0.9 * (t_end - t0), t0 - u * 365 * DAY),
        ).astype(np.int64)
        activity = rng.lognormal(0.0, 0.8, n_users)
        activity *= cfg.sessions_per_user_day / activity.mean()
        # Its own generator: the world's other draws (and the log's random state) do not depend on it.
        propensity = np.random.default_rng([cfg.seed, 1]).normal(0.0, 1.0, n_users) * cfg.user_propensity_sd
        return cls(
            cfg=cfg,
            t0=t0,
            t_end=t_end,
            topic_mix=topic_mix,
            topic_mix_drift=topic_mix_drift,
            item_creator=item_creator,
            item_topic=item_topic,
            item_quality=item_quality,
            item_vec=item_vec,
            item_created=item_created,
            user_age=age_group,
            user_country=country,
            taste=taste,
            taste_late=taste_late,
            taste_drift=taste_drift,
            user_vec=user_vec,
            shift_t=shift_t,
            user_joined=user_joined,
            activity=activity,
            user_propensity=propensity,
            rng_state=dict(rng.bit_generator.state),
            exposures=PairCounts(n_items),
            engaged=PairCounts(n_items),
            clock=t0,  # nothing simulated yet
        )

    # -- the ground truth -------------------------------------------------------------------------
    def drifted(self, t: np.ndarray) -> np.ndarray:
        """Whether the topic mix has shifted at times ``t`` (the log's drift day or a live drift)."""
        t = np.asarray(t, np.int64)
        out = np.zeros(t.shape, bool)
        if self.cfg.drift_day is not None:
            out |= t >= self.t0 + self.cfg.drift_day * DAY
        if self.drift_at is not None:
            out |= t >= self.drift_at
        return out

    def taste_of(self, users: np.ndarray, topics: np.ndarray, t: np.ndarray) -> np.ndarray:
        late = t >= self.shift_t[users]
        value = np.where(late, self.taste_late[users, topics], self.taste[users, topics])
        if self.drift_at is not None:
            value = np.where(t >= self.drift_at, self.taste_drift[users, topics], value)
        return value

    def logit(self, users: np.ndarray, items: np.ndarray, t: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """The ground-truth logit of relevance of ``items`` to ``users`` at times ``t`` (epoch s),
        given how often each pair was shown before (``seen``)."""
        T = self.cfg.n_topics
        taste_now = self.taste_of(users, self.item_topic[items], t)
        age_days = np.maximum(t - self.item_created[items], 0) / DAY
        return (
            -0.8
            + self.user_propensity[users]
            + 0.9 * np.log(np.maximum(taste_now * T, 1e-3))
            + 0.6 * self.item_quality[items]
            + self.latent_match(users, items)
            - 0.5 * np.log1p(age_days)
            - FATIGUE * np.log1p(seen)
        )

    def latent_match(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The logit's user-item latent term: what no feature names (it shows only in who clicked what)."""
        return 3.0 * np.einsum("ij,ij->i", self.user_vec[users], self.item_vec[items])

    def react(self, rng: np.random.Generator, logit: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        """What users do with items shown at ``position`` (0 = top): click, like, share, hide, dwell."""
        rel = sigmoid(logit)
        p_click = examine(position) * rel
        n = rel.size
        click = rng.random(n) < p_click
        like = click & (rng.random(n) < sigmoid(logit - 1.0))
        share = click & (rng.random(n) < 0.15 * sigmoid(logit - 1.0))
        hide = ~click & (rng.random(n) < 0.04 * examine(position) * (1.0 - rel) ** 2)
        dwell = np.where(click, rng.lognormal(np.log(15.0) + 1.5 * rel, 0.7), 0.0)
        return {"click": click, "like": like, "share": share, "hide": hide, "dwell": dwell, "p_click": p_click}

    def published(self, t: int) -> np.ndarray:
        """The items published by time ``t``."""
        return np.flatnonzero(self.item_created <= t)

    def active_users(self, t: int) -> np.ndarray:
        return np.flatnonzero(self.user_joined <= t)

    # -- the logged window ------------------------------------------------------------------------
    def log(self, progress: Progress | None = None) -> dict[str, np.ndarray]:
        """Simulate the logged window under the production policy (topic from the user's taste or
        the global mix, item by quality among those published, often recent ones): one row per
        impression with what followed. Starts from the drawn state, so a loaded world logs the same
        rows; leaves ``exposures``, ``engaged`` and ``clock`` at the window's end."""
        cfg = self.cfg
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng_state
        T, t0, t_end, L = cfg.n_topics, self.t0, self.t_end, cfg.slate_size
        logged = self.user_joined < t_end
        active_from = np.maximum(self.user_joined, t0)
        active_days = np.where(logged, (t_end - active_from) / DAY, 0.0)
        n_sessions = rng.poisson(self.activity * active_days)
        s_user = np.repeat(np.arange(self.n_users), n_sessions)
        day = np.floor(active_from[s_user] / DAY + rng.random(s_user.size) * active_days[s_user])
        hour = rng.choice(24, size=s_user.size, p=DIURNAL / DIURNAL.sum())
        s_time = (day * DAY + hour * 3600 + rng.random(s_user.size) * 3600).astype(np.int64)
        s_time = np.clip(s_time, active_from[s_user], t_end - 3600)
        order = np.argsort(s_time, kind="stable")
        s_user, s_time = s_user[order], s_time[order]
        s_surface = rng.integers(0, len(cfg.surfaces), s_user.size)

        # Items sorted by (topic, publish time) so that "published in topic k before t" is a range.
        created = self.item_created
        base = int(created.min())
        key = self.item_topic.astype(np.int64) * (1 << 40) + (created - base)
        by_key = np.argsort(key, kind="stable")
        sorted_key = key[by_key]
        show_weight = np.exp(0.8 * self.item_quality[by_key])
        cum_w = np.concatenate([[0.0], np.cumsum(show_weight)])
        topic_start = np.searchsorted(sorted_key, np.arange(T, dtype=np.int64) * (1 << 40))
        by_time = np.argsort(created, kind="stable")
        created_sorted = created[by_time]
        cum_taste = np.cumsum(self.taste, axis=1)
        cum_taste_late = np.cumsum(self.taste_late, axis=1)
        cum_mix = np.cumsum(np.vstack([self.topic_mix, self.topic_mix_drift]), axis=1)

        # Pass 1: the slates (who was shown what, where, when).
        slates: list[dict[str, np.ndarray]] = []
        n_sess = s_user.size
        chunk = max(1, 400_000 // L)
        for lo in range(0, n_sess, chunk):
            hi = min(n_sess, lo + chunk)
            su = np.repeat(s_user[lo:hi], L)
            st = np.repeat(s_time[lo:hi], L)
            sid = np.repeat(np.arange(lo, hi), L)
            pos = np.tile(np.arange(L), hi - lo)
            late = st >= self.shift_t[su]
            from_taste = rng.random(su.size) < 0.6  # topic: the user's current taste (60 %) or the mix
            topic = np.empty(su.size, np.int64)
            idx = np.flatnonzero(from_taste & ~late)
            topic[idx] = _row_categorical(rng, cum_taste, su[idx])
            idx = np.flatnonzero(from_taste & late)
            topic[idx] = _row_categorical(rng, cum_taste_late, su[idx])
            idx = np.flatnonzero(~from_taste)
            topic[idx] = _row_categorical(rng, cum_mix, self.drifted(st[idx]).astype(np.int64))
            # Item: quality-weighted among those published in that topic, half the time the last 7 days.
            t_rel = st - base
            lo_all = topic_start[topic]
            hi_all = np.searchsorted(sorted_key, topic * (1 << 40) + t_rel, side="right")
            lo_recent = np.searchsorted(sorted_key, topic * (1 << 40) + t_rel - 7 * DAY, side="left")
            use_recent = (rng.random(su.size) < 0.5) & (hi_all > lo_recent)
            lo_pick = np.where(use_recent, lo_recent, lo_all)
            target = cum_w[lo_pick] + rng.random(su.size) * (cum_w[hi_all] - cum_w[lo_pick])
            pick = np.clip(np.searchsorted(cum_w, target, side="right") - 1, lo_pick, np.maximum(hi_all - 1, lo_pick))
            item = by_key[np.minimum(pick, self.n_items - 1)]
            empty = hi_all <= lo_all  # a topic with nothing published yet: any published item instead
            if empty.any():
                n_pub = np.maximum(np.searchsorted(created_sorted, st[empty], side="right"), 1)
                item[empty] = by_time[(rng.random(int(empty.sum())) * n_pub).astype(np.int64)]
            keep = _first_in_session(sid, item)  # a feed does not show an item twice in one slate
            slates.append({"user": su[keep], "item": item[keep], "sid": sid[keep], "pos": pos[keep], "t": st[keep]})
        rows = {k: np.concatenate([s[k] for s in slates]) for k in slates[0]} if slates else {}
        if not rows:
            self.clock = t_end
            return {}

        # Fatigue: how often each (user, item) was shown before this impression (one sort).
        pair = rows["user"].astype(np.int64) * self.n_items + rows["item"]
        order = np.lexsort((rows["pos"], rows["t"], pair))
        sorted_pair = pair[order]
        first = np.searchsorted(sorted_pair, sorted_pair, side="left")
        seen = np.empty(pair.size, np.int64)
        seen[order] = np.arange(pair.size) - first

        # Pass 2: what the users did, a chunk at a time.
        out: dict[str, list[np.ndarray]] = {}
        step = 400_000
        for lo in range(0, pair.size, step):
            hi = min(pair.size, lo + step)
            su, it, st, ps = rows["user"][lo:hi], rows["item"][lo:hi], rows["t"][lo:hi], rows["pos"][lo:hi]
            logit = self.logit(su, it, st, seen[lo:hi])
            reaction = self.react(rng, logit, ps)
            reaction["rel"] = sigmoid(logit)
            t_imp = st + ps * 2
            reaction["t_imp"] = t_imp
            reaction["t_click"] = t_imp + 2 + rng.integers(0, 8, su.size)
            for name, value in reaction.items():
                out.setdefault(name, []).append(value)
            if progress:
                progress(int(rows["sid"][hi - 1]) + 1, n_sess)
        result = {k: np.concatenate(v) for k, v in out.items()} | rows
        result["surface"] = s_surface[rows["sid"]]
        self.exposures = PairCounts.of(self.n_items, rows["user"], rows["item"])
        did = result["click"] | result["hide"]
        self.engaged = PairCounts.of(self.n_items, rows["user"][did], rows["item"][did])
        self.clock = t_end
        return result

    # -- persistence ------------------------------------------------------------------------------
    _ARRAYS = (
        "topic_mix",
        "topic_mix_drift",
        "item_creator",
        "item_topic",
        "item_quality",
        "item_vec",
        "item_created",
        "user_age",
        "user_country",
        "taste",
        "taste_late",
        "taste_drift",
        "user_vec",
        "shift_t",
        "user_joined",
        "activity",
        "user_propensity",
    )
    #: Arrays a world saved by an earlier feedrec may lack, and what they were then.
    _ADDED: ClassVar[dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]]] = {
        "user_propensity": lambda fields: np.zeros(fields["user_vec"].shape[0])
    }

    def save(self, folder: Path) -> Path:
        """Write the world under ``folder`` (``DIR/world``): its arrays, its state (clock,
        exposures, engagements, drift) and the random state the log starts from."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "world.npz", **{name: getattr(self, name) for name in self._ARRAYS})
        self.save_state(folder)
        meta = {
            "format": FORMAT,
            "config": self.cfg.model_dump(mode="json"),
            "t0": self.t0,
            "t_end": self.t_end,
            "rng_state": self.rng_state,
        }
        (folder / "world.json").write_text(json.dumps(meta, indent=2))
        return folder

    def save_state(self, folder: Path) -> None:
        """Write what changes as the world lives: the clock, the drift, who saw and did what."""
        ek, ec = self.exposures.arrays()
        gk, gc = self.engaged.arrays()
        np.savez_compressed(folder / ".state.npz", exposures_keys=ek, exposures=ec, engaged_keys=gk, engaged=gc)
        (folder / ".state.npz").replace(folder / "state.npz")
        (folder / "clock.json").write_text(json.dumps({"clock": self.clock, "drift_at": self.drift_at}))

    @classmethod
    def load(cls, folder: Path) -> World:
        meta_path = folder / "world.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{folder} holds no world (world.json): write one with `feedrec simulate --out DIR`"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: world format {meta.get('format')}, this feedrec reads {FORMAT}")
        with np.load(folder / "world.npz") as arrays:
            fields = {name: arrays[name] for name in cls._ARRAYS if name not in cls._ADDED or name in arrays.files}
        for name, default in cls._ADDED.items():
            fields.setdefault(name, default(fields))
        clock = json.loads((folder / "clock.json").read_text())
        n_items = int(fields["item_topic"].size)
        with np.load(folder / "state.npz") as state:
            exposures = PairCounts(n_items, state["exposures_keys"], state["exposures"])
            engaged = PairCounts(n_items, state["engaged_keys"], state["engaged"])
        return cls(
            cfg=SimulatorConfig(**meta["config"]),
            t0=meta["t0"],
            t_end=meta["t_end"],
            rng_state=meta["rng_state"],
            exposures=exposures,
            engaged=engaged,
            clock=int(clock["clock"]),
            drift_at=clock["drift_at"],
            **fields,
        )


def _row_categorical(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw one category per entry of ``rows`` from the row-wise cumulative distributions ``cum``."""
    r = rng.random(rows.size)[:, None]
    return np.minimum((cum[rows] < r).sum(axis=1), cum.shape[1] - 1)


def _first_in_session(sid: np.ndarray, item: np.ndarray) -> np.ndarray:
    key = sid.astype(np.int64) * (1 << 32) + item
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(key.size, bool)
    keep[first] = True
    return keep
