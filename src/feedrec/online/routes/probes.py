"""GET /healthz (the process is up), /readyz (a bundle is loaded), /metrics (Prometheus)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from feedrec.online.deps import MetricsDep, ServiceDep, errors

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
async def readyz(service: ServiceDep) -> JSONResponse:
    bundle = service.bundle
    if bundle is None:
        return JSONResponse(status_code=503, content={"detail": "no bundle in production"})
    return JSONResponse(content={"status": "ready", "model_version": bundle.version})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def prometheus(metrics: MetricsDep, service: ServiceDep) -> Response:
    metrics.ingest_queue.set(service.writer.pending)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
