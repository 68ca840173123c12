"""Chart specifications for Chart.js (shipped in ``static/vendor``), built on the server.

A spec is Chart.js's own configuration (``type``, ``data``, ``options``) as plain JSON: the page
embeds it next to a ``<canvas data-chart>`` and ``static/dashboard.js`` draws it. Nothing here
formats numbers for reading; the templates do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d", "#4b5563")


def color(n: int) -> str:
    return PALETTE[n % len(PALETTE)]


def clock(iso: str | None) -> str:
    """A time as the charts label it: ``MM-DD HH:MM`` (UTC)."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).strftime("%m-%d %H:%M")
    except ValueError:
        return iso


def _num(value: float | None) -> float | None:
    """A value as the chart takes it: JSON has no NaN or infinity, a gap is None."""
    return None if value is None or not math.isfinite(value) else float(value)


def series(
    label: str,
    values: Sequence[float | None],
    n: int = 0,
    *,
    dashed: bool = False,
    fill: str | bool = False,
    shade: str | None = None,
    points: bool = True,
) -> dict[str, Any]:
    """One line: ``values`` (None leaves a gap), the ``n``-th colour of the palette."""
    return {
        "label": label,
        "data": [_num(v) for v in values],
        "borderColor": color(n),
        "backgroundColor": shade or color(n),
        "borderDash": [6, 4] if dashed else [],
        "fill": fill,
        "pointRadius": 2 if points else 0,
        "spanGaps": False,
        "borderWidth": 2,
    }


def band(label: str, low: Sequence[float | None], high: Sequence[float | None], n: int = 0) -> list[dict[str, Any]]:
    """A shaded interval: the lower edge, then the upper edge filled down to it."""
    lower = series(f"{label} (low)", low, n, points=False) | {"borderWidth": 0}
    upper = series(label, high, n, fill="-1", shade=_alpha(color(n), 0.18), points=False) | {"borderWidth": 0}
    return [lower, upper]


def line(
    labels: Sequence[str], datasets: list[dict[str, Any]], *, y: str | None = None, zero: bool = False
) -> dict[str, Any]:
    """A line chart over category ``labels`` (times, versions)."""
    scale = _value_axis(y, zero)
    return {
        "type": "line",
        "data": {"labels": list(labels), "datasets": datasets},
        "options": {"scales": {"y": scale}, "plugins": {"legend": {"labels": {"filter": "hide-edges"}}}},
    }


def bars(
    labels: Sequence[str], datasets: list[dict[str, Any]], *, y: str | None = None, horizontal: bool = False
) -> dict[str, Any]:
    value_axis = "x" if horizontal else "y"
    return {
        "type": "bar",
        "data": {"labels": list(labels), "datasets": datasets},
        "options": {"indexAxis": "y" if horizontal else "x", "scales": {value_axis: _value_axis(y, True)}},
    }


def _value_axis(title: str | None, zero: bool) -> dict[str, Any]:
    scale: dict[str, Any] = {"beginAtZero": zero}
    if title:
        scale["title"] = {"display": True, "text": title}
    return scale


def bar_series(label: str, values: Sequence[float | None], n: int = 0) -> dict[str, Any]:
    return {"label": label, "data": [_num(v) for v in values], "backgroundColor": color(n)}


def xy(datasets: list[dict[str, Any]], *, x: str, y: str, x_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """A chart of (x, y) points joined by lines (a reliability curve)."""
    x_scale: dict[str, Any] = {"type": "linear", "title": {"display": True, "text": x}}
    if x_range is not None:
        x_scale["min"], x_scale["max"] = x_range
    return {
        "type": "scatter",
        "data": {"datasets": datasets},
        "options": {"showLine": True, "scales": {"x": x_scale, "y": {"title": {"display": True, "text": y}}}},
    }


def points(label: str, pairs: Sequence[tuple[float, float]], n: int = 0, *, dashed: bool = False) -> dict[str, Any]:
    return {
        "label": label,
        "data": [{"x": _num(a), "y": _num(b)} for a, b in pairs],
        "borderColor": color(n),
        "backgroundColor": color(n),
        "borderDash": [6, 4] if dashed else [],
        "showLine": True,
        "pointRadius": 0 if dashed else 3,
    }


def _alpha(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"
