"""GET /v1/feed: ranked items for a user, with score, source, reason, model version, request id."""

import time
from datetime import UTC
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from feedrec.online.deps import MetricsDep, ServiceDep, SettingsDep, errors
from feedrec.online.service import NoModelError
from feedrec.schemas import IsoTime


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
    experiment: str | None = Field(None, description="the running experiment that served this feed, if any")
    arm: str | None = Field(None, description="the experiment's arm the user is assigned to")
    items: list[FeedItemOut]


def router(max_k: int) -> APIRouter:
    """The route, with ``k``'s limit (a setting) stated in the OpenAPI spec."""
    api = APIRouter()

    @api.get("/v1/feed", response_model=FeedOut, responses=errors(503))
    async def feed(
        service: ServiceDep,
        settings: SettingsDep,
        metrics: MetricsDep,
        user_id: Annotated[str, Query(min_length=1, max_length=256, description="who the feed is for")],
        k: Annotated[int | None, Query(ge=1, le=max_k, description=f"how many items (at most {max_k})")] = None,
        surface: Annotated[str | None, Query(max_length=64)] = None,
        now: Annotated[
            IsoTime | None,
            Query(
                description="the request's moment (ISO 8601; UTC when no offset is given): what the features, "
                "freshness and the served log use; default: the server's clock (FEEDREC_CLOCK: wall, or the "
                "latest event time it has seen)"
            ),
        ] = None,
    ) -> Response:
        start = time.perf_counter()
        at = None if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
        try:
            result = service.feed(user_id, k or settings.default_k, surface, now=at)
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
            "experiment": result.experiment,
            "arm": result.arm,
            "items": [vars(i) for i in result.items],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return api
