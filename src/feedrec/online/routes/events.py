"""POST /v1/events: a batch of events, validated, stored durably and idempotently, fed to features."""

import asyncio
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from feedrec.logs import get_logger
from feedrec.online.deps import MetricsDep, ServiceDep, SettingsDep, arrived, errors
from feedrec.online.ingest import Busy, Expired, Rejected
from feedrec.schemas import Event

log = get_logger("api")
router = APIRouter()


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1)


class EventsOut(BaseModel):
    stored: int = Field(description="events stored by this request")
    duplicates: int = Field(description="events the store held already (or repeated in this batch)")


@router.post("/v1/events", response_model=EventsOut, responses=errors(400, 408, 413, 503))
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
    waited = time.monotonic() - arrived(request)
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
    for stage, seconds in outcome.stages.items():
        metrics.latency.labels(stage=f"events_{stage}").observe(seconds)
    metrics.events.labels(outcome="stored").inc(outcome.stored)
    metrics.events.labels(outcome="duplicate").inc(outcome.duplicates)
    return EventsOut(stored=outcome.stored, duplicates=outcome.duplicates)
