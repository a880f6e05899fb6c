"""Golden question sets for answer evaluation: loaders and expected-source matching.

Formats (chosen by file suffix):

- CSV with docugami's columns ``Question, Source Docs, Question Type, Source Chunk Type, Answer``
  (``Source Docs`` holds file names or glob patterns such as ``*2023 Q3 AAPL*``, comma- or
  semicolon-separated), or the lower-case columns of the JSONL format below.
- JSON lines ``{"question", "expected_doc" | "expected_docs" | "expected", "answer",
  "answerable", "min_clearance"}``; expected paths are relative to the source folder or bare file
  names, globs allowed. ``answerable`` defaults to true when an expected document is given.

SQuAD 2.0 files load as documents plus answerable/unanswerable questions (:func:`load_squad`).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import random
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from pydantic import Field, ValidationError

from core.errors import EvaluationError
from core.models import AccessLabel, Frozen
from evaluation.jsonl import json_objects
from ingestion.pipeline import TextDocument


class GoldenQuestion(Frozen):
    """One evaluation question. ``expected_sources`` are path patterns (any one counts)."""

    question: str = Field(min_length=1)
    expected_sources: tuple[str, ...] = ()
    reference_answer: str | None = None
    answerable: bool = True
    question_type: str | None = None
    min_clearance: str | None = None  # questions above the evaluator's clearance are skipped


def _split_sources(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else str(raw).replace(";", ",").split(",")
    return tuple(s.strip() for s in map(str, items) if s.strip())


def _from_record(record: dict[str, object], where: str) -> GoldenQuestion:
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    sources = _split_sources(
        lowered.get("expected_docs")
        or lowered.get("expected_doc")
        or lowered.get("expected")
        or lowered.get("source docs")
    )
    answer = lowered.get("answer") or lowered.get("reference_answer")
    answerable = lowered.get("answerable")
    if isinstance(answerable, str):
        answerable = answerable.strip().lower() not in {"false", "0", "no", ""}
    try:
        return GoldenQuestion(
            question=str(lowered.get("question") or "").strip(),
            expected_sources=sources,
            reference_answer=str(answer) if answer else None,
            answerable=bool(sources) if answerable is None else bool(answerable),
            question_type=str(lowered["question type"]) if lowered.get("question type") else None,
            min_clearance=str(lowered["min_clearance"]) if lowered.get("min_clearance") else None,
        )
    except ValidationError as exc:
        raise EvaluationError(f"{where}: a golden question needs a non-empty 'question'") from exc


def load_golden_set(path: Path, limit: int | None = None) -> tuple[GoldenQuestion, ...]:
    """Read a CSV or JSONL golden set. Malformed rows and empty sets raise EvaluationError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read golden set {path}: {exc}") from exc
    questions: list[GoldenQuestion] = []
    if path.suffix.lower() == ".csv":
        for row_no, row in enumerate(csv.DictReader(text.splitlines(keepends=True)), start=2):
            questions.append(_from_record(dict(row), f"{path}:{row_no}"))
    elif path.suffix.lower() in {".jsonl", ".json"}:
        for line_no, record in json_objects(text.splitlines(), path):
            questions.append(_from_record(record, f"{path}:{line_no}"))
    else:
        raise EvaluationError(f"{path}: golden sets are .csv or .jsonl files")
    if not questions:
        raise EvaluationError(f"{path}: golden set is empty")
    return tuple(questions[:limit] if limit is not None else questions)


def document_paths(source_uri: str, title: str) -> tuple[str, ...]:
    """The names a golden set may use for a document: its path, file name and title."""
    parsed = urlparse(source_uri)
    # file URIs are percent-encoded; text sources are "<source>:<doc_id>".
    path = unquote(parsed.path) if parsed.scheme else source_uri
    return (path, PurePosixPath(path).name, title)


def matches_expected(question: GoldenQuestion, source_uri: str, title: str) -> bool:
    """Whether a document is one of the question's expected sources. A pattern with a slash
    matches the end of the document's path (paths in golden sets are relative to the source
    folder); one without matches the file name or title. Globs are allowed (docugami uses them)."""
    full, name, doc_title = document_paths(source_uri, title)
    for pattern in question.expected_sources:
        if "/" in pattern:
            if fnmatch.fnmatch(full, f"*/{pattern}") or fnmatch.fnmatch(full, pattern):
                return True
        elif fnmatch.fnmatch(name, pattern) or (doc_title and fnmatch.fnmatch(doc_title, pattern)):
            return True
    return False


class SquadSubset(Frozen):
    documents: tuple[TextDocument, ...]
    questions: tuple[GoldenQuestion, ...]


def load_squad(
    path: Path,
    label: AccessLabel,
    paragraphs: int | None = None,
    questions_per_paragraph: int | None = None,
    seed: int = 13,
) -> SquadSubset:
    """SQuAD 2.0 paragraphs as documents and their questions; ``is_impossible`` questions are
    unanswerable. ``paragraphs`` takes an evenly spread sample (both articles stay in)."""
    try:
        squad = json.loads(path.read_text(encoding="utf-8"))
        flat = [
            (article["title"], i, paragraph)
            for article in squad["data"]
            for i, paragraph in enumerate(article["paragraphs"])
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(f"cannot read SQuAD file {path}: {exc}") from exc
    if paragraphs is not None and paragraphs < len(flat):
        step = len(flat) / paragraphs
        flat = [flat[int(i * step)] for i in range(paragraphs)]
    rng = random.Random(seed)
    docs: list[TextDocument] = []
    items: list[GoldenQuestion] = []
    for title, i, paragraph in flat:
        doc_id = f"{title}-{i}"
        docs.append(
            TextDocument(doc_id=doc_id, title=title, text=paragraph["context"], label=label)
        )
        qas = list(paragraph["qas"])
        if questions_per_paragraph is not None and len(qas) > questions_per_paragraph:
            qas = rng.sample(qas, questions_per_paragraph)
        for qa in qas:
            impossible = bool(qa.get("is_impossible", False))
            answers = qa.get("answers") or []
            items.append(
                GoldenQuestion(
                    question=qa["question"],
                    expected_sources=() if impossible else (doc_id,),
                    reference_answer=None if impossible or not answers else answers[0]["text"],
                    answerable=not impossible,
                    question_type="squad2-unanswerable" if impossible else "squad2",
                )
            )
    return SquadSubset(documents=tuple(docs), questions=tuple(items))
