"""JSON Lines parsing shared by the evaluation readers (BEIR files, golden sets)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import EvaluationError


def json_objects(lines: Iterable[str], path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object raises
    EvaluationError naming ``path`` and the line."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{path}:{line_no}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise EvaluationError(f"{path}:{line_no}: expected a JSON object")
        yield line_no, record
