"""Statistics leak, end to end: a restricted document full of a rare term must not change a
public user's results or scores for that term, in any mode (BM25 statistics are per scope; dense
and cross-encoder scores are per chunk; RRF sees only visible ranks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.core.models import (
    AccessLabel,
    FusionMethod,
    Principal,
    SearchMode,
    SearchRequest,
    SearchResult,
)
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.rerank import CrossEncoderReranker
from citewell.retrieval.service import ServingIndex
from tests.retrieval.test_rerank import build_cross_encoder
from tests.security.corpus import TOPICS, documents

pytestmark = pytest.mark.slow

RARE = "zylophant"
PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))
GUEST = Principal(name="guest", clearance="public", groups=frozenset())
BOSS = Principal(name="boss", clearance="restricted", groups=frozenset({"security"}))


def base_docs() -> list[TextDocument]:
    rare = [
        TextDocument(
            doc_id=f"rare-{i}",
            title=f"Field note {i}",
            text=f"A {RARE} was seen near the harbor terminal on day {i}. "
            f"The {RARE} sighting is logged for the quarterly revenue forecast team {i}.",
            label=PUBLIC,
        )
        for i in range(3)
    ]
    # Public filler, so the rare term is in a minority of the visible documents (BM25Okapi gives
    # a term in more than half of them a non-positive idf and no hits).
    filler = [
        TextDocument(
            doc_id=f"filler-{i}",
            title=f"Bulletin {i}",
            text=f"Bulletin {i} on {topic}: nothing unusual was reported this week.",
            label=PUBLIC,
        )
        for i, (_, topic) in enumerate(TOPICS * 2)
    ]
    return [*documents(24), *filler, *rare]


RESTRICTED = TextDocument(
    doc_id="rare-restricted",
    title=f"{RARE} {RARE} dossier",
    text=" ".join([f"The {RARE} {RARE} programme is classified."] * 30),
    label=AccessLabel(classification="restricted", groups=frozenset({"security"})),
)


def fingerprint(result: SearchResult) -> list[tuple[str, float, tuple[object, ...]]]:
    return [
        (
            r.chunk.chunk_id,
            r.score,
            (
                r.scores.dense_rank,
                r.scores.dense_score,
                r.scores.bm25_rank,
                r.scores.bm25_score,
                r.scores.fused,
                r.scores.rerank,
            ),
        )
        for r in result.results
    ]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderReranker:
    path = build_cross_encoder(tmp_path_factory.mktemp("ce") / "ce", layers=1)
    model = CrossEncoderReranker(str(path), backend="torch", threads=2)
    model.warm_up()
    return model


REQUESTS = [
    SearchRequest(query=RARE, k=10, mode=SearchMode.BM25, rerank=False),
    SearchRequest(query=f"{RARE} harbor sighting", k=10, mode=SearchMode.BM25, rerank=False),
    SearchRequest(query=RARE, k=10, mode=SearchMode.DENSE, rerank=False),
    SearchRequest(query=f"{RARE} sighting", k=10, mode=SearchMode.HYBRID, rerank=False),
    SearchRequest(query=f"{RARE} sighting", k=10, mode=SearchMode.HYBRID, rerank=True),
]


def test_restricted_rare_term_document_changes_nothing_a_public_user_sees(
    tmp_path: Path, embedder, reranker
) -> None:
    settings = Settings(data_dir=tmp_path / "data", index="stats", rerank_candidates=8)
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_texts(base_docs(), index="stats", source_name="t")
    service = ServingIndex(settings, embedder=embedder, reranker=reranker)
    # The default (weighted) fusion min-max normalises each leg's scores, over visible
    # candidates only; RRF uses ranks only. Both must stay unmoved.
    rrf = ServingIndex(settings.model_copy(update={"fusion": FusionMethod.RRF}), embedder=embedder)
    hybrid = REQUESTS[3]
    try:
        before = [fingerprint(service.search(GUEST, r)) for r in REQUESTS]
        before_rrf = fingerprint(rrf.search(GUEST, hybrid))
        assert before_rrf and before_rrf != before[3]
        assert all(before), "the public rare-term documents must be found in every mode"
        assert service.search(GUEST, REQUESTS[-1]).reranked
        version = service.status().version

        ingestor.ingest_texts([*base_docs(), RESTRICTED], index="stats", source_name="t")
        assert service.versions.maybe_reload() is True
        assert service.status().version != version
        # The new document is really there and dominates the term for a cleared user...
        top = service.search(BOSS, REQUESTS[0]).results[0]
        assert top.chunk.doc_id == "rare-restricted"
        # ...and a public user's results and every score are bit-identical.
        after = [fingerprint(service.search(GUEST, r)) for r in REQUESTS]
        for request, old, new in zip(REQUESTS, before, after, strict=True):
            assert new == old, f"mode={request.mode} rerank={request.rerank} changed"
        assert rrf.versions.maybe_reload() is True
        assert fingerprint(rrf.search(GUEST, hybrid)) == before_rrf
    finally:
        service.close()
        rrf.close()


def test_global_statistics_would_have_leaked(tmp_path: Path) -> None:
    """The control: with statistics over the whole corpus (what a plain BM25 does), the same
    restricted document lowers the public documents' scores, so the test above can fail."""
    from rank_bm25 import BM25Okapi

    from citewell.retrieval.lexical.tokenize import DEFAULT_TOKENIZER

    public = [DEFAULT_TOKENIZER(f"{d.title} {d.text}") for d in base_docs()]
    secret = DEFAULT_TOKENIZER(f"{RESTRICTED.title} {RESTRICTED.text}")
    query = DEFAULT_TOKENIZER(RARE)
    without = BM25Okapi(public, k1=0.9, b=0.4).get_scores(query)[: len(public)]
    with_secret = BM25Okapi([*public, secret], k1=0.9, b=0.4).get_scores(query)[: len(public)]
    assert max(without) > 0
    assert list(without) != list(with_secret)
