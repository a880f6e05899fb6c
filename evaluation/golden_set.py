"""Golden question sets: the one file format, its reader and expected-source matching.

Used by the rebuild smoke test and the DAGs' input check (``evaluation.smoke_test``), the
per-source quality gates (``evaluation.quality_gates``) and answer evaluation
(``evaluation.answers_eval``, ``citewell eval answers``). Formats, chosen by file suffix:

- ``.csv`` with docugami's columns ``Question, Source Docs, Question Type, Source Chunk Type,
  Answer`` (``Source Docs`` holds file names or glob patterns such as ``*2023 Q3 AAPL*``, comma-
  or semicolon-separated), or the lower-case keys of the JSON lines format below;
- anything else is JSON lines, one object per line: ``{"question", "expected" | "expected_doc" |
  "expected_docs", "answer", "answerable", "question_type", "min_clearance"}``, where the
  expected documents are a path or a list of paths (any one counts), relative to the source
  folder, or bare file names; globs allowed. ``answerable`` defaults to true when an expected
  document is given. Other keys (e.g. ``groups``) are ignored.

Every problem raises :class:`GoldenSetError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import fnmatch
import json
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from pydantic import Field, ValidationError

from citewell.core.errors import CitewellError, GoldenSetError
from citewell.core.models import Frozen

# Keys naming the expected documents, in order of precedence (the first non-empty one counts).
_EXPECTED_KEYS = ("expected_docs", "expected_doc", "expected", "source docs")


class GoldenQuestion(Frozen):
    """One golden question. ``expected_sources`` are path patterns (any one counts); none means
    the corpus is not expected to answer it."""

    question: str = Field(min_length=1)
    expected_sources: tuple[str, ...] = ()
    reference_answer: str | None = None
    answerable: bool = True
    question_type: str | None = None
    min_clearance: str | None = None  # questions above the evaluator's clearance are skipped


def json_objects(
    lines: Iterable[str], path: Path, error: type[CitewellError] = GoldenSetError
) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object raises
    ``error`` naming ``path`` and the line (BEIR files pass their own error type)."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            # Also numbers over Python's digit limit and nesting deeper than its recursion limit.
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise error(f"{path}:{line_no}: invalid JSON: {reason}") from exc
        if not isinstance(record, dict):
            raise error(f"{path}:{line_no}: expected a JSON object")
        yield line_no, record


def _expected_sources(value: object, where: str, csv_cell: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        # Only CSV cells list several documents in one string; a JSON string is one path, which
        # may itself contain a comma.
        items = value.replace(";", ",").split(",") if csv_cell else [value]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise GoldenSetError(f"{where}: expected documents must be a path or a list of paths")
    return tuple(item.strip() for item in items if item.strip())


def _text(value: object) -> str | None:
    if value is None:
        return None
    return str(value).strip() or None


def _from_record(
    record: dict[str, object], where: str, csv_cell: bool, require_expected: bool
) -> GoldenQuestion:
    lowered = {str(key).strip().lower(): value for key, value in record.items()}
    question = lowered.get("question")
    if not isinstance(question, str) or not question.strip():
        raise GoldenSetError(f"{where}: a golden question needs a non-empty 'question'")
    sources: tuple[str, ...] = ()
    for key in _EXPECTED_KEYS:
        value = lowered.get(key)
        if value is not None and value != "" and value != []:
            sources = _expected_sources(value, where, csv_cell)
            break
    if require_expected and not sources:
        raise GoldenSetError(
            f"{where}: expected the document(s) that answer the question "
            "('expected': path or [paths], relative to the source folder)"
        )
    answerable = lowered.get("answerable")
    if isinstance(answerable, str):
        answerable = answerable.strip().lower() not in {"false", "0", "no", ""}
    try:
        return GoldenQuestion(
            question=question.strip(),
            expected_sources=sources,
            reference_answer=_text(lowered.get("answer") or lowered.get("reference_answer")),
            answerable=bool(sources) if answerable is None else bool(answerable),
            question_type=_text(lowered.get("question type") or lowered.get("question_type")),
            min_clearance=_text(lowered.get("min_clearance")),
        )
    except ValidationError as exc:  # e.g. a lone surrogate escape ("\ud800") in a string
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise GoldenSetError(f"{where}: invalid {field}: {problem['msg']}") from exc


MAX_CSV_CELL_CHARS = 128 * 1024
# The file is read whole: bound it before reading (hundreds of thousands of questions fit).
MAX_GOLDEN_SET_BYTES = 64 * 1024 * 1024


def _csv_records(text: str, path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    # Strict: an unterminated quote is an error, not every later row read into one cell.
    reader = csv.DictReader(text.splitlines(keepends=True), strict=True)
    start = 1
    try:
        _ = reader.fieldnames  # reads the header
        # Answers span several lines; name the line where the row starts.
        start = reader.line_num + 1
        for row in reader:
            # Our own bound: csv's field size limit is process-wide, and other libraries raise it.
            if any(
                len(cell) > MAX_CSV_CELL_CHARS for cell in row.values() if isinstance(cell, str)
            ):
                raise GoldenSetError(
                    f"{path}:{start}: invalid CSV: a cell is longer than {MAX_CSV_CELL_CHARS} "
                    "characters"
                )
            yield start, dict(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise GoldenSetError(f"{path}:{start}: invalid CSV: {exc}") from exc


def load_golden_set(
    path: Path, limit: int | None = None, *, require_expected: bool = False
) -> tuple[GoldenQuestion, ...]:
    """Read a golden set (CSV, or JSON lines for any other suffix), the first ``limit``
    questions of it. ``require_expected`` refuses questions without an expected document (the
    retrieval checks score every question on its documents). Raises :class:`GoldenSetError`."""
    try:
        size = path.stat().st_size
        if size > MAX_GOLDEN_SET_BYTES:
            raise GoldenSetError(
                f"golden set {path} too large ({size} bytes > {MAX_GOLDEN_SET_BYTES})"
            )
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenSetError(f"cannot read golden set {path}: {exc}") from exc
    csv_file = path.suffix.lower() == ".csv"
    records = _csv_records(text, path) if csv_file else json_objects(text.splitlines(), path)
    questions = tuple(
        _from_record(record, f"{path}:{line_no}", csv_file, require_expected)
        for line_no, record in records
    )
    if not questions:
        raise GoldenSetError(f"{path}: golden set is empty")
    return questions[:limit] if limit is not None else questions


def _glob(candidate: str, pattern: str) -> bool:
    # Equality first: a literal name with glob characters ("Q3 [draft].md") names itself.
    return candidate == pattern or fnmatch.fnmatchcase(candidate, pattern)


def matches_relative_path(question: GoldenQuestion, relative_path: str) -> bool:
    """Whether a document, by its path relative to the source folder (as the manifest records
    it), is one of the question's expected sources: a pattern matches the whole relative path,
    so a bare file name means a file at the top of the folder; ``*`` also crosses folders."""
    return any(_glob(relative_path, pattern) for pattern in question.expected_sources)


def _document_paths(source_uri: str, title: str) -> tuple[str, str, str]:
    """The names a golden set may use for a document: its path, file name and title."""
    parsed = urlparse(source_uri)
    # file URIs are percent-encoded; text sources are "<source>:<doc_id>".
    path = unquote(parsed.path) if parsed.scheme else source_uri
    return path, PurePosixPath(path).name, title


def matches_expected(question: GoldenQuestion, source_uri: str, title: str) -> bool:
    """Whether a cited document is one of the question's expected sources, when the source
    folder is not known. A pattern with a slash matches the end of the document's path (paths
    in golden sets are relative to the source folder); one without matches the file name or
    title. Globs are allowed (docugami uses them)."""
    full, name, doc_title = _document_paths(source_uri, title)
    for pattern in question.expected_sources:
        if "/" in pattern:
            if _glob(full, pattern) or full.endswith(f"/{pattern}") or _glob(full, f"*/{pattern}"):
                return True
        elif _glob(name, pattern) or (doc_title and _glob(doc_title, pattern)):
            return True
    return False


def load_retrieval_questions(path: Path) -> tuple[GoldenQuestion, ...]:
    """The questions of a golden set that retrieval checks (rebuild smoke test, quality gates)
    score: those naming expected documents. The file is the one ``citewell eval answers``
    reads; its unanswerable questions (no expected document) are skipped, since retrieval has
    nothing to find for them. An answerable question without expected documents, or a set
    with no scorable question, raises :class:`GoldenSetError`."""
    questions = load_golden_set(path)
    for number, question in enumerate(questions, start=1):
        if question.answerable and not question.expected_sources:
            raise GoldenSetError(
                f"{path}: question {number} is answerable but names no expected document "
                "('expected': path or [paths], relative to the source folder)"
            )
    scored = tuple(q for q in questions if q.expected_sources)
    if not scored:
        raise GoldenSetError(f"{path}: no question names an expected document to retrieve")
    return scored
