"""POST /admin/reload, /admin/promote/{version}, /admin/rollback, /admin/experiments/{name}/start
and /stop: behind the admin token, one at a time in arrival order (``feedrec.online.admin``), never
applied late. The dashboard's buttons call these same routes."""

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request
from pydantic import BaseModel

from feedrec.experiments.definition import ExperimentError
from feedrec.logs import get_logger
from feedrec.online.admin import Late
from feedrec.online.deps import AdminDep, MetricsDep, ServiceDep, arrived, errors, require_admin
from feedrec.online.service import Bundle, FeedService, NoModelError
from feedrec.registry import IncompatibleBundle, RegistryError

log = get_logger("api")
router = APIRouter(dependencies=[Depends(require_admin)])
T = TypeVar("T")


class AdminOut(BaseModel):
    model_version: str


class ExperimentOut(BaseModel):
    experiment: str
    status: str


IdempotencyKey = Annotated[
    str | None,
    Header(max_length=128, description="a repeat of a request with the same key that took effect changes nothing"),
]


async def _queued(request: Request, admin: AdminDep, action: Callable[[], T]) -> T:
    """``action`` after the admin actions before it, or 503 when it could not start in time."""
    try:
        return await admin.run(arrived(request), action)
    except Late as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc


async def _run(request: Request, admin: AdminDep, metrics: MetricsDep, action: Callable[[], Bundle]) -> AdminOut:
    bundle = await _queued(request, admin, action)
    metrics.set_model(bundle.version)
    return AdminOut(model_version=bundle.version)


def _load(load: Callable[[], Bundle], version: str) -> Bundle:
    try:
        return load()
    except IncompatibleBundle as exc:  # registered, but not servable by this code
        raise HTTPException(409, str(exc)) from exc
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from exc
    except Exception as exc:  # a bundle that cannot load: say so (not where it lives); the current one keeps serving
        log.exception("bundle %s could not be loaded", version)
        raise HTTPException(
            409, f"bundle {version} could not be loaded ({type(exc).__name__}); see the server log"
        ) from exc


@router.post("/admin/reload", response_model=AdminOut, responses=errors(401, 403, 409, 503))
async def reload(request: Request, service: ServiceDep, admin: AdminDep, metrics: MetricsDep) -> AdminOut:
    """Load the production bundle now (the watcher would, within FEEDREC_WATCH_INTERVAL_S)."""

    def action() -> Bundle:
        try:
            return service.reload()
        except NoModelError as exc:
            raise HTTPException(409, str(exc)) from exc

    return await _run(request, admin, metrics, action)


@router.post("/admin/promote/{version}", response_model=AdminOut, responses=errors(401, 403, 404, 409, 503))
async def promote(
    request: Request,
    service: ServiceDep,
    admin: AdminDep,
    metrics: MetricsDep,
    version: Annotated[str, Path(max_length=64, description="a registered bundle version")],
    idempotency_key: IdempotencyKey = None,
) -> AdminOut:
    """Serve ``version`` and make it production (loaded first: a bundle that cannot load is
    refused and production does not change). Promoting the production bundle changes nothing."""

    def action() -> Bundle:
        return _load(lambda: service.promote(version, reason="admin API", key=idempotency_key), version)

    return await _run(request, admin, metrics, action)


@router.post("/admin/rollback", response_model=AdminOut, responses=errors(401, 403, 409, 503))
async def rollback(
    request: Request, service: ServiceDep, admin: AdminDep, metrics: MetricsDep, idempotency_key: IdempotencyKey = None
) -> AdminOut:
    """Go back to the bundle that was production before the current one, and serve it."""

    def action() -> Bundle:
        try:
            return service.rollback(key=idempotency_key)
        except RegistryError as exc:  # nothing to roll back to, or a bundle this code cannot serve
            raise HTTPException(409, str(exc)) from exc
        except Exception as exc:  # the bundle rolled back to cannot load: say so; the current one keeps serving
            log.exception("rollback: the bundle could not be loaded")
            raise HTTPException(409, f"the bundle rolled back to could not be loaded ({type(exc).__name__})") from exc

    return await _run(request, admin, metrics, action)


def _experiment_action(service: FeedService, name: str, start: bool) -> ExperimentOut:
    try:
        experiment = service.experiments.start(name) if start else service.experiments.stop(name)
    except ExperimentError as exc:
        known = name in service.experiments.load().experiments
        raise HTTPException(409 if known else 404, str(exc)) from exc
    service.refresh_experiments()  # this worker routes by it at once; the others within their watch interval
    return ExperimentOut(experiment=experiment.name, status=experiment.status)


ExperimentName = Annotated[str, Path(max_length=64, description="an experiment's name")]


@router.post("/admin/experiments/{name}/start", response_model=ExperimentOut, responses=errors(401, 403, 404, 409, 503))
async def start_experiment(
    request: Request, service: ServiceDep, admin: AdminDep, name: ExperimentName
) -> ExperimentOut:
    """Start a draft experiment (as `feedrec experiment start` does); its bundles are loaded
    before any request is routed to them."""
    return await _queued(request, admin, lambda: _experiment_action(service, name, True))


@router.post("/admin/experiments/{name}/stop", response_model=ExperimentOut, responses=errors(401, 403, 404, 409, 503))
async def stop_experiment(
    request: Request, service: ServiceDep, admin: AdminDep, name: ExperimentName
) -> ExperimentOut:
    """Stop a running experiment: its users go back to production."""
    return await _queued(request, admin, lambda: _experiment_action(service, name, False))
