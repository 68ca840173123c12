"""What the routes share: the injected service, settings, metrics and admin queue, the admin
token check, the error entries of the OpenAPI spec, and each request's arrival time."""

import secrets
import time
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from feedrec.online.admin import AdminQueue
from feedrec.online.service import FeedService
from feedrec.online.settings import ServeSettings
from feedrec.online.telemetry import Metrics


# Async (though trivial) so that FastAPI calls them on the event loop instead of a worker thread.
async def get_service(request: Request) -> FeedService:
    return request.app.state.service


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_admin(request: Request) -> AdminQueue:
    return request.app.state.admin


ServiceDep = Annotated[FeedService, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Annotated[AdminQueue, Depends(get_admin)]


def arrived(request: Request) -> float:
    """When the request arrived (monotonic seconds, stamped by ``Guard``)."""
    return float(request.scope.get("state", {}).get("arrived", time.monotonic()))


class ErrorOut(BaseModel):
    detail: str


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
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
