"""Training examples for the trained models and their portable file.

This module imports pydantic and the standard library only, so that a training machine without
the full install (a GPU host with torch and transformers, see ``training.cross_encoder``) can read
a training set built elsewhere. The file is xz-compressed JSON with every passage stored once:
groups and validation candidates point into one passage table, which keeps a 17k-group set of
long abstracts at 6 MB instead of hundreds (gzip: 13 MB).
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from citewell.core.errors import EvaluationError
from citewell.core.models import Frozen

GroupSource = Literal["judged", "pseudo-title", "pseudo-sentence", "pseudo-inner", "squad2", "rgb"]
FORMAT = "citewell-training-data"
FORMAT_VERSION = 1


class TrainingGroup(Frozen):
    """One query with one relevant passage and passages retrieved for it that are not."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    source: GroupSource


class Candidate(Frozen):
    doc_id: str
    text: str


class ValidationQuery(Frozen):
    """A held-out judged query with the hybrid candidates the reranker will see at serving."""

    query_id: str
    text: str
    qrels: Mapping[str, int]
    candidates: tuple[Candidate, ...]  # hybrid order, chunks (a document may appear twice)


class TrainingData(Frozen):
    groups: tuple[TrainingGroup, ...]
    validation: tuple[ValidationQuery, ...]
    counts: dict[str, int]  # groups per source
    train_queries: int
    validation_queries: int


def count_sources(groups: Sequence[TrainingGroup]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for group in groups:
        counts[group.source] = counts.get(group.source, 0) + 1
    return counts


def merge_training_data(parts: Sequence[TrainingData]) -> TrainingData:
    """One training set from several indexes' sets (groups, validation and counts summed)."""
    groups = tuple(group for part in parts for group in part.groups)
    return TrainingData(
        groups=groups,
        validation=tuple(query for part in parts for query in part.validation),
        counts=count_sources(groups),
        train_queries=sum(part.train_queries for part in parts),
        validation_queries=sum(part.validation_queries for part in parts),
    )


class _PassageTable:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}

    def id(self, text: str) -> int:
        found = self._ids.get(text)
        if found is None:
            found = self._ids[text] = len(self.texts)
            self.texts.append(text)
        return found


def save_training_data(data: TrainingData, path: Path) -> Path:
    """Write ``data`` as one portable xz'd JSON file (written whole: staged, then renamed)."""
    table = _PassageTable()
    groups = [
        {
            "query": g.query,
            "positive": table.id(g.positive),
            "negatives": [table.id(n) for n in g.negatives],
            "source": g.source,
        }
        for g in data.groups
    ]
    validation = [
        {
            "query_id": v.query_id,
            "text": v.text,
            "qrels": dict(v.qrels),
            "candidates": [[c.doc_id, table.id(c.text)] for c in v.candidates],
        }
        for v in data.validation
    ]
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "train_queries": data.train_queries,
        "validation_queries": data.validation_queries,
        "passages": table.texts,
        "groups": groups,
        "validation": validation,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    with lzma.open(staging, "wt", encoding="utf-8") as out:
        json.dump(record, out, ensure_ascii=False, separators=(",", ":"))
    staging.replace(path)
    return path


def load_training_data(path: Path) -> TrainingData:
    """Read a file written by :func:`save_training_data`; anything else is an EvaluationError."""
    try:
        with lzma.open(path, "rt", encoding="utf-8") as source:
            record = json.load(source)
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read training data {path}: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise EvaluationError(f"{path} is not a Citewell training-data file")
    if record.get("version") != FORMAT_VERSION:
        raise EvaluationError(
            f"{path}: training-data version {record.get('version')!r} is not {FORMAT_VERSION}"
        )
    try:
        passages: list[str] = record["passages"]
        groups = tuple(
            TrainingGroup(
                query=g["query"],
                positive=passages[g["positive"]],
                negatives=tuple(passages[n] for n in g["negatives"]),
                source=g["source"],
            )
            for g in record["groups"]
        )
        validation = tuple(
            ValidationQuery(
                query_id=v["query_id"],
                text=v["text"],
                qrels=v["qrels"],
                candidates=tuple(
                    Candidate(doc_id=doc_id, text=passages[passage])
                    for doc_id, passage in v["candidates"]
                ),
            )
            for v in record["validation"]
        )
        return TrainingData(
            groups=groups,
            validation=validation,
            counts=count_sources(groups),
            train_queries=record["train_queries"],
            validation_queries=record["validation_queries"],
        )
    except (KeyError, IndexError, TypeError, ValueError, ValidationError) as exc:
        raise EvaluationError(f"{path}: damaged training-data file ({exc})") from exc
