"""Loader for BEIR-format folders: ``corpus.jsonl[.gz]``, ``queries.jsonl``,
``qrels/<split>.tsv`` (``query-id<TAB>corpus-id<TAB>score`` with a header line).

Every malformed input raises :class:`EvaluationError` naming the file and line.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Literal

from citewell.core.errors import EvaluationError
from citewell.core.logging import log_event
from citewell.evaluation.golden_set import json_objects
from citewell.evaluation.models import BeirDataset, BeirDocument, BeirQuery

logger = logging.getLogger(__name__)

_GENERIC_DIR_NAMES = frozenset({"beir", "data", "dataset", "datasets"})


def dataset_name(dataset_dir: Path) -> str:
    """A short name for the collection: the folder name, or its parent's when the folder has a
    generic name (``cranfield/beir`` → ``cranfield``)."""
    resolved = dataset_dir.resolve()
    name = resolved.name
    if name.lower() in _GENERIC_DIR_NAMES and resolved.parent.name:
        name = resolved.parent.name
    return name


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        with _open_text(path) as handle:
            yield from json_objects(handle, path, EvaluationError)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from exc


def _field(record: dict[str, object], key: str, path: Path, line_no: int, required: bool) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise EvaluationError(f"{path}:{line_no}: field {key!r} missing or not a string")
    return str(value)


def corpus_path(dataset_dir: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        candidate = dataset_dir / name
        if candidate.is_file():
            return candidate
    raise EvaluationError(f"{dataset_dir}: no corpus.jsonl or corpus.jsonl.gz")


def load_corpus(path: Path) -> tuple[tuple[BeirDocument, ...], str]:
    """Documents in file order and the SHA-256 of their ids, titles and texts."""
    digest = hashlib.sha256()
    documents: list[BeirDocument] = []
    seen: set[str] = set()
    for line_no, record in _json_lines(path):
        doc_id = _field(record, "_id", path, line_no, required=True)
        if doc_id in seen:
            raise EvaluationError(f"{path}:{line_no}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = _field(record, "title", path, line_no, required=False)
        text = _field(record, "text", path, line_no, required=False)
        for part in (doc_id, title, text):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x1f")
        documents.append(BeirDocument(doc_id=doc_id, title=title, text=text))
    if not documents:
        raise EvaluationError(f"{path}: corpus is empty")
    return tuple(documents), digest.hexdigest()


def load_queries(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise EvaluationError(f"{path.parent}: no queries.jsonl")
    queries: dict[str, str] = {}
    for line_no, record in _json_lines(path):
        query_id = _field(record, "_id", path, line_no, required=True)
        queries[query_id] = _field(record, "text", path, line_no, required=True)
    return queries


# Graded relevance in collections runs from about -2 to 4; nDCG's exponential gain 2^grade - 1
# overflows a float past 1023 and turns a sum of a few grades near it into inf (metric NaN).
MAX_GRADE = 100


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: grade}}``. The header line is optional; grades must be integers
    within ``±MAX_GRADE``."""
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise EvaluationError(f"no qrels file {path} (available splits: {available or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from exc
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if line_no == 1 and fields[0].strip() == "query-id":
            continue
        # Tolerate TREC-style "qid 0 docid grade" rows as well as BEIR's three columns.
        if len(fields) != 3:
            fields = line.split()
            if len(fields) == 4:
                fields = [fields[0], fields[2], fields[3]]
        if len(fields) != 3:
            raise EvaluationError(f"{path}:{line_no}: expected 'query-id<TAB>corpus-id<TAB>score'")
        query_id, doc_id, grade_text = (field.strip() for field in fields)
        try:
            grade = int(grade_text)
        except ValueError as exc:
            raise EvaluationError(
                f"{path}:{line_no}: score {grade_text!r} is not an integer"
            ) from exc
        if abs(grade) > MAX_GRADE:
            raise EvaluationError(
                f"{path}:{line_no}: score {grade} is outside -{MAX_GRADE}..{MAX_GRADE}"
            )
        qrels.setdefault(query_id, {})[doc_id] = grade
    if not qrels:
        raise EvaluationError(f"{path}: no judgements")
    return qrels


def load_beir(dataset_dir: Path, split: str) -> BeirDataset:
    """Load one split. Only queries judged in the split are kept; a judged query missing from
    ``queries.jsonl`` is an error, a judged document missing from the corpus is logged (it can
    never be retrieved, so it lowers recall as it should)."""
    if not dataset_dir.is_dir():
        raise EvaluationError(f"dataset folder {dataset_dir} does not exist")
    corpus, corpus_sha256 = load_corpus(corpus_path(dataset_dir))
    all_queries = load_queries(dataset_dir / "queries.jsonl")
    qrels = load_qrels(dataset_dir / "qrels" / f"{split}.tsv")
    missing = sorted(set(qrels) - set(all_queries))
    if missing:
        raise EvaluationError(
            f"{dataset_dir}: qrels/{split}.tsv judges {len(missing)} queries not in queries.jsonl"
            f" (e.g. {missing[0]!r})"
        )
    doc_ids = {doc.doc_id for doc in corpus}
    unknown_docs = {doc for judged in qrels.values() for doc in judged} - doc_ids
    if unknown_docs:
        log_event(
            logger, logging.WARNING, "evaluation.qrels_unknown_documents", count=len(unknown_docs)
        )
    queries = tuple(
        BeirQuery(query_id=query_id, text=text)
        for query_id, text in all_queries.items()
        if query_id in qrels
    )
    blank = [query.query_id for query in queries if not query.text.strip()]
    if blank:
        raise EvaluationError(f"{dataset_dir}: judged query {blank[0]!r} has empty text")
    return BeirDataset(
        name=dataset_name(dataset_dir),
        split=split,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        corpus_sha256=corpus_sha256,
    )


def split_holdout(
    query_ids: Iterable[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(train, holdout) query ids: a seeded shuffle of the sorted ids, so every caller (training,
    the gate, the CLI) carves the same holdout out of a train split."""
    if not 0.0 < fraction < 1.0:
        raise EvaluationError(f"validation fraction must be within (0, 1), got {fraction}")
    ids = sorted(set(query_ids))
    random.Random(seed).shuffle(ids)
    cut = max(1, round(len(ids) * fraction))
    return sorted(ids[cut:]), sorted(ids[:cut])


HoldoutPart = Literal["all", "selection", "gate"]


def holdout_part(holdout_ids: Iterable[str], part: HoldoutPart, seed: int) -> list[str]:
    """One of two disjoint halves of a holdout, or all of it. Training picks its checkpoint on
    ``selection`` and the reranker gate decides on ``gate``: a gate on the queries that chose the
    checkpoint is optimistic (measured: +0.016 nDCG@10 on them, +0.000 on SciFact test). A
    holdout of one query serves as both."""
    ids = sorted(set(holdout_ids))
    if part == "all" or len(ids) < 2:
        return ids
    random.Random(seed + 1).shuffle(ids)
    half = len(ids) // 2
    return sorted(ids[:half] if part == "selection" else ids[half:])
