"""The serving index end to end: access in every mode (property-based), refresh while serving,
and unavailable stores."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from citewell.core.errors import IndexNotFoundError, StoreUnavailableError
from citewell.core.models import (
    AccessLabel,
    Principal,
    SearchFilters,
    SearchMode,
    SearchRequest,
)
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.access import scope_for
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.service import ServingIndex

pytestmark = pytest.mark.slow

LEVELS = ["public", "internal", "confidential", "restricted"]
GROUPS = ["everyone", "hr", "finance", "engineering", "security"]
TOPICS = [
    "quarterly revenue forecast for the northern region",
    "parental leave and holiday allowance policy",
    "incident response runbook for the dispatcher outage",
    "salary bands for warehouse supervisors",
    "vulnerability in the label printing service",
    "press release about the new harbor terminal",
]


def corpus(n: int = 48) -> list[TextDocument]:
    docs = []
    for i in range(n):
        level = LEVELS[i % 4]
        groups = frozenset({GROUPS[i % 5], GROUPS[(i * 3 + 1) % 5]}) if i % 7 else frozenset()
        topic = TOPICS[i % len(TOPICS)]
        docs.append(
            TextDocument(
                doc_id=f"doc-{i:03d}",
                title=f"Document {i} on {topic.split()[0]}",
                text=f"{topic}. Entry number {i} discusses {topic} in detail for team {i % 5}.",
                label=AccessLabel(classification=level, groups=groups),
            )
        )
    return docs


@pytest.fixture(scope="module")
def built(tmp_path_factory, embedder):
    from citewell.core.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("svc"), index="labelled")
    Ingestor(settings, embedder=embedder).ingest_texts(corpus(), index="labelled", source_name="t")
    service = ServingIndex(settings, embedder=embedder)
    yield settings, service
    service.close()


principals = st.builds(
    lambda level, groups: Principal(name="p", clearance=level, groups=frozenset(groups)),
    st.sampled_from(LEVELS),
    st.sets(st.sampled_from([*GROUPS, "unknown-group"]), max_size=3),
)


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    principal=principals,
    query=st.sampled_from([*TOPICS, "entry number", "team 3 detail"]),
    mode=st.sampled_from(list(SearchMode)),
)
def test_no_result_is_ever_invisible_to_the_principal(built, principal, query, mode):
    settings, service = built
    result = service.search(principal, SearchRequest(query=query, k=20, mode=mode, rerank=False))
    scope = scope_for(principal, settings.scheme, settings.default_groups)
    for item in result.results:
        assert scope.allows_chunk(item.chunk)
        assert item.chunk.groups, "unlabelled chunks are visible to nobody"


def test_default_group_and_scores_breakdown(built):
    _, service = built
    public = Principal(name="guest", clearance="public", groups=frozenset())
    result = service.search(public, SearchRequest(query=TOPICS[0], k=5, rerank=False))
    assert result.results, "'everyone' is a default group every principal holds"
    assert all(r.chunk.classification == "public" for r in result.results)
    top = result.results[0].scores
    assert top.fused is not None and (top.dense_rank is not None or top.bm25_rank is not None)
    assert result.reranked is False and result.rerank_note is None


def test_rerank_requested_without_a_reranker_says_so(built):
    _, service = built
    public = Principal(name="guest", clearance="public", groups=frozenset())
    result = service.search(public, SearchRequest(query=TOPICS[1], k=3, rerank=True))
    assert result.reranked is False
    assert result.rerank_note


def test_filters_narrow_never_widen(built):
    _, service = built
    boss = Principal(name="b", clearance="restricted", groups=frozenset(GROUPS))
    narrow = SearchRequest(
        query=TOPICS[2], k=20, rerank=False, filters=SearchFilters(doc_ids=frozenset({"doc-002"}))
    )
    assert {r.chunk.doc_id for r in service.search(boss, narrow).results} == {"doc-002"}
    guest = Principal(name="g", clearance="public", groups=frozenset())
    hidden = SearchRequest(
        query=TOPICS[1], k=20, rerank=False, filters=SearchFilters(doc_ids=frozenset({"doc-001"}))
    )
    assert service.search(guest, hidden).results == ()


def test_principal_without_groups_or_clearance_sees_nothing(built):
    settings, service = built
    nobody = Principal(name="n", clearance="restricted", groups=frozenset())
    no_default = ServingIndex(
        settings.model_copy(update={"default_groups": ()}), embedder=service.embedder
    )
    try:
        assert no_default.search(nobody, SearchRequest(query=TOPICS[0], rerank=False)).results == ()
    finally:
        no_default.close()


def test_refresh_while_serving_switches_atomically(tmp_path, make_settings, embedder):
    settings = make_settings(index="live")
    ingestor = Ingestor(settings, embedder=embedder)
    docs = corpus(12)
    ingestor.ingest_texts(docs, index="live", source_name="t")
    service = ServingIndex(settings, embedder=embedder)
    boss = Principal(name="b", clearance="restricted", groups=frozenset(GROUPS))
    request = SearchRequest(query="zebra crossing marathon", k=5, mode=SearchMode.BM25)
    try:
        assert service.search(boss, request).results == ()
        first_version = service.status().version
        extra = TextDocument(
            doc_id="zebra",
            title="Zebra",
            text="The zebra crossing marathon starts at the harbor gate.",
            label=AccessLabel(classification="public", groups=frozenset({"everyone"})),
        )
        # Another writer publishes while the service holds the old version open.
        Ingestor(settings, embedder=embedder).ingest_texts(
            [*docs, extra], index="live", source_name="t"
        )
        assert service.search(boss, request).results == ()  # still on the old version
        assert service.versions.maybe_reload() is True
        assert service.status().version != first_version
        hits = service.search(boss, request).results
        assert hits and hits[0].chunk.doc_id == "zebra"
        assert service.versions.maybe_reload() is False
    finally:
        service.close()


def test_missing_or_corrupt_store_is_unavailable_never_unfiltered(
    tmp_path, make_settings, embedder
):
    settings = make_settings(index="fragile")
    boss = Principal(name="b", clearance="restricted", groups=frozenset(GROUPS))
    empty = ServingIndex(settings, embedder=embedder)
    with pytest.raises(IndexNotFoundError):
        empty.search(boss, SearchRequest(query="anything"))
    assert empty.ready() is False

    Ingestor(settings, embedder=embedder).ingest_texts(corpus(8), index="fragile", source_name="t")
    layout = IndexLayout(settings)
    version_dir = layout.version_dir(layout.current_version() or "")
    shutil.rmtree(version_dir / "bm25")
    broken = ServingIndex(settings, embedder=embedder)
    with pytest.raises(StoreUnavailableError):
        broken.search(boss, SearchRequest(query="policy"))
    assert broken.ready() is False


def test_document_leg_keeps_access_and_only_reorders(built):
    from citewell.core.models import FusionMethod
    from citewell.retrieval.fusion import FusionChoice

    settings, _ = built
    plain = ServingIndex(settings, fusion=FusionChoice(method=FusionMethod.RRF))
    with_docs = ServingIndex(
        settings, fusion=FusionChoice(method=FusionMethod.RRF, document_share=0.5)
    )
    with_docs._embedder = plain._embedder = built[1].embedder
    try:
        for level in LEVELS:
            for groups in (frozenset(), frozenset({"hr"}), frozenset(GROUPS)):
                principal = Principal(name="p", clearance=level, groups=groups)
                scope = scope_for(principal, settings.scheme, settings.default_groups)
                for query in (*TOPICS[:3], "entry number 7"):
                    request = SearchRequest(query=query, k=100, rerank=False)
                    got = with_docs.search(principal, request)
                    assert all(scope.allows_chunk(r.chunk) for r in got.results)
                    before = plain.search(principal, request)
                    assert {r.chunk.chunk_id for r in got.results} == {
                        r.chunk.chunk_id for r in before.results
                    }
                    assert "bm25_documents" in got.timings_ms
    finally:
        plain.close()
        with_docs.close()


def test_a_refresh_keeps_the_loaded_reranker_until_a_new_model_is_published(
    tmp_path, make_settings, embedder
):
    from tests.retrieval.test_rerank import build_cross_encoder

    settings = make_settings(index="rr")
    ingestor = Ingestor(settings, embedder=embedder)
    docs = corpus(8)
    ingestor.ingest_texts(docs, index="rr", source_name="t")
    current = IndexLayout(settings, "rr").rerankers_dir / "current"
    model = build_cross_encoder(tmp_path / "ce", layers=1)
    shutil.copytree(model, current)
    service = ServingIndex(settings, embedder=embedder)
    try:
        service.versions.load()
        first = service.reranker
        assert first is not None and service.status().reranker == str(current)
        ingestor.ingest_texts(docs[:6], index="rr", source_name="t")
        assert service.versions.maybe_reload() is True
        assert service.reranker is first  # same model: not reloaded on a version switch
        # A newly trained model is renamed into place: the next switch picks it up.
        shutil.copytree(model, current.with_name("staging"))
        shutil.rmtree(current)
        current.with_name("staging").rename(current)
        ingestor.ingest_texts(docs, index="rr", source_name="t")
        assert service.versions.maybe_reload() is True
        assert service.reranker is not None and service.reranker is not first
    finally:
        service.close()


def test_the_exact_search_threshold_reaches_the_serving_store(tmp_path, make_settings, embedder):
    settings = make_settings(index="plan", exact_search_max_points=123)
    Ingestor(settings, embedder=embedder).ingest_texts(corpus(4), index="plan", source_name="t")
    service = ServingIndex(settings, embedder=embedder)
    try:
        service.versions.load()
        with service.versions.lease() as opened:
            assert opened.vectors._planner._max_points == 123
    finally:
        service.close()
