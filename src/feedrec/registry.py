"""Versioned model bundles: written offline, loaded online, promoted behind a gate.

A bundle is a folder: the saved model (``model/``), ``manifest.json`` (version, model name, data
window, feature schema hash, parameters, metrics, code version) and optionally ``report.html``.
``LocalRegistry`` keeps bundles under ``<workspace>/registry/bundles/`` and the production pointer
in ``production.json``, with every change appended to ``history.jsonl``; replaying that history as
a stack (promotions push, rollbacks pop) tells a rollback where to return.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from feedrec import __version__
from feedrec.config import FeedrecConfig
from feedrec.features.definitions import schema_hash
from feedrec.models.base import Recommender


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


class IncompatibleBundle(RegistryError):
    """A bundle built for other feature definitions than this code's: it cannot be served."""


@dataclass
class Manifest:
    version: str
    model: str
    created_at: str
    data_window: dict[str, Any]  # first/last event time, interactions, users, items
    feature_schema: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, float]]  # "valid", "test", "ranker" -> metric -> value
    code_version: str
    promoted: bool = False
    gate: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GatePolicy:
    """The new bundle must beat production on validation ``metric`` by ``min_gain`` (relative)
    without losing more than ``auc_tolerance`` ranker AUC or adding more than ``ece_tolerance``
    calibration error."""

    metric: str = "ndcg@10"
    min_gain: float = 0.0
    auc_tolerance: float = 0.002
    ece_tolerance: float = 0.005


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"feedrec {__version__}" + (f" ({sha})" if sha else "")


def gate_decision(new: Manifest, current: Manifest | None, policy: GatePolicy) -> dict[str, Any]:
    """Whether ``new`` may replace ``current`` in production, and why."""
    if current is None:
        return {"promote": True, "reason": "no production bundle yet"}
    new_v = new.metrics.get("valid", {}).get(policy.metric)
    cur_v = current.metrics.get("valid", {}).get(policy.metric)
    if new_v is None or cur_v is None:
        return {"promote": False, "reason": f"validation {policy.metric} missing from a manifest"}
    bar = cur_v * (1 + policy.min_gain)
    ok = new_v > bar
    against = f"production's {cur_v:.4f}"
    if policy.min_gain:
        against = f"the bar {bar:.4f} ({against}, min_gain {policy.min_gain:+.0%})"
    reasons = [f"validation {policy.metric} {new_v:.4f} {'>' if ok else 'does not beat'} {against}"]
    for key, what in (("ranker", "ranker"), ("realtime_ranker", "served real-time ranker")):
        new_r, cur_r = new.metrics.get(key, {}), current.metrics.get(key, {})
        if "auc" in new_r and "auc" in cur_r and new_r["auc"] < cur_r["auc"] - policy.auc_tolerance:
            ok = False
            reasons.append(f"{what} AUC {new_r['auc']:.4f} < production's {cur_r['auc']:.4f}")
    new_r, cur_r = new.metrics.get("ranker", {}), current.metrics.get("ranker", {})
    if "ece" in new_r and "ece" in cur_r and new_r["ece"] > cur_r["ece"] + policy.ece_tolerance:
        ok = False
        reasons.append(f"ranker ECE {new_r['ece']:.4f} > production's {cur_r['ece']:.4f}")
    return {"promote": ok, "reason": "; ".join(reasons)}


class ModelRegistry(ABC):
    @abstractmethod
    def next_version(self) -> str:
        """The version the next registered bundle should take."""

    @abstractmethod
    def model_dir(self, version: str) -> Path:
        """A local folder holding ``version``'s saved model (what worker processes load)."""

    @abstractmethod
    def history(self) -> builtins.list[dict[str, Any]]:
        """Every change of production, in the order it took effect."""

    @abstractmethod
    def register(
        self,
        model: Recommender,
        manifest: Manifest,
        report_html: str | None = None,
        *,
        artifacts: Mapping[str, str] | None = None,
    ) -> Manifest:
        """Store a bundle whole: the model, its manifest, its report and named text ``artifacts``
        (its reference profile for monitoring, ``profile.json``)."""

    @abstractmethod
    def artifact(self, version: str, name: str) -> str | None:
        """The text of ``version``'s artifact ``name``; None when the bundle has none of that name."""

    @abstractmethod
    def list(self) -> list[Manifest]: ...

    @abstractmethod
    def get(self, version: str) -> Manifest: ...

    @abstractmethod
    def production(self) -> Manifest | None: ...

    @abstractmethod
    def promote(self, version: str, *, reason: str = "manual", key: str | None = None) -> Manifest: ...

    @abstractmethod
    def rollback(self, *, key: str | None = None) -> Manifest: ...

    @abstractmethod
    def record(self, version: str, action: str, reason: str, **details: Any) -> dict[str, Any]:
        """Note a transition that leaves production as it is (see ``LocalRegistry.record``)."""

    @abstractmethod
    def load_model(self, version: str | None = None) -> Recommender: ...

    def batch_inputs(self, users: builtins.list[str] | None = None) -> tuple[Manifest, builtins.list[str]]:
        """What batch mode scores: the production bundle, and ``users`` or every user it knows."""
        manifest = self.production()
        if manifest is None:
            raise RegistryError("no bundle in production: train one with `feedrec train`")
        if users is None:
            users = self.load_model(manifest.version).user_ids_.tolist()
        if not users:
            raise ValueError("need at least one user to recommend for")
        return manifest, users


class LocalRegistry(ModelRegistry):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.bundles = self.root / "bundles"
        self.bundles.mkdir(parents=True, exist_ok=True)

    def _versions(self) -> builtins.list[str]:
        return sorted(p.name for p in self.bundles.iterdir() if p.is_dir() and not p.name.startswith("."))

    def next_version(self) -> str:
        return f"v{len(self._versions()) + 1:04d}"

    @staticmethod
    def _write_json(path: Path, payload: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, path)

    def register(
        self,
        model: Recommender,
        manifest: Manifest,
        report_html: str | None = None,
        *,
        artifacts: Mapping[str, str] | None = None,
    ) -> Manifest:
        folder = self.bundles / manifest.version
        if folder.exists():
            raise RegistryError(f"bundle {manifest.version} exists already")
        staging = self.bundles / f".{manifest.version}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        model.save(staging / "model")
        if report_html is not None:
            (staging / "report.html").write_text(report_html)
        for name, text in (artifacts or {}).items():
            if Path(name).name != name or name in ("manifest.json", "report.html", "model"):
                raise RegistryError(f"artifact name {name!r} must be a plain file name of its own")
            (staging / name).write_text(text)
        self._write_json(staging / "manifest.json", asdict(manifest))
        os.replace(staging, folder)  # a bundle appears whole or not at all
        return manifest

    def artifact(self, version: str, name: str) -> str | None:
        path = self.bundles / self.get(version).version / name
        return path.read_text() if Path(name).name == name and path.is_file() else None

    def list(self) -> list[Manifest]:
        current = self.production()
        out = []
        for version in self._versions():
            m = self.get(version)
            m.promoted = current is not None and m.version == current.version
            out.append(m)
        return out

    def get(self, version: str) -> Manifest:
        path = self.bundles / version / "manifest.json"
        if not path.exists():
            raise RegistryError(f"no bundle {version!r}; bundles: {', '.join(self._versions()) or 'none'}")
        return Manifest(**json.loads(path.read_text()))

    def production(self) -> Manifest | None:
        path = self.root / "production.json"
        if not path.exists():
            return None
        return self.get(json.loads(path.read_text())["version"])

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Promotions and rollbacks by any process take effect one at a time, in history order."""
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def history(self) -> builtins.list[dict[str, Any]]:
        """Every change of production, in the order it took effect (``seq`` counts from 1)."""
        path = self.root / "history.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for n, entry in enumerate(entries, start=1):
            entry.setdefault("seq", n)
        return entries

    def _set_production(self, version: str, action: str, reason: str, key: str | None) -> None:
        self._write_json(self.root / "production.json", {"version": version})
        entry: dict[str, Any] = {
            "seq": len(self.history()) + 1,
            "time": datetime.now(UTC).isoformat(),
            "action": action,
            "version": version,
            "reason": reason,
        }
        if key is not None:
            entry["key"] = key
        self._append_history(entry)

    def record(self, version: str, action: str, reason: str, **details: Any) -> dict[str, Any]:
        """Note a transition that does not change production (a retraining's trigger, its gate, a
        shadow or canary stage, an approval) in the history, with its reason."""
        if action in ("promote", "rollback"):
            raise RegistryError(f"{action} changes production: use promote() or rollback()")
        self.get(version)
        with self._lock():
            entry = {
                "seq": len(self.history()) + 1,
                "time": datetime.now(UTC).isoformat(),
                "action": action,
                "version": version,
                "reason": reason,
            } | details
            self._append_history(entry)
        return entry

    def _append_history(self, entry: dict[str, Any]) -> None:
        with (self.root / "history.jsonl").open("a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _done_before(self, key: str | None, action: str) -> dict[str, Any] | None:
        if key is None:
            return None
        for entry in self.history():
            if entry.get("key") == key:
                if entry["action"] != action:
                    raise RegistryError(f"idempotency key {key!r} was used for a {entry['action']} already")
                return entry
        return None

    def promote(self, version: str, *, reason: str = "manual", key: str | None = None) -> Manifest:
        """Make ``version`` production; promoting the production bundle again changes nothing. With
        ``key`` (an idempotency key), a repeat of a request that took effect already changes nothing."""
        manifest = self.get(version)
        with self._lock():
            current = self.production()
            already = current is not None and current.version == version
            if not already and self._done_before(key, "promote") is None:
                self._set_production(version, "promote", reason, key)
        return manifest

    def _served_stack(self) -> builtins.list[str]:
        """Versions in production order, replaying promotions (push) and rollbacks (pop)."""
        stack: builtins.list[str] = []
        for entry in self.history():
            if entry["action"] == "promote":
                stack.append(entry["version"])
            elif entry["action"] == "rollback" and stack:
                stack.pop()
        return stack

    def rollback(self, *, key: str | None = None) -> Manifest:
        """Go back to the bundle that was production before the current one (``key``: as for promote)."""
        with self._lock():
            done = self._done_before(key, "rollback")
            if done is not None:
                return self.get(done["version"])
            stack = self._served_stack()
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: no bundle was in production before the current one")
            self._set_production(stack[-2], "rollback", f"rolled back from {stack[-1]}", key)
        return self.get(stack[-2])

    def model_dir(self, version: str) -> Path:
        return self.bundles / self.get(version).version / "model"

    def load_model(self, version: str | None = None) -> Recommender:
        """The bundle's model, once its manifest's feature schema is this code's (``IncompatibleBundle``
        otherwise: its features would be computed differently from how it learned them)."""
        manifest = self.get(version) if version else self.production()
        if manifest is None:
            raise RegistryError("no production bundle: train one with `feedrec train`")
        check_feature_schema(manifest)
        return Recommender.load(self.bundles / manifest.version / "model")


def check_feature_schema(manifest: Manifest) -> None:
    current = schema_hash()
    if manifest.feature_schema != current:
        raise IncompatibleBundle(
            f"bundle {manifest.version} was built for feature schema {manifest.feature_schema}, and this "
            f"code's features are {current}: retrain it with `feedrec train`"
        )


def build_manifest(
    version: str,
    model_name: str,
    interactions: pl.DataFrame,
    cfg: FeedrecConfig,
    metrics: dict[str, dict[str, float]],
    *,
    extra_params: dict[str, Any] | None = None,
) -> Manifest:
    """A bundle's manifest: data window of ``interactions`` (user_id, item_id, timestamp), feature
    schema hash, parameters, metrics and code version."""
    ts = interactions["timestamp"]
    return Manifest(
        version=version,
        model=model_name,
        created_at=datetime.now(UTC).isoformat(),
        data_window={
            "first": str(ts.min()),
            "last": str(ts.max()),
            "interactions": interactions.height,
            "users": interactions["user_id"].n_unique(),
            "items": interactions["item_id"].n_unique(),
        },
        feature_schema=schema_hash(),
        params=cfg.model_dump(mode="json") | (extra_params or {}),
        metrics=metrics,
        code_version=code_version(),
    )
