from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import EvaluationError
from evaluation.jsonl import json_objects


def test_json_objects_skips_blank_lines_and_keeps_line_numbers() -> None:
    lines = ['{"a": 1}\n', "\n", "  \n", '{"b": "x"}\n']
    assert list(json_objects(lines, Path("f.jsonl"))) == [(1, {"a": 1}), (4, {"b": "x"})]


@pytest.mark.parametrize(
    ("line", "message"),
    [("{not json", "f.jsonl:2: invalid JSON"), ("[1, 2]", "f.jsonl:2: expected a JSON object")],
)
def test_json_objects_names_the_bad_line(line: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        list(json_objects(['{"ok": true}', line], Path("f.jsonl")))
