"""The feed API (FastAPI): ``create_app`` assembles the routes (``online/routes/``, one per file),
the shared dependencies (``online/deps.py``), the HTTP guards (``online/http.py``) and the
telemetry (``online/telemetry.py``) around one ``FeedService``. Settings come from FEEDREC_*.

GET  /v1/feed      ranked items for a user, with score, source, reason, model version, request id
POST /v1/events    a batch of events: validated, stored durably and idempotently, fed to features
GET  /healthz      the process is up;  GET /readyz: a model is loaded
GET  /metrics      Prometheus: requests, latency by stage, fallbacks, model version
POST /admin/reload, /admin/promote/{version}, /admin/rollback   (bearer token from FEEDREC_ADMIN_TOKEN)
POST /admin/experiments/{name}/start, /admin/experiments/{name}/stop
GET  /dashboard    the web dashboard (``feedrec.dashboard``): overview, models, experiments,
                   monitoring, feed explorer; read-only pages, its actions call the admin routes

A promoted bundle is also picked up without a call: the service's watcher looks at the registry
every FEEDREC_WATCH_INTERVAL_S seconds, loads the new bundle in the background and swaps it in.
"""

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.types import Scope

from feedrec import __version__
from feedrec.config import BackendsConfig, load_config
from feedrec.dashboard import routes as dashboard
from feedrec.online.admin import AdminQueue
from feedrec.online.http import Guard
from feedrec.online.routes import admin, events, feed, probes
from feedrec.online.service import Budgets, FeedService
from feedrec.online.settings import ServeSettings
from feedrec.online.telemetry import Metrics, MetricsHistory


def create_app(settings: ServeSettings | None = None, service: FeedService | None = None) -> FastAPI:
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_inference_threads(settings.inference_threads)
        running = service or _build_service(settings)
        metrics = Metrics(running.workspace)
        app.state.settings, app.state.metrics = settings, metrics
        app.state.history = MetricsHistory(metrics)
        app.state.history.start()
        app.state.dashboard = dashboard.DashboardState()
        app.state.admin = AdminQueue(settings.admin_timeout_s)
        app.state.service = running
        bundle = running.try_reload()
        running.refresh_experiments()
        metrics.set_model(bundle.version if bundle else None)
        running.start_background(
            watch_interval_s=settings.watch_interval_s,
            tail_interval_s=settings.tail_interval_s,
            on_swap=metrics.set_model,
        )
        yield
        app.state.history.close()
        app.state.dashboard.close()
        app.state.admin.close()
        running.close()

    app = FastAPIOffline(
        title="feedrec",
        version=__version__,
        lifespan=lifespan,
        description="A personalized feed: retrieve, rank, re-rank; events flow back into features.",
    )
    app.add_middleware(
        Guard, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s, count=_count
    )
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for router in (probes.router, feed.router(settings.max_k), events.router, admin.router, dashboard.router):
        app.include_router(router)
    dashboard.mount_static(app)
    return app


def create_app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` (several workers): settings from FEEDREC_*."""
    return create_app(ServeSettings())


def limit_inference_threads(n: int) -> None:
    """Cap the thread teams of the native libraries (OpenMP, BLAS, faiss, torch) for this process."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)


def _build_service(settings: ServeSettings) -> FeedService:
    cfg = load_config(settings.config) if settings.config is not None else None
    backends = cfg.backends if cfg is not None else BackendsConfig()
    if settings.redis_url:  # FEEDREC_REDIS_URL: the shared online state, whatever the file says
        backends = backends.model_copy(update={"online_store": "redis", "redis_url": settings.redis_url})
    return FeedService(
        settings.workspace,
        precomputed=settings.precomputed,
        budgets=Budgets(
            settings.retrieve_budget_ms / 1e3, settings.rank_budget_ms / 1e3, settings.rerank_budget_ms / 1e3
        ),
        snapshot_every_s=settings.snapshot_every_s,
        rules=cfg.ingest if cfg is not None else None,
        backends=backends,
        max_pending_batches=settings.max_pending_batches,
        start_position=settings.start_position,
        clock=settings.clock,
        feature_log_rate=settings.feature_log_rate,
        feature_log_max_bytes=settings.feature_log_max_bytes,
        frozen_counters=settings.fault_frozen_counters,
        served_log_max_bytes=settings.served_log_max_bytes,
        served_log_keep=settings.served_log_keep,
    )


def _count(scope: Scope, status: int) -> None:
    metrics: Metrics | None = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
    if metrics is not None:
        route = scope.get("route")
        metrics.requests.labels(route=getattr(route, "path", "unmatched"), status=str(status)).inc()


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error that echoes a client's input must
    render even when that input holds text UTF-8 cannot encode (a lone surrogate)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return AsciiJSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))})


def _finite(value: Any) -> Any:
    """NaN and infinities (a client's input echoed in an error) as text: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
