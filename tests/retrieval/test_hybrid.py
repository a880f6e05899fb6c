"""The search steps (``retrieval.hybrid.HybridSearch``) through ``ServingIndex.search`` on a real
index: every leg gets the caller's scope and filters (access is enforced inside each leg, not
only on the way out), only the legs of the requested mode run, and a scope that sees nothing
runs none."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from citewell.core.errors import ModelError
from citewell.core.models import (
    AccessLabel,
    Principal,
    SearchFilters,
    SearchMode,
    SearchRequest,
)
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.access import AccessScope, scope_for
from citewell.retrieval.rerank import CrossEncoderReranker
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder

PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))
SECRET = AccessLabel(classification="restricted", groups=frozenset({"board"}))
READER = Principal(name="reader", clearance="public", groups=frozenset())
QUERY = "harbor terminal berth 4"
LEGS = {"dense": ("vectors", "search"), "bm25": ("lexical", "search")}
LEGS["bm25_documents"] = ("lexical", "document_search")


@pytest.fixture(scope="module")
def index_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hybrid")
    documents = [
        TextDocument(
            doc_id=f"doc-{i}",
            title=f"Note {i}",
            text=f"The harbor terminal expansion plan, part {i}, covers berth {i}.",
            label=SECRET if i % 2 else PUBLIC,
        )
        for i in range(8)
    ]
    settings = Settings(data_dir=root / "data", principals_file=root / "p.yaml")
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        documents, index=settings.index, source_name="notes"
    )
    return root


@pytest.fixture
def service(index_root: Path) -> Iterator[ServingIndex]:
    settings = Settings(data_dir=index_root / "data", principals_file=index_root / "p.yaml")
    serving = ServingIndex(settings, embedder=HashingEmbedder())
    try:
        yield serving
    finally:
        serving.close()


def _spy_on_legs(
    service: ServingIndex, monkeypatch: pytest.MonkeyPatch
) -> dict[str, list[tuple[AccessScope, SearchFilters]]]:
    """Record the scope and filters each leg of the served version is called with."""
    calls: dict[str, list[tuple[AccessScope, SearchFilters]]] = {leg: [] for leg in LEGS}

    def recording(leg: str, real: Any) -> Any:
        def spy(query: Any, scope: AccessScope, filters: SearchFilters, limit: int) -> Any:
            calls[leg].append((scope, filters))
            return real(query, scope, filters, limit)

        return spy

    with service.versions.lease() as opened:
        for leg, (store_name, method) in LEGS.items():
            store = getattr(opened, store_name)
            monkeypatch.setattr(store, method, recording(leg, getattr(store, method)))
    return calls


def test_every_leg_gets_the_callers_scope_and_filters(
    service: ServingIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_on_legs(service, monkeypatch)
    filters = SearchFilters(sources=("notes",))
    request = SearchRequest(query=QUERY, k=8, mode=SearchMode.HYBRID, rerank=False, filters=filters)
    result = service.search(READER, request)
    expected = scope_for(READER, service.settings.scheme, service.settings.default_groups)
    assert {leg: len(seen) for leg, seen in calls.items()} == {leg: 1 for leg in LEGS}
    for seen in calls.values():
        assert seen == [(expected, filters)]
    assert result.results and all(hit.chunk.classification == "public" for hit in result.results)
    assert {"embed", "dense", "bm25", "bm25_documents", "total"} <= set(result.timings_ms)


@pytest.mark.parametrize(
    ("mode", "legs"), [(SearchMode.DENSE, {"dense"}), (SearchMode.BM25, {"bm25"})]
)
def test_only_the_legs_of_the_mode_run(
    service: ServingIndex, monkeypatch: pytest.MonkeyPatch, mode: SearchMode, legs: set[str]
) -> None:
    calls = _spy_on_legs(service, monkeypatch)
    result = service.search(READER, SearchRequest(query=QUERY, k=5, mode=mode, rerank=False))
    assert {leg for leg, seen in calls.items() if seen} == legs
    assert result.results and all(hit.chunk.classification == "public" for hit in result.results)


def test_a_scope_that_sees_nothing_runs_no_leg(
    service: ServingIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_on_legs(service, monkeypatch)
    nobody = service.settings.model_copy(update={"default_groups": ()})
    blind = ServingIndex(nobody, embedder=HashingEmbedder())
    try:
        blind.versions.load()
        blind_calls = _spy_on_legs(blind, monkeypatch)
        result = blind.search(READER, SearchRequest(query=QUERY, k=5, rerank=False))
    finally:
        blind.close()
    assert result.results == () and result.timings_ms == {"total": 0.0}
    assert not any(calls.values()) and not any(blind_calls.values())


def test_no_leg_is_asked_about_a_document_the_caller_cannot_see(
    service: ServingIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``doc_ids`` filter reached the vector store as the caller wrote it, and the engine
    checked every point of a named restricted document against the access filter: a dense
    search naming a 50,000-chunk restricted document's id (ids derive from source URIs) took
    ~70 µs longer than one naming a missing id, an oracle for the document's existence and
    size. Every leg is asked only about the named documents the caller may see, and a filter
    naming none of those runs no leg, exactly as one naming documents that do not exist."""
    calls = _spy_on_legs(service, monkeypatch)
    # doc-0 is public, doc-1 restricted.
    named = SearchFilters(doc_ids=frozenset({"doc-0", "doc-1", "no-such-doc"}))
    request = SearchRequest(query=QUERY, k=8, mode=SearchMode.HYBRID, rerank=False, filters=named)
    result = service.search(READER, request)
    assert {hit.chunk.doc_id for hit in result.results} == {"doc-0"}
    for leg, seen in calls.items():
        asked = [filters.doc_ids for _, filters in seen]
        assert asked == [frozenset({"doc-0"})], f"the {leg} leg was asked about {asked}"

    for seen in calls.values():
        seen.clear()
    for doc_ids in ({"doc-1", "doc-3"}, {"no-such-doc"}):
        filters = SearchFilters(doc_ids=frozenset(doc_ids))
        result = service.search(READER, request.model_copy(update={"filters": filters}))
        assert result.results == ()
        assert not any(calls.values()), f"a leg ran for {sorted(doc_ids)}"


class _FailingReranker:
    """A loaded cross-encoder whose scoring fails mid-request (the runtime ran out of memory,
    or an overflowing low-precision export returned NaN)."""

    name = "failing-cross-encoder"

    def __init__(self, failure: str) -> None:
        self.failure = failure
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        if self.failure == "raises":
            raise RuntimeError("CUDA out of memory")
        if self.failure == "inference" and self.calls == 1:
            # What the OpenVINO backend raises when one inference fails (a loaded model).
            raise ModelError("OpenVINO inference failed for model.xml: out of memory")
        if self.failure == "inference":
            return np.linspace(1.0, 0.0, len(passages), dtype=np.float32)
        scores = np.linspace(1.0, 0.0, len(passages), dtype=np.float32)
        scores[0] = np.nan
        return scores


def _unreranked(serving: ServingIndex, request: SearchRequest) -> list[tuple[str, float]]:
    result = serving.search(READER, request.model_copy(update={"rerank": False}))
    return [(hit.chunk.chunk_id, hit.score) for hit in result.results]


@pytest.mark.parametrize("failure", ["raises", "nan"])
def test_a_reranker_failing_mid_request_leaves_the_results_unreranked_and_says_so(
    index_root: Path, failure: str
) -> None:
    """Reranking is a quality step: a failure is the fused ranking with a note, never a 503
    for a search whose legs answered, nor an order made of NaN comparisons."""
    settings = Settings(data_dir=index_root / "data", principals_file=index_root / "p.yaml")
    reranker = _FailingReranker(failure)
    serving = ServingIndex(settings, embedder=HashingEmbedder(), reranker=reranker)
    try:
        request = SearchRequest(query=QUERY, k=4)
        result = serving.search(READER, request)
        assert reranker.calls == 1
        assert not result.reranked
        assert result.rerank_note == "the reranker failed; results are not reranked"
        assert [(hit.chunk.chunk_id, hit.score) for hit in result.results] == _unreranked(
            serving, request
        )
        assert all(hit.scores.rerank is None for hit in result.results)
    finally:
        serving.close()


def test_a_reranker_that_cannot_load_is_not_tried_again_on_every_search(
    index_root: Path, tmp_path: Path
) -> None:
    """A damaged model folder fails every load: searches answer unreranked, saying why, and
    stop trying it until the next version switch chooses the reranker again."""
    broken = tmp_path / "reranker"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    settings = Settings(data_dir=index_root / "data", principals_file=index_root / "p.yaml")
    reranker = CrossEncoderReranker(str(broken))
    serving = ServingIndex(settings, embedder=HashingEmbedder(), reranker=reranker)
    loads = 0
    load = reranker._load_torch

    def counted() -> None:
        nonlocal loads
        loads += 1
        load()

    reranker._load_torch = counted
    try:
        request = SearchRequest(query=QUERY, k=4)
        for _ in range(3):
            result = serving.search(READER, request)
            assert not result.reranked
            assert (
                result.rerank_note == "the reranker could not be loaded; results are not reranked"
            )
            assert [(h.chunk.chunk_id, h.score) for h in result.results] == _unreranked(
                serving, request
            )
        assert loads == 1
        assert serving.status().reranker is None
    finally:
        serving.close()


class _LogitReranker:
    """A cross-encoder whose scores are logits, negative for weak matches (as MiniLM's are)."""

    name = "logit-cross-encoder"

    def warm_up(self) -> None:
        pass

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        return -np.arange(1, len(passages) + 1, dtype=np.float32)


def test_scores_fall_with_rank_past_the_reranked_head(index_root: Path) -> None:
    """With more results than rerank candidates, the head carried logits (-1, -2) and the tail
    its fused scores (0.9 …): ``score``, "the final ranking score", rose again mid-list, so a
    client cutting or merging by score misordered results."""
    settings = Settings(
        data_dir=index_root / "data", principals_file=index_root / "p.yaml", rerank_candidates=2
    )
    serving = ServingIndex(settings, embedder=HashingEmbedder(), reranker=_LogitReranker())
    try:
        result = serving.search(READER, SearchRequest(query=QUERY, k=4))
        assert result.reranked and len(result.results) == 4
        scores = [hit.score for hit in result.results]
        assert scores == sorted(scores, reverse=True), scores
        fused = [hit.scores.fused for hit in result.results[2:]]
        assert fused == sorted(fused, reverse=True)  # the tail keeps its fused order
        assert [hit.scores.rerank for hit in result.results[:2]] == [-1.0, -2.0]
    finally:
        serving.close()


def test_one_failed_inference_does_not_switch_reranking_off(index_root: Path) -> None:
    """The OpenVINO backend raises ModelError when an inference fails, as a failed load does:
    one such failure switched reranking off for the index until its next version."""
    settings = Settings(data_dir=index_root / "data", principals_file=index_root / "p.yaml")
    reranker = _FailingReranker("inference")
    serving = ServingIndex(settings, embedder=HashingEmbedder(), reranker=reranker)
    try:
        request = SearchRequest(query=QUERY, k=4)
        first = serving.search(READER, request)
        assert not first.reranked
        assert first.rerank_note == "the reranker failed; results are not reranked"
        again = serving.search(READER, request)
        assert again.reranked and reranker.calls == 2, again.rerank_note
    finally:
        serving.close()
