from __future__ import annotations

import os

# Two test workers share 2 cores, and the native libraries (OpenMP in implicit, LightGBM, faiss,
# torch) spin while they wait for work by default: two such runs at once took 90 s each instead
# of 20-38 s (measured). Passive waiting yields the core; set before any of them loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import pytest

from feedrec.config import SimulatorConfig
from feedrec.data.interactions import Interactions
from feedrec.data.side import SideInfo
from feedrec.data.simulator import SimulatedFeed, simulate

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FEEDREC_DATA_DIR", ROOT.parent / "shared" / "data"))
ML100K = DATA_DIR / "ml-100k" / "u.data"

needs_ml100k = pytest.mark.skipif(not ML100K.exists(), reason=f"MovieLens 100K not found at {ML100K}")


@pytest.fixture(scope="session")
def small_feed() -> SimulatedFeed:
    """A small simulated feed (a few hundred users), shared by the tests that only read it."""
    return simulate(SimulatorConfig(n_users=300, n_items=600, days=14, seed=7))


def make_interactions(n_users: int = 40, n_items: int = 60, per_user: int = 8, seed: int = 0) -> Interactions:
    """Random interactions with some structure: each user prefers one block of items."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    block = max(1, n_items // 4)
    for u in range(n_users):
        start = (u % 4) * block
        chosen = rng.choice(np.arange(start, start + block), size=min(per_user, block), replace=False)
        users += [f"u{u}"] * chosen.size
        items += [f"i{i}" for i in chosen]
        ts += list(1_700_000_000 + u * 10 + np.arange(chosen.size) * 3600)
    return Interactions.from_arrays(np.array(users), np.array(items), np.array(ts))


def make_side(n_users: int = 40, n_items: int = 60, extra_items: int = 0) -> SideInfo:
    """Side information matching make_interactions: each block of items shares topics and a creator."""
    import json
    from datetime import UTC, datetime

    import pyarrow as pa

    from feedrec.schemas import ITEM_SCHEMA, USER_SCHEMA

    block = max(1, n_items // 4)
    items = [
        {
            "item_id": f"i{i}",
            "created_at": datetime.fromtimestamp(1_700_000_000 - 86_400 * (i % 30), UTC),
            "topics": [f"t{min(i // block, 3)}", f"t{4 + i % 2}"],
            "creator_id": f"c{min(i // block, 3)}",
            "text": None,
        }
        for i in range(n_items + extra_items)
    ]
    users = [
        {"user_id": f"u{u}", "created_at": None, "attributes": json.dumps({"age_group": ["a", "b"][u % 2]})}
        for u in range(n_users)
    ]
    return SideInfo(items=pa.Table.from_pylist(items, ITEM_SCHEMA), users=pa.Table.from_pylist(users, USER_SCHEMA))


@pytest.fixture
def interactions() -> Interactions:
    return make_interactions()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """One real redis-server per test process (each test uses its own key namespace)."""
    from feedrec.redis.local import LocalRedis

    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
