"""The layering, as a table: which part of the package may import which. Shared layers never
import offline/; the serving side never imports offline/ either; config imports no models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "feedrec"
#: part -> the feedrec parts it may import (besides itself and the root ``feedrec`` module).
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "logs": set(),
    "config": {"schemas"},
    "metrics": set(),
    "data": {"config", "schemas"},
    "features": {"schemas"},
    "models": {"config", "data", "features", "metrics", "schemas"},
    "registry": {"config", "features", "models", "schemas"},
    "workspace": {"config", "data", "experiments", "features", "redis", "registry"},
    # Experiments are shared by both worlds: the server routes with them, the CLI analyzes.
    "experiments": {"data"},
    "testing": {"config", "data", "features", "models", "registry", "schemas"},
    # Monitoring: the feature log the server writes, the profiles training writes, the monitor job.
    "monitoring": {"config", "data", "features", "logs", "metrics", "workspace"},
    # The dashboard is served next to the API and reads through the same service (the app mounts it).
    "dashboard": {"experiments", "logs", "monitoring", "online", "registry"},
    "online": {
        "config",
        "dashboard",
        "data",
        "experiments",
        "features",
        "logs",
        "metrics",
        "models",
        "monitoring",
        "registry",
        "schemas",
        "workspace",
    },
    "offline": {
        "config",
        "data",
        "features",
        "logs",
        "metrics",
        "models",
        "monitoring",
        "registry",
        "schemas",
        "spark",  # engine: spark builds the ranking set's features as Spark jobs
        "workspace",
    },
    # The scale-out backends implement the shared interfaces (the workspace names them by string).
    "redis": {"features"},
    "spark": {"config", "data", "features", "models", "registry", "schemas"},
    "render": {"registry"},
    "console": set(),
    "cli_experiments": {"config", "console", "experiments", "render", "workspace"},
    "cli_monitor": {"config", "console", "monitoring", "render", "workspace"},
    "cli_continuous": {"config", "console", "continuous"},
    # Continuous training runs offline training and drives the rollout through experiments.
    "continuous": {"config", "data", "experiments", "logs", "monitoring", "offline", "registry", "workspace"},
    # The live loop is a test harness outside the product: it reaches feedrec over HTTP only.
    "loop": {"config", "data"},
    "cli": {
        "cli_continuous",
        "cli_experiments",
        "cli_monitor",
        "config",
        "console",
        "data",
        "experiments",
        "logs",
        "loop",
        "models",
        "monitoring",
        "offline",
        "online",
        "registry",
        "render",
        "spark",
        "workspace",
    },
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _part_of(module: str) -> str | None:
    """``feedrec.online.routes.feed`` -> ``online``; None outside feedrec or for the root package."""
    pieces = module.split(".")
    return pieces[1] if pieces[0] == "feedrec" and len(pieces) > 1 else None


def _files(part: str) -> list[Path]:
    folder, module = SRC / part, SRC / f"{part}.py"
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [module]


def test_every_part_of_the_package_is_in_the_table():
    parts = {
        p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert parts - {"__init__", "__main__"} == set(ALLOWED)


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_the_table_allows(part: str):
    offenders = {
        str(path.relative_to(SRC)): sorted(
            m for m in _imports(path) if (p := _part_of(m)) is not None and p != part and p not in ALLOWED[part]
        )
        for path in _files(part)
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_check_itself_sees_imports(tmp_path: Path):
    sample = tmp_path / "x.py"
    sample.write_text("from feedrec.offline.split import chronological_split\nimport feedrec.offline.jobs\n")
    assert _imports(sample) == {"feedrec.offline.split", "feedrec.offline.jobs"}
    assert _part_of("feedrec.offline.split") == "offline" and _part_of("feedrec") is None
