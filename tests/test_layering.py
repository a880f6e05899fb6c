"""Imports point down the rooms of docs/architecture.md: ``core`` at the bottom, ``retrieval``
over it, ``ingestion`` and ``agent`` through it, ``evaluation`` and ``training`` over those, and
the entry points (``api``, ``cli``, ``dags``) on top. Read from the source, lazy imports too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Which packages each package may import (besides itself).
ALLOWED = {
    "core": set(),
    "retrieval": {"core"},
    "ingestion": {"core", "retrieval"},
    "agent": {"core", "retrieval"},
    "evaluation": {"core", "retrieval", "ingestion", "agent"},
    "training": {"core", "retrieval", "ingestion", "agent", "evaluation"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each ``citewell.*`` package that ``package`` imports, the files that do."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "citewell" and len(parts) > 1 and parts[1] != package:
                    found.setdefault(parts[1], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    upward = {
        target: files
        for target, files in imported_packages(package).items()
        if target not in ALLOWED[package]
    }
    assert upward == {}, f"{package} imports packages above it: {upward}"


def test_the_golden_set_format_lives_in_evaluation() -> None:
    """The rebuild gets its smoke test from its callers; ingestion reads no golden set."""
    assert not (ROOT / "ingestion" / "golden.py").exists()
    assert "evaluation" not in imported_packages("ingestion")
