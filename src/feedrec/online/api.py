"""The feed API (FastAPI). Routes stay short; the service is injected; settings come from FEEDREC_*.

GET  /v1/feed      ranked items for a user, with score, source, reason, model version, request id
POST /v1/events    a batch of events: validated, stored durably and idempotently, fed to features
GET  /healthz      the process is up;  GET /readyz: a model is loaded
GET  /metrics      Prometheus: requests, latency by stage, fallbacks, model version
POST /admin/reload, /admin/promote/{version}, /admin/rollback   (bearer token from FEEDREC_ADMIN_TOKEN)

A promoted bundle is also picked up without a call: a watcher looks at the registry every
FEEDREC_WATCH_INTERVAL_S seconds, loads the new bundle in the background and swaps it in at once.
"""

import asyncio
import json
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from feedrec import __version__
from feedrec.config import load_config
from feedrec.logs import get_logger
from feedrec.online.admin import AdminQueue, Late
from feedrec.online.http import Guard
from feedrec.online.ingest import Busy, Expired, Rejected
from feedrec.online.service import Budgets, Bundle, FeedService, NoModelError
from feedrec.online.settings import ServeSettings
from feedrec.online.telemetry import Metrics
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
    stored: int = Field(description="events stored by this request")
    duplicates: int = Field(description="events the store held already (or repeated in this batch)")


class ErrorOut(BaseModel):
    detail: str


class AdminOut(BaseModel):
    model_version: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give (422 is FastAPI's own)."""
    what = {
        400: "the request is malformed",
        401: "the admin token is missing or wrong",
        403: "admin endpoints are disabled (no FEEDREC_ADMIN_TOKEN)",
        404: "no such bundle",
        408: "the request body did not arrive in time",
        409: "the action cannot be done in the registry's current state",
        413: "the body or the batch is over its limit",
        503: "not ready, or busy: retry later (Retry-After says when)",
    }
    return {code: {"model": ErrorOut, "description": what[code]} for code in codes}


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


def _build_service(settings: ServeSettings) -> FeedService:
    cfg = load_config(settings.config) if settings.config is not None else None
    return FeedService(
        settings.workspace,
        precomputed=settings.precomputed,
        budgets=Budgets(
            settings.retrieve_budget_ms / 1e3, settings.rank_budget_ms / 1e3, settings.rerank_budget_ms / 1e3
        ),
        snapshot_every_s=settings.snapshot_every_s,
        rules=cfg.ingest if cfg is not None else None,
        backends=cfg.backends if cfg is not None else None,
        max_pending_batches=settings.max_pending_batches,
        served_log_max_bytes=settings.served_log_max_bytes,
        served_log_keep=settings.served_log_keep,
    )


def _count(scope: Scope, status: int) -> None:
    metrics: Metrics | None = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
    if metrics is not None:
        route = scope.get("route")
        metrics.requests.labels(route=getattr(route, "path", "unmatched"), status=str(status)).inc()


def _arrived(request: Request) -> float:
    return float(request.scope.get("state", {}).get("arrived", time.monotonic()))


def create_app(settings: ServeSettings | None = None, service: FeedService | None = None) -> FastAPI:
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_inference_threads(settings.inference_threads)
        app.state.settings = settings
        app.state.metrics = Metrics()
        app.state.admin = AdminQueue(settings.admin_timeout_s)
        app.state.service = service or _build_service(settings)
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
        app.state.admin.close()
        app.state.service.close()

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
    _add_probe_routes(app)
    _add_feed_route(app, settings.max_k)
    _add_events_route(app)
    _add_admin_routes(app)
    return app


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


def _add_probe_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses=_errors(503))
    async def readyz(service: ServiceDep) -> JSONResponse:
        bundle = service.bundle
        if bundle is None:
            return JSONResponse(status_code=503, content={"detail": "no bundle in production"})
        return JSONResponse(content={"status": "ready", "model_version": bundle.version})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
    )
    async def prometheus(metrics: MetricsDep, service: ServiceDep) -> Response:
        metrics.ingest_queue.set(service.writer.pending)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _add_feed_route(app: FastAPI, max_k: int) -> None:
    @app.get("/v1/feed", response_model=FeedOut, responses=_errors(503))
    async def feed(
        service: ServiceDep,
        settings: SettingsDep,
        metrics: MetricsDep,
        user_id: Annotated[str, Query(min_length=1, max_length=256, description="who the feed is for")],
        k: Annotated[int | None, Query(ge=1, le=max_k, description=f"how many items (at most {max_k})")] = None,
        surface: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        k = k or settings.default_k
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


def _add_events_route(app: FastAPI) -> None:
    @app.post("/v1/events", response_model=EventsOut, responses=_errors(400, 408, 413, 503))
    async def events(
        request: Request, body: EventsIn, service: ServiceDep, settings: SettingsDep, metrics: MetricsDep
    ) -> EventsOut:
        """Store a batch of events: validated by the rules file ingestion uses (422 names each
        field that breaks one), durable when the answer comes, idempotent by event_id, stored whole
        or not at all. A busy server answers 503 with Retry-After and stores nothing."""
        if len(body.events) > settings.max_events_per_batch:
            raise HTTPException(
                413, f"{len(body.events)} events in one batch; send at most {settings.max_events_per_batch}"
            )
        start = time.perf_counter()
        waited = time.monotonic() - _arrived(request)
        retry = {"Retry-After": "1"}
        try:
            future = service.submit_events(body.events, timeout_s=max(0.1, settings.ingest_timeout_s - waited))
            outcome = await asyncio.wrap_future(future)
        except (Busy, Expired) as exc:
            metrics.events.labels(outcome="refused_busy").inc(len(body.events))
            raise HTTPException(503, f"events not stored: {exc}", headers=retry) from exc
        except OSError as exc:  # the disk refused (full, read-only): nothing was acknowledged
            log.exception("storing events failed")
            raise HTTPException(
                503, f"events not stored: the event store failed ({type(exc).__name__})", headers=retry
            ) from exc
        if isinstance(outcome, Rejected):
            metrics.events.labels(outcome="rejected").inc(len(body.events))
            detail = [
                {"loc": ["body", "events", n, field], "msg": reason, "type": reason.split(":", 1)[0]}
                for n, field, reason in outcome.errors
            ]
            return JSONResponse(status_code=422, content={"detail": detail})  # type: ignore[return-value]
        metrics.latency.labels(stage="events").observe(time.perf_counter() - start)
        metrics.events.labels(outcome="stored").inc(outcome.stored)
        metrics.events.labels(outcome="duplicate").inc(outcome.duplicates)
        return EventsOut(stored=outcome.stored, duplicates=outcome.duplicates)


_bearer = HTTPBearer(auto_error=False, description="the admin token (FEEDREC_ADMIN_TOKEN)")


async def require_admin(
    request: Request, settings: SettingsDep, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Exactly ``Authorization: Bearer <token>`` (the scheme in any case, one space, nothing
    around): a bare token, another scheme or stray whitespace is refused. ``_bearer`` only
    documents the scheme in the OpenAPI spec; the raw header is what is checked."""
    if settings.admin_token is None:
        raise HTTPException(403, "admin endpoints are disabled: set FEEDREC_ADMIN_TOKEN to enable them")
    scheme, _sep, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.admin_token.encode()
    if scheme.lower() != "bearer" or not given or not secrets.compare_digest(given.encode(), expected):
        raise HTTPException(
            401, "send the admin token as 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )


IdempotencyKey = Annotated[
    str | None,
    Header(max_length=128, description="a repeat of a request with the same key that took effect changes nothing"),
]


def _add_admin_routes(app: FastAPI) -> None:
    admin = {"dependencies": [Depends(require_admin)], "response_model": AdminOut}

    async def run(request: Request, action: Callable[[], Bundle]) -> AdminOut:
        try:
            bundle = await request.app.state.admin.run(_arrived(request), action)
        except Late as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
        request.app.state.metrics.set_model(bundle.version)
        return AdminOut(model_version=bundle.version)

    @app.post("/admin/reload", responses=_errors(401, 403, 409, 503), **admin)  # type: ignore[arg-type]
    async def reload(request: Request, service: ServiceDep) -> AdminOut:
        """Load the production bundle now (the watcher would, within FEEDREC_WATCH_INTERVAL_S)."""

        def action() -> Bundle:
            try:
                return service.reload()
            except NoModelError as exc:
                raise HTTPException(409, str(exc)) from exc

        return await run(request, action)

    @app.post("/admin/promote/{version}", responses=_errors(401, 403, 404, 409, 503), **admin)  # type: ignore[arg-type]
    async def promote(
        request: Request,
        service: ServiceDep,
        version: Annotated[str, Path(max_length=64, description="a registered bundle version")],
        idempotency_key: IdempotencyKey = None,
    ) -> AdminOut:
        """Serve ``version`` and make it production (loaded first: a bundle that cannot load is
        refused and production does not change). Promoting the production bundle changes nothing."""

        def action() -> Bundle:
            bundle = _load(service, version)
            service.registry.promote(version, reason="admin API", key=idempotency_key)
            return bundle

        return await run(request, action)

    @app.post("/admin/rollback", responses=_errors(401, 403, 409, 503), **admin)  # type: ignore[arg-type]
    async def rollback(request: Request, service: ServiceDep, idempotency_key: IdempotencyKey = None) -> AdminOut:
        """Go back to the bundle that was production before the current one, and serve it."""

        def action() -> Bundle:
            try:
                manifest = service.registry.rollback(key=idempotency_key)
            except RegistryError as exc:
                raise HTTPException(409, str(exc)) from exc
            return _load(service, manifest.version)

        return await run(request, action)


def _load(service: FeedService, version: str) -> Bundle:
    try:
        return service.reload(version)
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from exc
    except Exception as exc:  # a bundle that cannot load: say so (not where it lives); the current one keeps serving
        log.exception("bundle %s could not be loaded", version)
        raise HTTPException(
            409, f"bundle {version} could not be loaded ({type(exc).__name__}); see the server log"
        ) from exc
