from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from feedrec.models.base import top_k


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, -np.inf]), min_size=6, max_size=6), min_size=1, max_size=5
    ),
    k=st.integers(1, 8),
)
def test_matches_a_full_stable_sort(rows, k):
    scores = np.array(rows)
    idx, sc = top_k(scores, k)
    ref = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]
    assert np.array_equal(idx, ref)
    assert np.array_equal(sc, np.take_along_axis(scores, ref, axis=1))


def test_prefix_of_a_longer_list():
    scores = np.array([[5.0, 1, 1, 1, 1, 1, 1, 0]])
    assert np.array_equal(top_k(scores, 3)[0], top_k(scores, 7)[0][:, :3])
