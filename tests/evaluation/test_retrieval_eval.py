"""evaluate_retrieval against small doubles of the ingestor and the serving index."""

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from citewell.core.errors import EvaluationError, StoreUnavailableError
from citewell.core.models import (
    Chunk,
    IngestReport,
    Principal,
    ScoreBreakdown,
    ScoredChunk,
    SearchMode,
    SearchRequest,
    SearchResult,
)
from citewell.core.settings import Settings
from citewell.evaluation.models import BeirDocument
from citewell.evaluation.retrieval_eval import (
    EVAL_GROUP,
    document_ranking,
    evaluate_retrieval,
    validate_modes,
)
from tests.chunks import make_test_chunk
from tests.evaluation.beir_files import write_beir

DOCS = [
    {"_id": "d1", "title": "Alpha", "text": "first"},
    {"_id": "d2", "title": "Beta", "text": "second"},
    {"_id": "d3", "title": "Gamma", "text": "third"},
]
QUERIES = [{"_id": "q1", "text": "alpha?"}, {"_id": "q3", "text": "gamma?"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq3\td3\t1\n"

REPO = Path(__file__).resolve().parents[2]


def chunk(doc_id: str, index: int = 0) -> Chunk:
    return make_test_chunk(
        f"{doc_id}-{index}",
        "(not used)",
        doc_id=doc_id,
        index=index,
        title=doc_id,
        source="beir-test",
        source_uri=f"beir-test:{doc_id}",
        groups=(EVAL_GROUP,),
    )


class FakeIndex:
    """Answers "alpha?" with d2, then two chunks of d1; "gamma?" with nothing."""

    def __init__(self, exists: bool = True, reranker: bool = False, fail: bool = False) -> None:
        self.exists = exists
        self.reranker = reranker
        self.fail = fail
        self.requests: list[tuple[Principal, SearchRequest]] = []
        self.closed = False

    def ready(self) -> bool:
        return self.exists

    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        if self.fail:
            raise StoreUnavailableError("store down")
        self.requests.append((principal, request))
        hits = [chunk("d2"), chunk("d1", 0), chunk("d1", 1)] if request.query == "alpha?" else []
        rerank = request.rerank and self.reranker
        return SearchResult(
            results=tuple(
                ScoredChunk(chunk=c, score=1.0 - n / 10, scores=ScoreBreakdown())
                for n, c in enumerate(hits)
            ),
            mode=request.mode,
            reranked=rerank,
            rerank_note=None if rerank or not request.rerank else "no trained reranker",
            index_version="v000001",
        )

    def close(self) -> None:
        self.closed = True


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[tuple[list[BeirDocument], str, str]] = []

    def __call__(
        self, documents: Iterable[BeirDocument], index: str, source_name: str
    ) -> IngestReport:
        docs = list(documents)
        self.calls.append((docs, index, source_name))
        return IngestReport(
            index=index, index_version="v000001", added=tuple(d.doc_id for d in docs)
        )


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "mini", DOCS, QUERIES, QRELS)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def run(settings, dataset, index=None, modes=None, **kwargs):
    writer = kwargs.pop("writer", FakeWriter())
    service = kwargs.pop("service", FakeIndex())
    report = evaluate_retrieval(
        settings,
        dataset,
        "test",
        modes,
        index_name=index,
        writer=writer,
        opener=lambda name: service,
        **kwargs,
    )
    return report, writer, service


def test_metrics_per_mode_from_document_rankings(settings, dataset):
    report, writer, service = run(settings, dataset)
    assert list(report.modes) == ["bm25", "dense", "hybrid"]
    assert report.skipped == {"hybrid+rerank": "no trained reranker"}
    bm25 = report.modes["bm25"]
    # q1: documents d2 (grade 0), d1 (grade 2) → nDCG = (3/log2 3)/3, MRR 1/2, recall 1.
    # q3: nothing returned → all zero. Averages over both judged queries.
    assert bm25.ndcg_at_10 == pytest.approx(0.5 * 0.6309298, abs=1e-6)
    assert bm25.mrr_at_10 == pytest.approx(0.25)
    assert bm25.recall_at_10 == bm25.recall_at_100 == pytest.approx(0.5)
    # q1's relevant d1 is ranked second: recall@1 is 0, from k=3 on it is found.
    assert bm25.recall_curve[1] == pytest.approx(0.0)
    assert bm25.recall_curve[3] == bm25.recall_curve[10] == pytest.approx(0.5)
    assert (bm25.queries, bm25.empty_results) == (2, 1)
    assert bm25.latency_ms.p50 >= 0 and bm25.latency_ms.p95 >= bm25.latency_ms.p50
    assert report.index_version == "v000001"
    assert (report.documents, report.queries, report.depth) == (3, 2, 100)
    assert service.closed

    # Every request asks for depth 100 as a principal that sees the evaluation documents.
    seen = {(r.mode, r.rerank) for _, r in service.requests}
    assert seen == {
        (SearchMode.BM25, False),
        (SearchMode.DENSE, False),
        (SearchMode.HYBRID, False),
        (SearchMode.HYBRID, True),
    }
    assert all(r.k == 100 for _, r in service.requests)
    principal = service.requests[0][0]
    assert EVAL_GROUP in principal.groups and principal.clearance == "restricted"

    # All documents were ingested once, labelled so the evaluation principal sees them.
    ((docs, index, source),) = writer.calls
    assert [d.doc_id for d in docs] == ["d1", "d2", "d3"]
    assert index == report.index and index.startswith("eval-mini-")
    assert source == "beir-mini"


def test_rerank_mode_runs_when_the_index_reranks(settings, dataset):
    report, _, _ = run(settings, dataset, modes=["hybrid+rerank"], service=FakeIndex(reranker=True))
    assert list(report.modes) == ["hybrid+rerank"] and report.skipped == {}


def test_second_run_reuses_the_built_index(settings, dataset):
    first, writer, _ = run(settings, dataset, modes=["bm25"])
    again, writer_again, _ = run(settings, dataset, modes=["bm25"])
    assert len(writer.calls) == 1 and writer_again.calls == []
    assert (first.index_reused, again.index_reused) == (False, True)
    assert again.index == first.index


def test_changed_corpus_or_settings_gets_a_new_default_index(settings, dataset, tmp_path):
    first, _, _ = run(settings, dataset, modes=["bm25"])
    other = Settings(data_dir=settings.data_dir, chunk_size_tokens=128)
    rebuilt, writer, _ = run(other, dataset, modes=["bm25"])
    assert rebuilt.index != first.index and len(writer.calls) == 1


def test_explicit_index_that_exists_without_marker_is_refused(settings, dataset):
    with pytest.raises(EvaluationError, match="not built by evaluation"):
        run(settings, dataset, index="production", service=FakeIndex(exists=True))


def test_explicit_new_index_is_built_then_reused_and_guarded(settings, dataset, tmp_path):
    report, writer, _ = run(settings, dataset, index="my-eval", service=FakeIndex(exists=False))
    assert report.index == "my-eval" and len(writer.calls) == 1
    again, writer_again, _ = run(settings, dataset, index="my-eval")
    assert again.index_reused and writer_again.calls == []
    other = write_beir(tmp_path / "other", DOCS[:2], QUERIES[:1], "q1\td1\t1\n")
    with pytest.raises(EvaluationError, match="another corpus"):
        run(settings, other, index="my-eval")


def test_store_failure_propagates_and_closes(settings, dataset):
    service = FakeIndex(fail=True)
    with pytest.raises(StoreUnavailableError):
        run(settings, dataset, service=service)
    assert service.closed


def test_validate_modes():
    assert validate_modes(None) == ("bm25", "dense", "hybrid", "hybrid+rerank")
    assert validate_modes(["hybrid", "bm25"]) == ("bm25", "hybrid")
    with pytest.raises(EvaluationError, match="unknown retrieval mode"):
        validate_modes(["bm25", "splade"])


def test_document_ranking_follows_result_order_not_scores():
    # After reranking the head holds cross-encoder scores and the tail fused scores.
    results = [("d2", -3.0), ("d1", -4.0), ("d2", 0.02), ("d3", 0.01)]
    result = SearchResult(
        results=tuple(
            ScoredChunk(chunk=chunk(doc, n), score=score, scores=ScoreBreakdown())
            for n, (doc, score) in enumerate(results)
        ),
        mode=SearchMode.HYBRID,
        reranked=True,
    )
    assert document_ranking(result) == ["d2", "d1", "d3"]


def test_index_fingerprint_is_the_same_in_every_process(tmp_path):
    """Regression: the label's group set used to dump in hash order, so each process derived
    another index name and rebuilt the evaluation index."""
    import subprocess
    import sys

    write_beir(tmp_path / "mini", DOCS, QUERIES, QRELS)
    code = (
        "from pathlib import Path; from core.settings import Settings; "
        "from evaluation.beir import load_beir; "
        "from evaluation.retrieval_eval import index_fingerprint; "
        f"d = load_beir(Path({str(tmp_path / 'mini')!r}), 'test'); "
        "print(index_fingerprint(Settings(default_groups=('everyone', 'staff', 'x')), d))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            # The checkout's top-level packages, named, not found through the working
            # directory (entry points set PYTHONSAFEPATH, and so does the test session).
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(outputs) == 1
