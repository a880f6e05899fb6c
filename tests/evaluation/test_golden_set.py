"""Golden sets: the one reader (CSV and JSON lines), its errors, and expected-source matching."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from citewell.core.errors import ConfigurationError, EvaluationError, GoldenSetError
from citewell.evaluation.golden_set import (
    GoldenQuestion,
    json_objects,
    load_golden_set,
    matches_expected,
    matches_relative_path,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_json_objects_skips_blank_lines_and_keeps_line_numbers() -> None:
    lines = ['{"a": 1}\n', "\n", "  \n", '{"b": "x"}\n']
    assert list(json_objects(lines, Path("f.jsonl"))) == [(1, {"a": 1}), (4, {"b": "x"})]


@pytest.mark.parametrize(
    ("line", "message"),
    [("{not json", "f.jsonl:2: invalid JSON"), ("[1, 2]", "f.jsonl:2: expected a JSON object")],
)
def test_json_objects_names_the_bad_line_with_the_callers_error(line: str, message: str) -> None:
    with pytest.raises(GoldenSetError, match=message):
        list(json_objects(['{"ok": true}', line], Path("f.jsonl")))
    with pytest.raises(EvaluationError, match=message):
        list(json_objects(['{"ok": true}', line], Path("f.jsonl"), EvaluationError))


def test_gate_format_accepts_a_path_or_a_list(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "g.jsonl",
        '{"question": "q1", "expected": "a.md"}\n\n'
        '{"question": "q2", "expected": ["b.md", "c.md"]}\n'
        '{"question": "q3", "expected": "reports/Q3, 2023.md"}\n',
    )
    questions = load_golden_set(file, require_expected=True)
    assert [q.expected_sources for q in questions] == [
        ("a.md",),
        ("b.md", "c.md"),
        ("reports/Q3, 2023.md",),  # a JSON string is one path, commas and all
    ]
    assert all(q.answerable for q in questions)


def test_example_questions_load_with_unanswerable_ones() -> None:
    questions = load_golden_set(EXAMPLES / "questions.jsonl")
    first = questions[0]
    assert first.expected_sources == ("press/2025-02-10-harbortrack-3-launch.md",)
    assert first.min_clearance == "public" and first.answerable
    unanswerable = [q for q in questions if not q.answerable]
    assert unanswerable and all(not q.expected_sources for q in unanswerable)
    with pytest.raises(GoldenSetError, match=r"questions\.jsonl:\d+: expected the document"):
        load_golden_set(EXAMPLES / "questions.jsonl", require_expected=True)


def test_docugami_csv_loads_with_patterns_and_reference_answers(shared_data: Path) -> None:
    questions = load_golden_set(shared_data / "qa" / "docugami_sec10q" / "qna_data.csv")
    assert len(questions) == 130
    first = questions[0]
    assert first.expected_sources == ("*AAPL*",)
    assert first.answerable and first.reference_answer and first.question_type == "Multi-Doc RAG"
    uri = (shared_data / "qa" / "docugami_sec10q" / "docs" / "2023 Q3 AAPL.pdf").as_uri()
    assert "%20" in uri  # file URIs are percent-encoded; matching must decode them
    assert matches_expected(first, uri, "2023 Q3 AAPL")
    assert not matches_expected(first, uri.replace("AAPL", "MSFT"), "2023 Q3 MSFT")
    assert len(load_golden_set(shared_data / "qa" / "docugami_sec10q" / "qna_data.csv", 5)) == 5


def test_csv_cells_split_and_errors_name_the_row_start(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "q.csv",
        'Question,Source Docs,Answer\nFirst?,"a.md; b.md",one\n'
        'Second?,c.md,"two\nlines"\n,d.md,x\n',
    )
    with pytest.raises(GoldenSetError, match=r"q\.csv:5: a golden question needs"):
        load_golden_set(file)
    _write(file, file.read_text(encoding="utf-8").rsplit(",d.md", 1)[0])
    first, second = load_golden_set(file)
    assert first.expected_sources == ("a.md", "b.md") and second.reference_answer == "two\nlines"


def test_jsonl_paths_match_relative_to_the_source(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps(
            {"question": "Q?", "expected_doc": "press/launch.md", "min_clearance": "internal"}
        )
        + "\n"
        + json.dumps({"question": "Nothing?", "answerable": False})
        + "\n",
        encoding="utf-8",
    )
    answerable, unanswerable = load_golden_set(path)
    assert answerable.min_clearance == "internal" and not unanswerable.answerable
    assert matches_expected(answerable, "file:///kb/press/launch.md", "Launch")
    assert not matches_expected(answerable, "file:///kb/old-press/launch.md", "Launch")


def test_relative_paths_match_whole_paths_or_globs() -> None:
    question = GoldenQuestion(
        question="q", expected_sources=("a.md", "hr/*.pdf", "Q3 [draft].md", "*AAPL*")
    )
    assert matches_relative_path(question, "a.md")
    assert not matches_relative_path(question, "sub/a.md")  # a bare name is at the top
    assert matches_relative_path(question, "hr/leave.pdf")
    assert not matches_relative_path(question, "old/hr/leave.pdf")
    assert matches_relative_path(question, "Q3 [draft].md")  # literal brackets name themselves
    assert matches_relative_path(question, "filings/2023 Q3 AAPL.pdf")
    assert not matches_relative_path(question, "b.md")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty"),
        ("not json\n", ":1: invalid JSON"),
        ('{"question": "q"}\n', ":1: expected the document"),
        ('{"question": "", "expected": "a.md"}\n', ":1: a golden question needs"),
        ('{"question": 3, "expected": "a.md"}\n', ":1: a golden question needs"),
        ('{"question": "q", "expected": 5}\n', ":1: expected documents must be"),
        ('{"question": "q", "expected": ["a.md", 1]}\n', ":1: expected documents must be"),
    ],
)
def test_bad_golden_files_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(GoldenSetError, match=message) as info:
        load_golden_set(_write(tmp_path / "g.jsonl", body), require_expected=True)
    assert "g.jsonl" in str(info.value)
    assert isinstance(info.value, ConfigurationError)  # the DAGs fail such tasks without retry


def test_unreadable_and_empty_csv(tmp_path: Path) -> None:
    with pytest.raises(GoldenSetError, match="cannot read golden set"):
        load_golden_set(tmp_path / "absent.jsonl")
    with pytest.raises(GoldenSetError, match="empty"):
        load_golden_set(_write(tmp_path / "empty.csv", "Question,Source Docs\n"))


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", ":1: invalid JSON"),
        ("bigint.jsonl", '{"question": "q", "expected": ' + "1" * 5000 + "}\n", ":1: invalid"),
        ("surrogate.jsonl", '{"question": "\\ud800 q", "expected": "a.md"}\n', ":1: "),
        ("big.csv", 'Question,Source Docs\n"' + "x" * 200_000 + '",a.md\n', ":2: "),
        ("unterminated.csv", 'Question,Source Docs\n"First?,a.md\nSecond?,b.md\n', ":2: "),
    ],
)
def test_malformed_golden_files_raise_golden_set_error_not_a_parser_error(
    tmp_path: Path, name: str, body: str, message: str
) -> None:
    # The reader promises a GoldenSetError naming file and line for every problem; a parser
    # exception escaping it is a crash in `citewell eval` and in the DAGs' input check, and an
    # unterminated CSV quote silently swallowed every later row into one question.
    with pytest.raises(GoldenSetError, match=message) as info:
        load_golden_set(_write(tmp_path / name, body))
    assert name in str(info.value)


def test_a_huge_csv_cell_is_refused_even_when_the_csv_module_limit_was_raised(
    tmp_path: Path,
) -> None:
    """csv.field_size_limit is process-wide; libraries raise it (seen under pytest-xdist)."""
    previous = csv.field_size_limit(sys.maxsize)
    try:
        path = tmp_path / "big.csv"
        path.write_text('Question,Source Docs\n"' + "x" * 200_000 + '",a.md\n')
        with pytest.raises(GoldenSetError, match=":2: invalid CSV: a cell is longer"):
            load_golden_set(path)
    finally:
        csv.field_size_limit(previous)


HUGE_FILE_SCRIPT = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from citewell.core.errors import CitewellError
from citewell.evaluation.golden_set import load_golden_set
from citewell.evaluation.regression import load_json
try:
    (load_json if sys.argv[2] == "json" else load_golden_set)(Path(sys.argv[1]))
except CitewellError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize(("name", "reader"), [("golden.jsonl", "golden"), ("run.json", "json")])
def test_a_huge_file_is_refused_before_it_is_read(tmp_path, name, reader):
    """A golden set or saved evaluation JSON of gigabytes was read whole into memory: in a
    process limited to 1 GiB, 'MemoryError' (the CLI: 'unexpected MemoryError', exit 1), and
    without a limit the machine's memory. The file here is sparse: it takes no disk."""
    import subprocess
    import sys

    huge = tmp_path / name
    with huge.open("wb") as handle:
        handle.truncate(3 << 30)
    done = subprocess.run(
        [sys.executable, "-c", HUGE_FILE_SCRIPT, str(huge), reader],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "refused:" in done.stdout and "too large" in done.stdout, done.stderr[-400:]
