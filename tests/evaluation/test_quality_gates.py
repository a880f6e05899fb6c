"""Quality gates: golden questions scored on the documents a search service returns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citewell.core.errors import GoldenSetError
from citewell.core.models import (
    Chunk,
    Principal,
    ScoreBreakdown,
    ScoredChunk,
    SearchRequest,
    SearchResult,
)
from citewell.evaluation.quality_gates import score_golden
from citewell.ingestion.sources_config import EvaluationConfig

ROOT = "file:///srv/docs/handbook"
PRINCIPAL = Principal(name="gate", clearance="public")


def _chunk(uri: str, n: int) -> Chunk:
    return Chunk(
        chunk_id=f"{uri}#{n}",
        doc_id=uri,
        chunk_index=n,
        text="text",
        title="title",
        source="handbook",
        source_uri=uri,
        doc_type="md",
        char_start=0,
        char_end=4,
        classification="public",
        classification_rank=0,
        groups=(),
    )


class _Service:
    """Returns fixed chunks per query, as a serving index ranks them."""

    def __init__(self, ranked: dict[str, list[str]]) -> None:
        self.ranked = ranked

    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        uris = self.ranked.get(request.query, [])
        return SearchResult(
            results=tuple(
                ScoredChunk(chunk=_chunk(uri, n), score=1.0, scores=ScoreBreakdown())
                for n, uri in enumerate(uris)
            ),
            mode=request.mode,
            reranked=False,
            index_version="v000002",
        )


def _golden(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_paths_and_globs_relative_to_the_source_folder(tmp_path: Path) -> None:
    golden = _golden(
        tmp_path / "g.jsonl",
        [
            {"question": "leave", "expected": "hr/leave policy.md"},
            {"question": "travel", "expected": ["travel/*.pdf"]},
            {"question": "bare", "expected": "leave policy.md"},
            {"question": "missing", "expected": "nowhere.md"},
        ],
    )
    service = _Service(
        {
            # Two chunks of one document count once: the expected one is the 2nd document.
            "leave": [f"{ROOT}/intro.md", f"{ROOT}/intro.md", f"{ROOT}/hr/leave%20policy.md"],
            "travel": [f"{ROOT}/travel/approvals.pdf"],
            # A bare name means a file at the top of the folder, not one further down.
            "bare": [f"{ROOT}/hr/leave%20policy.md"],
            # The same path under another folder is not this source's document.
            "missing": ["file:///elsewhere/nowhere.md"],
        }
    )
    config = EvaluationConfig(golden=golden, k=2)
    metrics, version = score_golden(service, PRINCIPAL, config, ROOT)
    assert version == "v000002"
    assert metrics == {"hit_rate": pytest.approx(2 / 4), "mrr": pytest.approx((0.5 + 1.0) / 4)}


def test_questions_without_expected_documents_are_refused(tmp_path: Path) -> None:
    golden = _golden(tmp_path / "g.jsonl", [{"question": "dogs?", "expected_doc": None}])
    with pytest.raises(GoldenSetError, match=r"g\.jsonl: no question names an expected document"):
        score_golden(_Service({}), PRINCIPAL, EvaluationConfig(golden=golden), ROOT)
    claimed = _golden(tmp_path / "c.jsonl", [{"question": "cats?", "answerable": True}])
    with pytest.raises(GoldenSetError, match=r"c\.jsonl: question 1 is answerable but names no"):
        score_golden(_Service({}), PRINCIPAL, EvaluationConfig(golden=claimed), ROOT)


def test_the_bundled_questions_are_accepted() -> None:
    """examples/questions.jsonl (with its unanswerable lines) is what the DAGs' gates read."""
    from citewell.evaluation.golden_set import load_retrieval_questions

    questions = load_retrieval_questions(Path(__file__).parents[2] / "examples" / "questions.jsonl")
    assert len(questions) == 16 and all(q.expected_sources for q in questions)
