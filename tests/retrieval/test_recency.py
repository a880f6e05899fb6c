"""The recency leg: newer documents first among the candidates retrieval already found under the
caller's scope; never a candidate more, never an invisible one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from citewell.core.models import AccessLabel, FusionMethod, Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.access import scope_for
from citewell.retrieval.fusion import FusionChoice, recency_leg
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder

JAN, APR, JUL, OCT = (datetime(2023, month, 15, tzinfo=UTC) for month in (1, 4, 7, 10))


# --- the leg --------------------------------------------------------------------------------


def test_recency_leg_ranks_documents_newest_first_and_skips_undated():
    document_of = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "u1": "U"}
    dates = {"A": JAN, "B": OCT, "C": APR}
    leg = {
        cid: (rank, norm) for cid, rank, norm in recency_leg(list(document_of), document_of, dates)
    }
    assert leg["b1"] == (1, 1.0)
    assert leg["c1"][0] == 2
    assert leg["a1"] == leg["a2"] == (3, 0.0)
    assert 0.0 < leg["c1"][1] < 1.0
    assert "u1" not in leg  # no stated date: no boost


def test_recency_leg_ranks_only_among_candidates():
    # A newer document that is not a candidate (not retrieved, or not visible) changes nothing.
    document_of = {"a1": "A", "z1": "Z"}
    dates = {"A": JAN, "Z": OCT}
    assert recency_leg(["a1"], document_of, dates) == [("a1", 1, 1.0)]


def test_equal_dates_share_a_rank():
    document_of = {"a": "A", "b": "B", "c": "C"}
    leg = recency_leg(["a", "b", "c"], document_of, {"A": OCT, "B": OCT, "C": JAN})
    assert [(cid, rank) for cid, rank, _ in leg] == [("a", 1), ("b", 1), ("c", 2)]


def test_add_recency_rrf_and_weighted_scales():
    document_of = {"old": "O", "new": "N", "undated": "U"}
    dates = {"O": JAN, "N": OCT}
    scores = {"old": 0.5, "new": 0.25, "undated": 0.4}
    rrf = FusionChoice(method=FusionMethod.RRF, rrf_k=60)
    boosted = rrf.add_recency(scores, document_of, dates, weight=2.0)
    assert boosted["new"] == pytest.approx(0.25 + 2.0 / 61)
    assert boosted["old"] == pytest.approx(0.5 + 2.0 / 62)
    assert boosted["undated"] == 0.4
    weighted = FusionChoice(method=FusionMethod.WEIGHTED)
    boosted = weighted.add_recency(scores, document_of, dates, weight=1.0)
    assert boosted == pytest.approx({"old": 0.5, "new": 1.25, "undated": 0.4})
    assert rrf.add_recency(scores, document_of, dates, weight=0.0) == scores


def test_single_leg_on_the_fusion_scale():
    leg = [("a", 9.0), ("b", 3.0), ("c", 1.0)]
    assert FusionChoice(method=FusionMethod.RRF, rrf_k=60).single(leg) == pytest.approx(
        {"a": 1 / 61, "b": 1 / 62, "c": 1 / 63}
    )
    assert FusionChoice(method=FusionMethod.WEIGHTED).single(leg) == pytest.approx(
        {"a": 1.0, "b": 0.25, "c": 0.0}
    )


# --- the service ----------------------------------------------------------------------------

# Every report reads the same, so relevance ties exactly and the order shows the recency leg.
REPORT = "Quarterly report: revenue of the services segment and operating margin for the quarter."
READER = Principal(name="reader", clearance="internal", groups=frozenset({"finance"}))


def dated_reports() -> list[TextDocument]:
    public = AccessLabel(classification="public", groups=frozenset({"finance"}))
    secret = AccessLabel(classification="restricted", groups=frozenset({"board"}))

    def doc(doc_id: str, date: datetime | None, label: AccessLabel = public) -> TextDocument:
        return TextDocument(
            doc_id=doc_id, title="Quarterly report", text=REPORT, label=label, document_date=date
        )

    return [
        doc("q1", JAN),
        doc("q2", APR),
        doc("q3", JUL),
        doc("undated", None),
        # Unrelated documents, so BM25 finds the report terms rare enough to score.
        *(
            TextDocument(doc_id=f"other-{i}", title=title, text=title, label=public)
            for i, title in enumerate(
                ("Parental leave policy", "Incident runbook", "Harbor terminal press note")
            )
        ),
        # The newest report of all, which the reader may not see.
        doc("board-q4", OCT, secret),
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("recency")), index="recency")
    embedder = HashingEmbedder()
    Ingestor(settings, embedder=embedder).ingest_texts(
        dated_reports(), index="recency", source_name="t"
    )
    # Weighted fusion turns tied scores into tied fused scores (RRF would rank ties apart).
    weighted = ServingIndex(
        settings, embedder=embedder, fusion=FusionChoice(method=FusionMethod.WEIGHTED)
    )
    rrf = ServingIndex(settings, embedder=embedder, fusion=FusionChoice(method=FusionMethod.RRF))
    yield settings, weighted, rrf
    weighted.close()
    rrf.close()


@pytest.mark.parametrize("mode", list(SearchMode))
def test_prefer_recent_orders_visible_newer_documents_first(served: Any, mode: SearchMode):
    settings, service, _ = served
    scope = scope_for(READER, settings.scheme, settings.default_groups)
    request = SearchRequest(query="quarterly report revenue", k=10, mode=mode, rerank=False)
    plain = service.search(READER, request)
    recent = service.search(READER, request.model_copy(update={"prefer_recent": True}))
    # Same candidates, same scope: only the order changes.
    assert {r.chunk.chunk_id for r in recent.results} == {r.chunk.chunk_id for r in plain.results}
    assert all(scope.allows_chunk(r.chunk) for r in recent.results)
    assert "board-q4" not in {r.chunk.doc_id for r in recent.results}
    dated = [r.chunk.doc_id for r in recent.results if r.chunk.document_date is not None]
    assert dated == ["q3", "q2", "q1"]
    assert recent.results[0].chunk.doc_id == "q3"
    assert recent.results[0].chunk.document_date == JUL


@pytest.mark.parametrize("mode", list(SearchMode))
def test_prefer_recent_with_rrf_only_lifts_the_newest(served: Any, mode: SearchMode):
    # With RRF, tied scores still get distinct ranks; the newest visible document gains the
    # most, so it can only move up.
    _, _, service = served
    request = SearchRequest(query="quarterly report revenue", k=10, mode=mode, rerank=False)
    plain = [r.chunk.doc_id for r in service.search(READER, request).results]
    recent = service.search(READER, request.model_copy(update={"prefer_recent": True}))
    order = [r.chunk.doc_id for r in recent.results]
    assert sorted(order) == sorted(plain)
    assert {"q1", "q2", "q3", "undated"} <= set(order)
    assert order.index("q3") <= plain.index("q3")
    assert recent.results[0].scores.fused is not None


def test_prefer_recent_cannot_reach_beyond_the_scope(served: Any):
    _, service, _ = served
    nobody = Principal(name="outsider", clearance="public", groups=frozenset({"legal"}))
    request = SearchRequest(query="quarterly report", k=10, rerank=False, prefer_recent=True)
    assert service.search(nobody, request).results == ()
    board = Principal(name="board", clearance="restricted", groups=frozenset({"board"}))
    got = service.search(board, request)
    assert [r.chunk.doc_id for r in got.results] == ["board-q4"]


class _ReversingReranker:
    """Reverses the order it is given (the reports read the same, so it cannot judge them)."""

    name = "reversing"

    def warm_up(self) -> None:
        pass

    def score(self, query: str, passages: Any) -> Any:
        import numpy as np

        assert len(passages) == 4  # the four visible reports BM25 finds
        return np.array([0.0, 0.1, 0.2, 0.95], dtype=np.float32)


def test_reranking_does_not_undo_prefer_recent(served: Any):
    # Reranked alone, the order would be undated, q1, q2, q3; the recency leg added to the
    # reranked order puts the newest first again.
    settings, weighted, _ = served
    service = ServingIndex(
        settings,
        embedder=weighted.embedder,
        reranker=_ReversingReranker(),
        fusion=FusionChoice(method=FusionMethod.WEIGHTED),
    )
    try:
        request = SearchRequest(query="quarterly report revenue", k=4, mode=SearchMode.BM25)
        got = service.search(READER, request.model_copy(update={"prefer_recent": True}))
    finally:
        service.close()
    assert got.reranked
    order = [r.chunk.doc_id for r in got.results]
    assert order[0] == "q3"
    assert [d for d in order if d != "undated"] == ["q3", "q2", "q1"]
