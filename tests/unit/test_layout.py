"""The layering the conventions ask for: shared layers and the serving side never import offline/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "feedrec"
SHARED = ["data", "features", "metrics", "models", "online", "registry.py", "schemas.py", "config.py"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _files(part: str) -> list[Path]:
    target = SRC / part
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("part", [p for p in SHARED if (SRC / p).exists()])
def test_shared_layers_never_import_offline(part):
    offenders = {
        str(path.relative_to(SRC)): sorted(m for m in _imports(path) if m.startswith("feedrec.offline"))
        for path in _files(part)
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_check_itself_sees_imports(tmp_path: Path):
    sample = tmp_path / "x.py"
    sample.write_text("from feedrec.offline.split import chronological_split\nimport feedrec.offline.jobs\n")
    assert _imports(sample) == {"feedrec.offline.split", "feedrec.offline.jobs"}
