"""Monitoring: the serving feature log, the reference profiles training writes, the monitor job.

Where its outputs live in a workspace (the server's ``/metrics`` reads ``latest.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FOLDER = "monitoring"


def latest_file(workspace: Path) -> Path:
    """The latest ``feedrec monitor`` result, whole (what ``/metrics`` turns into gauges)."""
    return Path(workspace) / FOLDER / "latest.json"


def alerts_file(workspace: Path) -> Path:
    """Every alert ``feedrec monitor`` raised, one JSON object per line, oldest first."""
    return Path(workspace) / FOLDER / "alerts.jsonl"


def read_latest(workspace: Path) -> dict[str, Any] | None:
    """The latest ``feedrec monitor`` result; None when it has not run (or its file is unreadable)."""
    try:
        result = json.loads(latest_file(workspace).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None
