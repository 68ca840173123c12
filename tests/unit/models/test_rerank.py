from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from feedrec.metrics import intra_list_diversity
from feedrec.models.rerank import BusinessRules, ItemCatalog, ReRanker

# Ten items: i0..i4 share topic 0 and creator 1; i5..i9 have topics 1..5 and creators 2..6.
IDS = np.array([f"i{n}" for n in range(10)])
TOPICS = sp.csr_matrix(([1.0] * 10, (range(10), [0, 0, 0, 0, 0, 1, 2, 3, 4, 5])), shape=(10, 6))
CATALOG = ItemCatalog(
    item_ids=IDS,
    topics=TOPICS,
    creator=np.array([1, 1, 1, 1, 1, 2, 3, 4, 5, 6]),
    created_at=np.array([0.0] * 9 + [10 * 86_400.0]),
)
SCORES = np.linspace(1.0, 0.1, 10)  # i0 best ... i9 worst


def test_no_diversity_no_caps_keeps_the_ranking():
    feed, _ = ReRanker(diversity=0.0, max_per_creator=None, max_per_topic=None).rerank(IDS, SCORES, CATALOG, k=5, now=0)
    assert feed.tolist() == ["i0", "i1", "i2", "i3", "i4"]


def test_diversity_trades_relevance_for_variety():
    plain, _ = ReRanker(diversity=0.0, max_per_creator=None, max_per_topic=None).rerank(
        IDS, SCORES, CATALOG, k=5, now=0
    )
    diverse, _ = ReRanker(diversity=0.5, max_per_creator=None, max_per_topic=None).rerank(
        IDS, SCORES, CATALOG, k=5, now=0
    )
    feats = TOPICS.toarray()
    idx = lambda f: np.array([[int(i[1:]) for i in f]])  # noqa: E731
    assert intra_list_diversity(idx(diverse), item_features=feats, k=5) > intra_list_diversity(
        idx(plain), item_features=feats, k=5
    )
    assert diverse[0] == "i0"  # the best item still leads


def test_caps_per_creator_and_topic():
    feed, _ = ReRanker(diversity=0.0, max_per_creator=2, max_per_topic=None).rerank(IDS, SCORES, CATALOG, k=5, now=0)
    assert sum(f in {"i0", "i1", "i2", "i3", "i4"} for f in feed) == 2
    feed, _ = ReRanker(diversity=0.0, max_per_creator=None, max_per_topic=3).rerank(IDS, SCORES, CATALOG, k=5, now=0)
    assert sum(f in {"i0", "i1", "i2", "i3", "i4"} for f in feed) == 3
    # When nothing else is left, caps bend rather than leave slots empty.
    only_same = IDS[:5]
    feed, _ = ReRanker(max_per_creator=1).rerank(only_same, SCORES[:5], CATALOG, k=5, now=0)
    assert len(feed) == 5


def test_freshness_boost_lifts_new_items():
    feed, _ = ReRanker(diversity=0.0, max_per_creator=None, max_per_topic=None, freshness_boost=2.0).rerank(
        IDS, SCORES, CATALOG, k=3, now=10 * 86_400.0
    )
    assert feed[0] == "i9"


def test_business_rules():
    rules = BusinessRules(pin={"i8": 0}, block={"i0"}, boost={"i6": 10.0})
    feed, scores = ReRanker(diversity=0.0, max_per_creator=None, max_per_topic=None, rules=rules).rerank(
        IDS, SCORES, CATALOG, k=4, now=0
    )
    assert feed[0] == "i8" and "i0" not in feed and feed[1] == "i6"
    assert np.isinf(scores[0])


def test_bad_parameters():
    with pytest.raises(ValueError, match="diversity"):
        ReRanker(diversity=1.5)
    with pytest.raises(ValueError, match="max_per_creator"):
        ReRanker(max_per_creator=0)


def test_the_window_limits_mmr_to_the_head_of_the_ranking():
    """With a window of 2 slots per feed slot, the 4 best candidates compete for a feed of 2; an
    item ranked 5th cannot enter however diverse it is, and with no window it can."""
    n = 6
    catalog = ItemCatalog(
        item_ids=np.array([f"i{i}" for i in range(n)]),
        topics=sp.csr_matrix(np.array([[1, 0]] * 4 + [[0, 1]] * 2, dtype=np.float64)),
        creator=np.arange(1, n + 1),
        created_at=np.full(n, np.nan),
    )
    ids, scores = catalog.item_ids, np.array([1.0, 0.99, 0.98, 0.97, 0.9, 0.1])
    wide = ReRanker(diversity=0.9, max_per_creator=None, max_per_topic=None)
    narrow = ReRanker(diversity=0.9, max_per_creator=None, max_per_topic=None, window_per_slot=2)
    assert wide.rerank(ids, scores, catalog, k=2, now=0.0)[0].tolist() == ["i0", "i4"]
    assert narrow.rerank(ids, scores, catalog, k=2, now=0.0)[0].tolist() == ["i0", "i1"]
    with pytest.raises(ValueError, match="window_per_slot"):
        ReRanker(window_per_slot=0.5)
