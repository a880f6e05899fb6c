"""SQuAD 2.0 as an answer-evaluation set: paragraphs as documents, questions as golden
questions (:func:`load_squad`). Golden set files themselves are read by ``evaluation.golden_set``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from citewell.core.errors import EvaluationError
from citewell.core.models import AccessLabel, Frozen
from citewell.evaluation.golden_set import GoldenQuestion
from citewell.ingestion.pipeline import TextDocument


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
