"""The dashboard's routes: ``GET /dashboard/...`` pages (no token needed: they only read), the
overview's JSON for its refresh, and the static files (Chart.js, the page script and styles)
shipped in the package. Actions are not routes of the dashboard: its buttons call the admin API
(``/admin/promote/{version}``, ``/admin/rollback``, ``/admin/experiments/{name}/start|stop``) with
the admin token the operator types in, so the API and the dashboard share one way to act."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from feedrec import __version__
from feedrec.dashboard import views
from feedrec.dashboard.cache import Refreshing
from feedrec.experiments.definition import ExperimentError
from feedrec.online.deps import ServiceDep, SettingsDep, arrived
from feedrec.online.telemetry import MetricsHistory
from feedrec.registry import RegistryError

PACKAGE = Path(str(files("feedrec.dashboard")))
# A bundle version: a plain name that cannot lead out of the registry's folder.
VERSION = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
Version = Annotated[str, PathParam(max_length=64, pattern=f"^{VERSION}$")]
PAGES = ("overview", "models", "experiments", "monitoring", "explorer")


@dataclass
class DashboardState:
    """What the dashboard keeps between requests: the slow values' caches and bundle sizes."""

    engagement: Refreshing = field(default_factory=lambda: Refreshing(10.0, name="dashboard-ctr"))
    analyses: Refreshing = field(default_factory=lambda: Refreshing(60.0, name="dashboard-analysis"))
    sizes: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        self.engagement.close()
        self.analyses.close()


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "–"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _when(iso: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if not iso:
        return "–"
    try:
        return datetime.fromisoformat(str(iso)).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(iso)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True, undefined=jinja2.ChainableUndefined
    )
    env.filters["fmt"] = _fmt
    env.filters["when"] = _when
    env.filters["pct"] = lambda v, digits=2: "–" if v is None else f"{100 * v:.{digits}f} %"
    return env


templates = _environment()


async def get_state(request: Request) -> DashboardState:
    return request.app.state.dashboard


async def get_history(request: Request) -> MetricsHistory:
    return request.app.state.history


StateDep = Annotated[DashboardState, Depends(get_state)]
HistoryDep = Annotated[MetricsHistory, Depends(get_history)]


def _page(request: Request, page: str, template: str, context: dict[str, Any], *, status: int = 200) -> Response:
    """The page, with how long the server took (``Server-Timing``: arrival to rendered); ``admin``
    tells the page whether the server takes admin actions at all (FEEDREC_ADMIN_TOKEN is set)."""
    admin = request.app.state.settings.admin_token is not None
    body = templates.get_template(template).render(
        {"request": request, "page": page, "pages": PAGES, "version": __version__, "admin": admin, **context}
    )
    return HTMLResponse(body, status_code=status, headers={"Server-Timing": _timing(request)})


def _timing(request: Request) -> str:
    """How long the server took, arrival to rendered (a ``Server-Timing`` header)."""
    return f"render;dur={(time.monotonic() - arrived(request)) * 1e3:.1f}"


def _missing(request: Request, page: str, message: str) -> Response:
    return _page(request, page, "missing.html", {"message": message}, status=404)


router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def overview_page(request: Request, service: ServiceDep, history: HistoryDep, state: StateDep) -> Response:
    data = views.overview(service, history, state.engagement)
    return _page(request, "overview", "overview.html", {"o": data})


@router.get("/api/overview")
def overview_json(request: Request, service: ServiceDep, history: HistoryDep, state: StateDep) -> JSONResponse:
    """What the overview shows, for its refresh every few seconds."""
    data = views.overview(service, history, state.engagement)
    return JSONResponse(data, headers={"Server-Timing": _timing(request)})


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, service: ServiceDep, state: StateDep) -> Response:
    return _page(request, "models", "models.html", {"m": views.models(service, state.sizes)})


@router.get("/models/{version}", response_class=HTMLResponse)
def model_page(request: Request, version: Version, service: ServiceDep, state: StateDep) -> Response:
    try:
        data = views.model(service, version, state.sizes)
    except RegistryError as exc:
        return _missing(request, "models", str(exc))
    return _page(request, "models", "model.html", {"d": data})


@router.get("/models/{version}/report", response_class=HTMLResponse)
def model_report(version: Version, service: ServiceDep) -> Response:
    """The bundle's evaluation report, as `feedrec train` wrote it."""
    try:
        report = service.registry.artifact(version, "report.html")
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from exc
    if report is None:
        raise HTTPException(404, f"bundle {version} has no evaluation report")
    return HTMLResponse(report)


@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request, service: ServiceDep, state: StateDep) -> Response:
    try:
        data = views.experiments(service, state.analyses)
    except ExperimentError as exc:
        return _missing(request, "experiments", str(exc))
    return _page(request, "experiments", "experiments.html", {"x": data})


@router.get("/experiments/{name}", response_class=HTMLResponse)
def experiment_page(request: Request, name: str, service: ServiceDep, state: StateDep) -> Response:
    try:
        data = views.experiment(service, name, state.analyses)
    except ExperimentError as exc:
        return _missing(request, "experiments", str(exc))
    return _page(request, "experiments", "experiment.html", {"x": data})


@router.get("/monitoring", response_class=HTMLResponse)
def monitoring_page(request: Request, service: ServiceDep) -> Response:
    return _page(request, "monitoring", "monitoring.html", {"mon": views.monitoring(service)})


@router.get("/explorer", response_class=HTMLResponse)
def explorer_page(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    user_id: Annotated[str | None, Query(max_length=256)] = None,
    compare: Annotated[str | None, Query(max_length=64, pattern=f"^({VERSION})?$")] = None,
    k: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Response:
    data = views.explorer(service, (user_id or "").strip() or None, compare or None, k or settings.default_k)
    return _page(request, "explorer", "explorer.html", {"e": data})


def mount_static(app: Any) -> None:
    """Chart.js, the page script and the styles, from the package (nothing from the internet)."""
    app.mount("/dashboard/static", StaticFiles(directory=PACKAGE / "static"), name="dashboard-static")
