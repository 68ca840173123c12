"""The feed API (FastAPI). Routes stay short; the service is injected; settings come from FEEDREC_*.

GET  /v1/feed      ranked items for a user, with score, source, reason, model version, request id
POST /v1/events    a batch of events: validated, stored durably and idempotently, fed to features
GET  /healthz      the process is up;  GET /readyz: a model is loaded
GET  /metrics      Prometheus: requests, latency by stage, fallbacks, model version
POST /admin/reload, /admin/promote/{version}, /admin/rollback   (bearer token from FEEDREC_ADMIN_TOKEN)

A promoted bundle is also picked up without a call: a watcher looks at the registry every
FEEDREC_WATCH_INTERVAL_S seconds, loads the new bundle in the background and swaps it in at once.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedrec import __version__
from feedrec.logs import get_logger
from feedrec.online.service import Budgets, Bundle, FeedService, NoModelError
from feedrec.online.settings import ServeSettings
from feedrec.registry import RegistryError
from feedrec.schemas import Event

log = get_logger("api")


class FeedItemOut(BaseModel):
    item_id: str
    score: float
    source: str = Field(description="the candidate source that proposed the item")
    reason: str = Field(description="personalized, or cold_start for a user the model has not seen")


class FeedOut(BaseModel):
    request_id: str
    user_id: str
    model_version: str
    fallback: bool = Field(description="true when a stage failed or overran its budget and its fallback was served")
    fallback_reason: str | None = Field(None, description="which stage fell back, and why")
    items: list[FeedItemOut]


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1)


class EventsOut(BaseModel):
    stored: int
    duplicates: int


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("feedrec_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "feedrec_latency_seconds",
            "Latency by stage",
            ["stage"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.fallbacks = Counter("feedrec_fallbacks", "Feeds served from the fallback path", registry=self.registry)
        self.events = Counter("feedrec_events", "Events received", ["outcome"], registry=self.registry)
        self.model = Gauge("feedrec_model_info", "The bundle being served", ["version"], registry=self.registry)

    def set_model(self, version: str | None) -> None:
        self.model.clear()
        if version:
            self.model.labels(version=version).set(1)


class LimitsAndMetrics:
    """Refuses bodies over the size limit (413, before reading them) and counts requests by route
    and status. Plain ASGI rather than ``@app.middleware``: it costs microseconds per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_body_bytes:
            detail = f"request body of {int(length)} bytes is over the limit of {self.max_body_bytes}"
            await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)
            return
        status = 500

        async def send_and_count(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            route = scope.get("route")
            metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                metrics.requests.labels(route=getattr(route, "path", "unmatched"), status=str(status)).inc()


def _watch(app: FastAPI, interval: float, stop: threading.Event) -> None:
    """Reload when the registry's production bundle changes (promote or rollback by any process)."""
    service: FeedService = app.state.service
    while not stop.wait(interval):
        try:
            manifest = service.registry.production()
            current = service.bundle
            if manifest is not None and (current is None or current.version != manifest.version):
                bundle = service.reload(manifest.version)
                app.state.metrics.set_model(bundle.version)
        except Exception:  # a broken bundle or registry must not stop serving the current one
            log.exception("background reload failed")


def _tail(service: FeedService, interval: float, stop: threading.Event) -> None:
    """Fold in events other processes stored, so every worker's feed reflects every event."""
    while not stop.wait(interval):
        try:
            service.catch_up()
        except Exception:  # an unreadable part must not stop serving; it is retried next time
            log.exception("catching up with the event store failed")


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


# Async (though trivial) so that FastAPI calls them on the event loop instead of a worker thread.
async def get_service(request: Request) -> FeedService:
    return request.app.state.service


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ServiceDep = Annotated[FeedService, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def create_app(settings: ServeSettings | None = None, service: FeedService | None = None) -> FastAPI:
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_inference_threads(settings.inference_threads)
        app.state.settings = settings
        app.state.metrics = Metrics()
        app.state.service = service or FeedService(
            settings.workspace,
            precomputed=settings.precomputed,
            budgets=Budgets(
                settings.retrieve_budget_ms / 1e3, settings.rank_budget_ms / 1e3, settings.rerank_budget_ms / 1e3
            ),
            snapshot_every_s=settings.snapshot_every_s,
        )
        bundle = app.state.service.try_reload()
        app.state.metrics.set_model(bundle.version if bundle else None)
        stop = threading.Event()
        if settings.watch_interval_s > 0:
            threading.Thread(
                target=_watch, args=(app, settings.watch_interval_s, stop), name="feedrec-watch", daemon=True
            ).start()
        if settings.tail_interval_s > 0:
            threading.Thread(
                target=_tail, args=(app.state.service, settings.tail_interval_s, stop), name="feedrec-tail", daemon=True
            ).start()
        yield
        stop.set()
        app.state.service.close()

    app = FastAPI(
        title="feedrec",
        version=__version__,
        lifespan=lifespan,
        description="A personalized feed: retrieve, rank, re-rank; events flow back into features.",
    )

    app.add_middleware(LimitsAndMetrics, max_body_bytes=settings.max_body_bytes)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(service: ServiceDep) -> JSONResponse:
        bundle = service.bundle
        if bundle is None:
            return JSONResponse(status_code=503, content={"status": "no model", "detail": "no bundle in production"})
        return JSONResponse(content={"status": "ready", "model_version": bundle.version})

    @app.get("/v1/feed", response_model=FeedOut)
    async def feed(
        service: ServiceDep,
        settings: SettingsDep,
        metrics: MetricsDep,
        user_id: Annotated[str, Query(min_length=1, max_length=256, description="who the feed is for")],
        k: Annotated[int | None, Query(ge=1, description="how many items (at most FEEDREC_MAX_K)")] = None,
        surface: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        k = k or settings.default_k
        if k > settings.max_k:
            raise HTTPException(422, f"k={k} is over the limit; ask for at most {settings.max_k} items")
        start = time.perf_counter()
        try:
            result = service.feed(user_id, k, surface)
        except NoModelError as exc:
            raise HTTPException(503, str(exc)) from exc
        for stage, ms in result.stages_ms.items():
            metrics.latency.labels(stage=stage).observe(ms / 1e3)
        metrics.latency.labels(stage="feed").observe(time.perf_counter() - start)
        if result.fallback:
            metrics.fallbacks.inc()
        # Serialized straight to JSON (the hot path); FeedOut documents the shape in the OpenAPI schema.
        body = {
            "request_id": result.request_id,
            "user_id": result.user_id,
            "model_version": result.model_version,
            "fallback": result.fallback,
            "fallback_reason": result.fallback_reason,
            "items": [vars(i) for i in result.items],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.post("/v1/events", response_model=EventsOut)
    def events(body: EventsIn, service: ServiceDep, settings: SettingsDep, metrics: MetricsDep) -> EventsOut:
        if len(body.events) > settings.max_events_per_batch:
            raise HTTPException(
                413, f"{len(body.events)} events in one batch; send at most {settings.max_events_per_batch}"
            )
        start = time.perf_counter()
        stored, duplicates = service.ingest(body.events)
        metrics.latency.labels(stage="events").observe(time.perf_counter() - start)
        metrics.events.labels(outcome="stored").inc(stored)
        metrics.events.labels(outcome="duplicate").inc(duplicates)
        return EventsOut(stored=stored, duplicates=duplicates)

    @app.get("/metrics")
    def prometheus(metrics: MetricsDep) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def require_admin(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.admin_token is None:
            raise HTTPException(403, "admin endpoints are disabled: set FEEDREC_ADMIN_TOKEN to enable them")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not secrets.compare_digest(given, settings.admin_token):
            raise HTTPException(401, "send the admin token as 'Authorization: Bearer <token>'")

    Admin = Depends(require_admin)

    @app.post("/admin/reload", dependencies=[Admin])
    def reload(service: ServiceDep, metrics: MetricsDep) -> dict[str, str]:
        """Load the production bundle now (the watcher would, within FEEDREC_WATCH_INTERVAL_S)."""
        try:
            bundle = service.reload()
        except NoModelError as exc:
            raise HTTPException(409, str(exc)) from exc
        metrics.set_model(bundle.version)
        return {"model_version": bundle.version}

    def load(service: FeedService, version: str) -> Bundle:
        try:
            return service.reload(version)
        except RegistryError as exc:
            raise HTTPException(404, str(exc)) from exc
        except Exception as exc:  # a bundle that cannot load: say so; the current one keeps serving
            raise HTTPException(409, f"bundle {version} could not be loaded: {exc}") from exc

    @app.post("/admin/promote/{version}", dependencies=[Admin])
    def promote(version: str, service: ServiceDep, metrics: MetricsDep) -> dict[str, str]:
        """Serve ``version`` and make it production (loaded first: a bundle that cannot load is
        refused and production does not change)."""
        bundle = load(service, version)
        service.registry.promote(version, reason="admin API")
        metrics.set_model(bundle.version)
        return {"model_version": bundle.version}

    @app.post("/admin/rollback", dependencies=[Admin])
    def rollback(service: ServiceDep, metrics: MetricsDep) -> dict[str, str]:
        """Go back to the bundle that was production before the current one, and serve it."""
        try:
            manifest = service.registry.rollback()
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from exc
        bundle = load(service, manifest.version)
        metrics.set_model(bundle.version)
        return {"model_version": bundle.version}

    return app
