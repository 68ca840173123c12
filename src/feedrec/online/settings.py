"""Server settings, from the environment (FEEDREC_*) via pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEEDREC_", extra="forbid")

    workspace: Path = Path("workspace")
    host: str = "127.0.0.1"  # loopback by default: exposing the API is a deliberate choice
    port: int = Field(8000, ge=1, le=65535)
    admin_token: str | None = None  # admin endpoints answer 403 until one is set
    default_k: int = Field(20, ge=1)
    max_k: int = Field(200, ge=1)
    max_events_per_batch: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    precomputed: Path | None = None  # a `feedrec recommend-batch` output: served first, the model for the rest
    # Latency budget per online stage (ms): a stage that overruns it is abandoned for its fallback.
    retrieve_budget_ms: float = Field(50.0, gt=0)
    rank_budget_ms: float = Field(50.0, gt=0)
    rerank_budget_ms: float = Field(25.0, gt=0)
    # Threads per inference call (OpenMP in faiss and LightGBM, torch): a server gets its concurrency
    # from requests; intra-op teams on top of that oversubscribe the cores.
    inference_threads: int = Field(1, ge=1)
    watch_interval_s: float = Field(2.0, ge=0)  # how often to look for a newly promoted bundle; 0 = never
    # How often to fold in events other processes stored (the other workers, `feedrec ingest`); 0 = never.
    tail_interval_s: float = Field(0.5, ge=0)
    workers: int = Field(1, ge=1)  # server processes; each holds the bundle and tails the event store
    # How often the online features are written to disk: a cache of the durable events (a restart
    # folds in what came after it), so rarely (writing a few million entries holds the GIL ~1 s).
    snapshot_every_s: float = Field(300.0, ge=0)
    # Slow clients: a request whose headers (or body) have not arrived after this long is dropped (408).
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(10.0, gt=0)
    # Event batches wait for the writer at most this long (then 503, not stored); at most this many wait.
    ingest_timeout_s: float = Field(5.0, gt=0)
    max_pending_batches: int = Field(256, ge=1)
    # An admin action that cannot start within this long of its arrival is refused (503), never applied late.
    admin_timeout_s: float = Field(10.0, gt=0)
    # The served-feed log (serving/impressions.jsonl) rotates at this size, keeping this many old files.
    served_log_max_bytes: int = Field(64 * 2**20, ge=1024)
    served_log_keep: int = Field(5, ge=1)
    # The request time when GET /v1/feed brings no `now`: `events` (the default: the latest event
    # time this server has stored or folded in, so a simulated world's clock is never mixed with
    # the wall's) or `wall` (the wall clock: a deployment that wants time to pass without events).
    clock: Literal["wall", "events"] = "events"
    # The share of feeds ranked by the real-time ranker whose served items' inputs and predictions go
    # to the feature log (serving/features/*.parquet): what `feedrec monitor` checks drift, calibration
    # and skew on. The folder is bounded: past feature_log_max_bytes the oldest files go.
    feature_log_rate: float = Field(0.1, ge=0, le=1)
    feature_log_max_bytes: int = Field(256 * 2**20, ge=2**20)
    # Fault injection, for drills of the skew check: these counters (by feature name) stop updating
    # online, as a broken feature pipeline would (JSON list, e.g. '["item_clicks_1h"]').
    fault_frozen_counters: list[str] = Field(default_factory=list)
    config: Path | None = None  # a feedrec YAML config: its `ingest` rules validate posted events
    # Redis (redis://host:port/db): the online features, recent actions, clock and precomputed feeds
    # live there, shared by every worker and server; unset, each process keeps its own (the default).
    redis_url: str | None = None
    # The event store's position when `feedrec serve` started (set by it for its workers): each
    # worker folds in everything stored after it, however long that worker takes to start.
    start_position: int | None = Field(None, ge=0)
