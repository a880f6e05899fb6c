"""Library code never sets the process environment; entry points do, through one function."""

import ast
from pathlib import Path

import pytest

from citewell.core.settings import Settings, apply_process_environment

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("core", "retrieval", "ingestion", "agent", "evaluation", "training")


def _environment_writes(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"setdefault", "update", "pop"}:
                target = node.func.value
            elif node.func.attr == "putenv":
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.Delete):
            for item in getattr(node, "targets", []):
                if isinstance(item, ast.Subscript):
                    target = item.value
        if target is not None and ast.unparse(target) == "os.environ":
            lines.append(getattr(node, "lineno", 0))
    return lines


def test_library_code_sets_no_environment() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for package in LIBRARY
        for path in (ROOT / package).rglob("*.py")
        if (lines := _environment_writes(path))
    }
    # The one function entry points call lives in core/settings.py.
    assert found == {"core/settings.py": found.get("core/settings.py", [])}
    assert found["core/settings.py"]


def test_hub_stays_reachable_for_a_hub_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    apply_process_environment(Settings(data_dir=tmp_path, embedding_model="org/some-model"))
    import os

    assert "HF_HUB_OFFLINE" not in os.environ
    apply_process_environment(Settings(data_dir=tmp_path, embedding_model=str(tmp_path)))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["DO_NOT_TRACK"] == "true"
