"""Experiment definitions and their history, durable in the workspace.

``state.json`` holds every definition and status; it is rewritten whole (a temporary file,
fsync'ed, renamed over the old one: a reader sees the old state or the new, never half of one).
Each action is appended to ``history.jsonl`` and fsync'ed before the state changes, under a file
lock, so concurrent CLIs apply actions one at a time and a start or stop that returned is never
lost. The server only reads ``state.json`` (``ExperimentStore.load``) and picks up changes.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from feedrec.experiments.definition import BUCKETS, Experiment, ExperimentError, ExperimentsState


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _fsync_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ExperimentStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.state_path = self.root / "state.json"
        self.history_path = self.root / "history.jsonl"
        self.exposures_dir = self.root / "exposures"

    # -- reading ---------------------------------------------------------------------------------
    def load(self) -> ExperimentsState:
        """The current state (empty when nothing was ever created). A state file that does not
        parse is an error that names the file: it is never silently read as empty."""
        if not self.state_path.exists():
            return ExperimentsState()
        try:
            return ExperimentsState.model_validate_json(self.state_path.read_text())
        except ValidationError as exc:
            raise ExperimentError(f"{self.state_path} is not a valid experiments state: {exc}") from exc

    def signature(self) -> tuple[int, int] | None:
        """What changes when the state does (the server polls it): (inode, mtime ns)."""
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def get(self, name: str) -> Experiment:
        state = self.load()
        if name not in state.experiments:
            known = ", ".join(sorted(state.experiments)) or "none"
            raise ExperimentError(f"no experiment {name!r}; experiments: {known}")
        return state.experiments[name]

    def history(self, name: str | None = None) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        entries = [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]
        return [e for e in entries if name is None or e.get("experiment") == name]

    # -- actions ---------------------------------------------------------------------------------
    @contextmanager
    def _change(self, entry: dict[str, Any]) -> Iterator[ExperimentsState]:
        """Apply one action: lock, load, let the caller change the state, then log and save."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.load()
                yield state
                ExperimentsState.model_validate(state.model_dump())  # the new state is valid whole
                with self.history_path.open("a") as fh:
                    fh.write(json.dumps({"time": _now(), **entry}) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                _fsync_write(self.state_path, state.model_dump_json(indent=2))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def create(self, definition: dict[str, Any], *, known_versions: Collection[str] | None = None) -> Experiment:
        """Add a draft experiment; refused when it is malformed, its name is taken or (given the
        registry's ``known_versions``) an arm names a bundle that does not exist."""
        try:
            experiment = Experiment.model_validate({**definition, "status": "draft", "created_at": _now()})
        except ValidationError as exc:
            raise ExperimentError(_readable(exc)) from exc
        if known_versions is not None:
            missing = sorted(experiment.versions - set(known_versions))
            if missing:
                raise ExperimentError(f"no bundle {missing[0]!r} in the registry; bundles: {sorted(known_versions)}")
        with self._change({"action": "create", "experiment": experiment.name, "definition": definition}) as state:
            if experiment.name in state.experiments:
                raise ExperimentError(f"an experiment named {experiment.name!r} exists already")
            state.experiments[experiment.name] = experiment
        return experiment

    def start(self, name: str) -> Experiment:
        """Run a draft: it is allotted a free range of its layer's buckets (experiments in one layer
        never share a user); refused when the layer has no room left."""
        with self._change({"action": "start", "experiment": name}) as state:
            experiment = _existing(state, name)
            if experiment.status != "draft":
                raise ExperimentError(f"experiment {name!r} is {experiment.status}; only a draft can start")
            taken = sorted(e.buckets for e in state.running() if e.layer == experiment.layer and e.buckets is not None)
            experiment.buckets = _free_range(taken, round(experiment.traffic * BUCKETS), experiment.layer)
            experiment.status, experiment.started_at = "running", _now()
        return experiment

    def stop(self, name: str) -> Experiment:
        with self._change({"action": "stop", "experiment": name}) as state:
            experiment = _existing(state, name)
            if experiment.status != "running":
                raise ExperimentError(f"experiment {name!r} is {experiment.status}; only a running one can stop")
            experiment.status, experiment.stopped_at = "stopped", _now()
        return experiment

    def set_holdout(self, share: float) -> ExperimentsState:
        """Keep ``share`` of all users on production, out of every experiment."""
        if not 0 <= share < 1:
            raise ExperimentError(f"the holdout is a share in [0, 1), not {share}")
        with self._change({"action": "holdout", "share": share}) as state:
            state.holdout = share
        return state


def _existing(state: ExperimentsState, name: str) -> Experiment:
    if name not in state.experiments:
        raise ExperimentError(f"no experiment {name!r}; experiments: {', '.join(sorted(state.experiments)) or 'none'}")
    return state.experiments[name]


def _free_range(taken: list[tuple[int, int]], width: int, layer: str) -> tuple[int, int]:
    """The first gap of ``width`` buckets between the ``taken`` [lo, hi) ranges."""
    start = 0
    for lo, hi in taken:
        if lo - start >= width:
            return start, start + width
        start = max(start, hi)
    if BUCKETS - start >= width:
        return start, start + width
    free = BUCKETS - sum(hi - lo for lo, hi in taken)
    raise ExperimentError(
        f"layer {layer!r} has {free / BUCKETS:.0%} of its users free, this experiment asks "
        f"{width / BUCKETS:.0%}: stop one, lower --traffic, or use another --layer"
    )


def _readable(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "invalid experiment: " + "; ".join(parts)
