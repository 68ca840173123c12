"""Definitions and their history are durable; actions are checked; a layer never over-allots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedrec.experiments.definition import ExperimentError
from feedrec.experiments.store import ExperimentStore

ARMS = [{"name": "control", "version": "v1"}, {"name": "treatment", "version": "v2"}]


def test_create_start_stop_is_recorded_and_survives_a_new_store(tmp_path: Path):
    store = ExperimentStore(tmp_path)
    store.create({"name": "e1", "arms": ARMS, "traffic": 0.5}, known_versions=["v1", "v2"])
    started = store.start("e1")
    assert started.status == "running" and started.buckets == (0, 5_000)
    again = ExperimentStore(tmp_path)  # what another process (the server) reads
    assert again.get("e1").status == "running"
    again.stop("e1")
    assert [e["action"] for e in store.history("e1")] == ["create", "start", "stop"]
    assert store.get("e1").status == "stopped" and store.get("e1").stopped_at


def test_actions_in_the_wrong_state_or_on_unknown_names_are_refused(tmp_path: Path):
    store = ExperimentStore(tmp_path)
    with pytest.raises(ExperimentError, match="no experiment 'nope'"):
        store.start("nope")
    store.create({"name": "e1", "arms": ARMS})
    with pytest.raises(ExperimentError, match="exists already"):
        store.create({"name": "e1", "arms": ARMS})
    with pytest.raises(ExperimentError, match="only a running one can stop"):
        store.stop("e1")
    with pytest.raises(ExperimentError, match="no bundle 'v9'"):
        store.create({"name": "e2", "arms": [*ARMS[:1], {"name": "t", "version": "v9"}]}, known_versions=["v1"])
    with pytest.raises(ExperimentError, match="invalid experiment: an A/B experiment needs at least two arms"):
        store.create({"name": "e3", "arms": ARMS[:1]})
    assert [e["action"] for e in store.history()] == ["create"]  # refused actions leave no trace


def test_a_layer_is_allotted_without_overlap_and_refuses_what_does_not_fit(tmp_path: Path):
    store = ExperimentStore(tmp_path)
    for name, share in (("a", 0.3), ("b", 0.5), ("c", 0.3), ("d", 0.2)):
        store.create({"name": name, "arms": ARMS, "traffic": share, "layer": "L"})
    assert store.start("a").buckets == (0, 3_000)
    assert store.start("b").buckets == (3_000, 8_000)
    with pytest.raises(ExperimentError, match="20% of its users free, this experiment asks 30%"):
        store.start("c")
    store.stop("a")
    assert store.start("c").buckets == (0, 3_000)  # the freed range is reused
    assert store.start("d").buckets == (8_000, 10_000)


def test_a_corrupt_state_file_is_an_error_not_an_empty_state(tmp_path: Path):
    store = ExperimentStore(tmp_path)
    store.create({"name": "e1", "arms": ARMS})
    store.state_path.write_text(json.dumps({"experiments": {"e1": {"name": "e1"}}}))
    with pytest.raises(ExperimentError, match="not a valid experiments state"):
        store.load()


def test_the_holdout_is_a_share(tmp_path: Path):
    store = ExperimentStore(tmp_path)
    assert store.set_holdout(0.05).holdout == 0.05
    with pytest.raises(ExperimentError, match=r"\[0, 1\)"):
        store.set_holdout(1.0)
    assert ExperimentStore(tmp_path).load().holdout == 0.05
