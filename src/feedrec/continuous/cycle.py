"""``feedrec loop``: the retraining cycle, one look at a time.

idle --trigger--> retrain on the sliding window --offline gate--> shadow (the candidate scores a
share of live requests beside production, serving none) --> canary (an experiment: the candidate
for a small share of users; the always-valid sequential test on the primary metric and the
guardrails, looked at every poll) --> promote (``deploy: auto``) or wait for ``feedrec models
approve`` (``deploy: approval``) --> idle. A candidate that fails a stage is stopped there, its
canary users back on production at once (the experiment stops: the server routes them to
production at its next refresh, no restart and no failed request).

Every transition and its reason goes into the registry's history (``feedrec models history``);
the loop's own position is ``<workspace>/continuous/state.json``, so a restarted loop resumes
its stage. Times are the events' clock (a simulated world's), read from the event store.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from feedrec.config import FeedrecConfig
from feedrec.continuous.policy import LoopPolicy
from feedrec.experiments.analysis import analyze
from feedrec.experiments.definition import ExperimentError
from feedrec.experiments.exposures import read_exposures, read_records
from feedrec.logs import get_logger
from feedrec.monitoring.monitor import MonitorError, run_monitor
from feedrec.offline.train import train
from feedrec.registry import GatePolicy
from feedrec.workspace import Workspace

log = get_logger("loop")
RETRAIN_ON = ("feature_drift", "prediction_drift", "calibration")  # a skew is a pipeline bug: retraining won't fix it


@dataclass
class LoopState:
    stage: str = "idle"  # idle | shadow | canary | approval
    candidate: str | None = None
    experiment: str | None = None
    since: str | None = None  # the events' time the stage began
    production: str | None = None  # what the candidate is compared with
    data_end: str | None = None  # the latest data a retraining used (the trigger's baseline)
    events_at_train: int = 0
    monitored_at: str | None = None  # the events' time of the last monitor run
    cycles: int = 0  # cycles finished (promoted or rejected)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ContinuousLoop:
    def __init__(
        self,
        cfg: FeedrecConfig,
        policy: LoopPolicy,
        *,
        train_cfg: FeedrecConfig | None = None,
        on_stage: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.cfg = cfg
        self.train_cfg = train_cfg or cfg
        self.policy = policy
        self.space = Workspace.from_config(cfg)
        self.registry = self.space.registry
        self.experiments = self.space.experiments
        self.on_stage = on_stage
        self.path = self.space.root / "continuous" / "state.json"
        self.state = LoopState(**json.loads(self.path.read_text())) if self.path.exists() else LoopState()
        self._now: datetime | None = None

    # -- bookkeeping -----------------------------------------------------------------------------
    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(".state.json.tmp")
        tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, self.path)

    def _note(self, version: str, action: str, reason: str, **details: Any) -> None:
        entry = self.registry.record(version, action, reason, **({"events_time": _iso(self.now())} | details))
        log.info("loop", extra={"fields": {k: v for k, v in entry.items() if k != "seq"}})
        self.on_stage(f"{version}: {action} ({reason})")

    def now(self) -> datetime:
        """The latest event time in the store (scanned from the last one known, so it stays cheap)."""
        since = self._now or (_time(self.state.since) if self.state.since else None)
        table = self.space.events.scan(columns=["timestamp"], start=since)
        latest = pl.DataFrame(pl.from_arrow(table))["timestamp"].max() if table.num_rows else None
        if isinstance(latest, datetime):
            self._now = max(self._now or latest, latest)
        if self._now is None:
            raise RuntimeError(f"{self.space.root} holds no events: ingest or serve some first")
        return self._now

    def _hours_since(self, text: str | None) -> float:
        return (self.now() - _time(text)).total_seconds() / 3600 if text else float("inf")

    # -- the cycle -------------------------------------------------------------------------------
    def step(self) -> str:
        """One look: advance the stage the loop is in, if it can; returns the stage after."""
        stage = self.state.stage
        if stage == "idle":
            reason = self._trigger()
            if reason is not None:
                self._retrain(reason)
        elif stage == "shadow":
            self._check_shadow()
        elif stage == "canary":
            self._check_canary()
        elif stage == "approval":
            self._check_approval()
        self._save()
        return self.state.stage

    def run(self, *, cycles: int | None = None, seconds: float | None = None) -> LoopState:
        """Look every ``policy.poll_s`` until ``cycles`` more cycles finished or ``seconds`` passed."""
        target = None if cycles is None else self.state.cycles + cycles
        deadline = None if seconds is None else time.monotonic() + seconds
        while (target is None or self.state.cycles < target) and (deadline is None or time.monotonic() < deadline):
            try:
                self.step()
            except RuntimeError:
                raise  # nothing to loop over (no events, no production bundle): the caller's to fix
            except Exception:  # a failed retraining or look must not end the loop: its stage is kept, retried
                log.exception("loop: the look at stage %s failed; retrying at the next one", self.state.stage)
            time.sleep(self.policy.poll_s)
        return self.state

    def _trigger(self) -> str | None:
        t = self.policy.trigger
        production = self.registry.production()
        if production is None:
            raise RuntimeError("no production bundle: train one with `feedrec train` before the loop")
        baseline = max(_time(production.data_window["last"]), _time(self.state.data_end or "1970-01-01"))
        now = self.now()
        if t.every_hours is not None and now - baseline >= timedelta(hours=t.every_hours):
            return f"{(now - baseline).total_seconds() / 3600:.1f} h of events since the data trained on"
        if t.new_events is not None and self.space.events.count() - self.state.events_at_train >= t.new_events:
            return f"{self.space.events.count() - self.state.events_at_train} new events"
        if t.on_drift and self._hours_since(self.state.monitored_at) >= self.cfg.monitor.bucket_hours:
            self.state.monitored_at = _iso(now)
            try:
                result = run_monitor(self.space, self.cfg.monitor)
            except MonitorError as exc:
                log.info("loop: no monitor verdict yet: %s", exc)
                return None
            alerts = [a for a in result["alerts"] if a["kind"] in RETRAIN_ON]
            if alerts:
                return "monitor alert: " + ", ".join(
                    sorted({f"{a['kind']} {a['feature'] or ''}".strip() for a in alerts})
                )
        return None

    def _retrain(self, reason: str) -> None:
        production = self.registry.production()
        assert production is not None
        self.on_stage(f"trigger: {reason}; retraining")
        cfg = self.train_cfg.model_copy(deep=True)
        cfg.train.window_days = self.policy.retrain.window_days
        cfg.train.warm_start = self.policy.retrain.warm_start
        count = self.space.events.count()
        gate = GatePolicy(
            metric=f"ndcg@{cfg.eval.k}",
            min_gain=self.policy.gate.min_gain,
            auc_tolerance=self.policy.gate.auc_tolerance,
        )
        try:
            result = train(cfg, policy=gate, promote=False, on_stage=lambda s: self.on_stage(f"train: {s}"))
        except Exception:
            self.state.data_end = _iso(self.now())  # the trigger waits its interval before trying again
            raise
        version = result.manifest.version
        self.state.data_end, self.state.events_at_train = str(result.manifest.data_window["last"]), count
        self._note(version, "trigger", reason, production=production.version)
        warm = result.manifest.params.get("warm_start")
        self._note(version, "trained", f"on {result.manifest.data_window['interactions']:,} interactions up to "
                   f"{result.manifest.data_window['last']}", seconds=result.seconds,
                   **({"warm_start": warm} if warm else {}))  # fmt: skip
        decision = result.manifest.gate
        passed = bool(decision.get("promote"))
        forced = not passed and self.policy.gate.force
        self._note(version, "gate", str(decision.get("reason")), passed=passed, forced=forced)
        if not passed and not self.policy.gate.force:
            return self._reject(version, "the offline gate refused it")
        self.state.candidate, self.state.production = version, production.version
        if self.policy.shadow.hours > 0:
            self._start("shadow", [{"name": "production", "version": production.version, "shadow": [version]}],
                        traffic=self.policy.shadow.share)  # fmt: skip
        else:
            self._start_canary()

    def _start(self, stage: str, arms: list[dict[str, Any]], *, traffic: float, **extra: Any) -> None:
        version = self.state.candidate
        assert version is not None
        name = f"{stage}-{version}"
        definition = {"name": name, "arms": arms, "layer": self.policy.layer, "traffic": traffic} | extra
        try:
            self.experiments.create(definition, known_versions=[m.version for m in self.registry.list()])
        except ExperimentError as exc:
            if "exists already" not in str(exc):
                raise
        if self.experiments.get(name).status == "draft":
            self.experiments.start(name)
        self.state.stage, self.state.experiment, self.state.since = stage, name, _iso(self.now())
        self._note(version, f"{stage}_started", f"experiment {name} in layer {self.policy.layer}", share=traffic)

    def _stop(self) -> None:
        name = self.state.experiment
        if name is not None and self.experiments.get(name).status == "running":
            self.experiments.stop(name)

    def _reject(self, version: str, reason: str) -> None:
        self._note(version, "rejected", reason)
        self._finish()

    def _finish(self) -> None:
        self.state = LoopState(
            data_end=self.state.data_end,
            events_at_train=self.state.events_at_train,
            monitored_at=self.state.monitored_at,
            cycles=self.state.cycles + 1,
        )

    def _check_shadow(self) -> None:
        p, version = self.policy.shadow, self.state.candidate
        assert version is not None and self.state.experiment is not None
        if self._hours_since(self.state.since) < p.hours:
            return
        report = shadow_report(read_records(self.experiments.exposures_dir, self.state.experiment), version)
        if report["requests"] < p.min_requests:
            return  # too little traffic yet to judge
        self._stop()
        failures = []
        if report["fallback_rate"] > p.max_fallback_rate:
            failures.append(f"fallback rate {report['fallback_rate']:.3f} > {p.max_fallback_rate}")
        if report["latency_p99_ms"] > p.max_latency_p99_ms:
            failures.append(f"latency p99 {report['latency_p99_ms']:.1f} ms > {p.max_latency_p99_ms}")
        if report["overlap"] < p.min_overlap:
            failures.append(f"overlap@k with production {report['overlap']:.3f} < {p.min_overlap}")
        self._note(version, "shadow_" + ("failed" if failures else "passed"), "; ".join(failures) or "within limits",
                   **report)  # fmt: skip
        if failures:
            return self._reject(version, "shadow: " + "; ".join(failures))
        self._start_canary()

    def _start_canary(self) -> None:
        c = self.policy.canary
        arms = [
            {"name": "control", "version": self.state.production, "weight": 1 - c.share},
            {"name": "treatment", "version": self.state.candidate, "weight": c.share},
        ]
        self._start("canary", arms, traffic=1.0, metric=c.metric, guardrails=c.guardrails)

    def _check_canary(self) -> None:
        c, version, name = self.policy.canary, self.state.candidate, self.state.experiment
        assert version is not None and name is not None
        result = analyze(self.space.events, self.experiments, name, alpha=c.alpha)
        metric = result.get("metrics", {}).get(c.metric)
        if metric is None:
            return  # no exposed users in some arm yet
        decision = metric["sequential"]["decision"]
        flagged = [g for g, r in result.get("guardrails", {}).items() if r.get("flagged")]
        elapsed = self._hours_since(self.state.since)
        exposure = canary_exposure(read_exposures(self.experiments.exposures_dir, name))
        details = {"lift": metric["lift"], "p_value": metric["sequential"]["p_value"], "decision": decision} | exposure
        if decision == "stop" or flagged:
            self._stop()
            why = f"{c.metric} significantly worse" if decision == "stop" else f"guardrails breached: {flagged}"
            self._note(version, "canary_failed", why, **details)
            self._note(version, "rolled_back", f"canary stopped: its {exposure['users_exposed']} users are on "
                       f"{self.state.production} again", **details)  # fmt: skip
            return self._reject(version, f"canary: {why}")
        timeout = elapsed >= c.max_hours
        if not (elapsed >= c.min_hours and decision == "ship") and not timeout:
            return
        self._stop()
        if timeout and decision != "ship" and not c.promote_on_timeout:
            self._note(version, "canary_inconclusive", f"no decision after {elapsed:.1f} h", **details)
            return self._reject(version, "canary inconclusive")
        why = f"{c.metric} significantly better" if decision == "ship" else f"not worse after {elapsed:.1f} h"
        self._note(version, "canary_passed", why, **details)
        if self.policy.deploy == "approval":
            self.state.stage = "approval"
            self._note(version, "awaiting_approval", "continuous training: promote with `feedrec models approve`")
            return
        self._promote(version, f"canary passed: {why}")

    def _check_approval(self) -> None:
        version = self.state.candidate
        assert version is not None
        for entry in reversed(self.registry.history()):
            if entry["version"] != version:
                continue
            if entry["action"] == "approve":
                return self._promote(version, f"approved: {entry['reason']}")
            if entry["action"] in ("awaiting_approval", "reject"):
                if entry["action"] == "reject":
                    return self._reject(version, f"not approved: {entry['reason']}")
                return

    def _promote(self, version: str, reason: str) -> None:
        self.registry.promote(version, reason=reason)
        self.on_stage(f"{version}: promote ({reason})")
        self._finish()


def shadow_report(rows: list[dict[str, Any]], version: str) -> dict[str, Any]:
    """What the shadow stage judges, from its exposure records: requests, the shadow's fallback
    rate, its latency p99, and its slates' agreement with production's (mean overlap@k, top-1 match)."""
    overlaps, top1, ms, fallbacks = [], [], [], 0
    for r in rows:
        slate = (r.get("shadow") or {}).get(version)
        if slate is None:
            continue
        served = r["items"]
        overlaps.append(len(set(slate) & set(served)) / max(len(served), 1))
        top1.append(bool(slate and served and slate[0] == served[0]))
        ms.append(float((r.get("shadow_ms") or {}).get(version, 0.0)))
        fallbacks += version in (r.get("shadow_fallback") or {})
    n = len(overlaps)
    return {
        "requests": n,
        "fallback_rate": fallbacks / n if n else 0.0,
        "latency_p99_ms": float(np.percentile(ms, 99)) if ms else 0.0,
        "overlap": float(np.mean(overlaps)) if n else 1.0,
        "top1_agreement": float(np.mean(top1)) if n else 1.0,
    }


def canary_exposure(exposures: pl.DataFrame) -> dict[str, Any]:
    """How many users the canary's candidate reached, and their share of the experiment's users
    (the experiment takes every user of its layer: the share of users who ever saw it)."""
    if exposures.is_empty():
        return {"users_exposed": 0, "users_in_experiment": 0, "share_exposed": 0.0}
    treated = exposures.filter(pl.col("arm") == "treatment")["user_id"].n_unique()
    total = exposures["user_id"].n_unique()
    return {"users_exposed": treated, "users_in_experiment": total, "share_exposed": treated / total if total else 0.0}
