"""The feed API (FastAPI). Routes stay short; the service is injected; settings come from FEEDREC_*.

GET  /v1/feed      ranked items for a user, with score, source, reason, model version, request id
POST /v1/events    a batch of events: validated, stored durably and idempotently, fed to features
GET  /healthz      the process is up;  GET /readyz: a model is loaded
GET  /metrics      Prometheus: requests, latency by stage, fallbacks, model version
POST /admin/reload load the production bundle (bearer token from FEEDREC_ADMIN_TOKEN)
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from feedrec import __version__
from feedrec.online.service import FeedService, NoModelError
from feedrec.online.settings import ServeSettings
from feedrec.schemas import Event


class FeedItemOut(BaseModel):
    item_id: str
    score: float
    source: str = Field(description="the candidate source that proposed the item")
    reason: str = Field(description="personalized, or cold_start for a user the model has not seen")


class FeedOut(BaseModel):
    request_id: str
    user_id: str
    model_version: str
    fallback: bool = Field(description="true when the ranker failed and the retrieval order was served")
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


def get_service(request: Request) -> FeedService:
    return request.app.state.service


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ServiceDep = Annotated[FeedService, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def create_app(settings: ServeSettings | None = None, service: FeedService | None = None) -> FastAPI:
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.metrics = Metrics()
        app.state.service = service or FeedService(settings.workspace, precomputed=settings.precomputed)
        bundle = app.state.service.try_reload()
        app.state.metrics.set_model(bundle.version if bundle else None)
        yield

    app = FastAPI(
        title="feedrec",
        version=__version__,
        lifespan=lifespan,
        description="A personalized feed: retrieve, rank, re-rank; events flow back into features.",
    )

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and int(length) > settings.max_body_bytes:
            return JSONResponse(
                status_code=413,
                content={"detail": f"request body of {length} bytes is over the limit of {settings.max_body_bytes}"},
            )
        response = await call_next(request)
        route = request.scope.get("route")
        metrics: Metrics = request.app.state.metrics
        metrics.requests.labels(route=getattr(route, "path", "unmatched"), status=str(response.status_code)).inc()
        return response

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
    def feed(
        service: ServiceDep,
        settings: SettingsDep,
        metrics: MetricsDep,
        user_id: Annotated[str, Query(min_length=1, max_length=256, description="who the feed is for")],
        k: Annotated[int | None, Query(ge=1, description="how many items (at most FEEDREC_MAX_K)")] = None,
        surface: Annotated[str | None, Query(max_length=64)] = None,
    ) -> FeedOut:
        k = k or settings.default_k
        if k > settings.max_k:
            raise HTTPException(422, f"k={k} is over the limit; ask for at most {settings.max_k} items")
        start = time.perf_counter()
        try:
            result = service.feed(user_id, k, surface)
        except NoModelError as exc:
            raise HTTPException(503, str(exc)) from exc
        metrics.latency.labels(stage="feed").observe(time.perf_counter() - start)
        if result.fallback:
            metrics.fallbacks.inc()
        return FeedOut(
            request_id=result.request_id,
            user_id=result.user_id,
            model_version=result.model_version,
            fallback=result.fallback,
            items=[FeedItemOut(**vars(i)) for i in result.items],
        )

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

    @app.post("/admin/reload")
    def reload(
        service: ServiceDep,
        settings: SettingsDep,
        metrics: MetricsDep,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, str]:
        if settings.admin_token is None:
            raise HTTPException(403, "admin endpoints are disabled: set FEEDREC_ADMIN_TOKEN to enable them")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not secrets.compare_digest(given, settings.admin_token):
            raise HTTPException(401, "send the admin token as 'Authorization: Bearer <token>'")
        try:
            bundle = service.reload()
        except NoModelError as exc:
            raise HTTPException(409, str(exc)) from exc
        metrics.set_model(bundle.version)
        return {"model_version": bundle.version}

    return app
