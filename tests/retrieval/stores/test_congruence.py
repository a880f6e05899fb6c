"""The edge store and qdrant-client (local mode, the reference implementation) must agree on
every operation: same ids in the same order, same scores, same counts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from citewell.core.models import AccessLabel, SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.stores.edge import EdgeVectorStore
from citewell.retrieval.stores.qdrant import QdrantVectorStore
from tests.retrieval.contracts.vector_store_contract import DIM, LEVELS, make_chunk, unit_vectors

GROUPS = ("everyone", "sales", "legal", "eng", "exec")
SOURCES = ("wiki", "share", "mail")
TYPES = ("md", "pdf", "docx")
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def _corpus(rng: random.Random, n_docs: int):
    chunks = []
    for d in range(n_docs):
        doc_id = f"doc-{d}"
        rank = rng.randrange(4)
        groups = tuple(sorted(rng.sample(GROUPS, rng.randrange(0, 3))))
        source, doc_type = rng.choice(SOURCES), rng.choice(TYPES)
        modified = BASE + timedelta(days=rng.randrange(365)) if rng.random() < 0.8 else None
        for i in range(rng.randrange(1, 6)):
            chunks.append(
                make_chunk(
                    doc_id,
                    i,
                    rank=rank,
                    groups=groups,
                    source=source,
                    doc_type=doc_type,
                    modified_at=modified,
                )
            )
    return chunks


def _random_filters(rng: random.Random) -> SearchFilters:
    def maybe(values, k):
        return frozenset(rng.sample(values, k)) if rng.random() < 0.3 else None

    start = BASE + timedelta(days=rng.randrange(300)) if rng.random() < 0.3 else None
    end = BASE + timedelta(days=rng.randrange(100, 400)) if rng.random() < 0.3 else None
    if start is not None and end is not None and start > end:
        start, end = end, start  # a reversed range is a validation error
    doc_ids = [f"doc-{d}" for d in range(60)]
    return SearchFilters(
        sources=maybe(SOURCES, 2),
        doc_types=maybe(TYPES, 1),
        doc_ids=maybe(doc_ids, 20),
        modified_from=start,
        modified_to=end,
    )


def _random_scope(rng: random.Random) -> AccessScope:
    groups = frozenset(rng.sample((*GROUPS, "unknown"), rng.randrange(0, 4)))
    return AccessScope(principal="p", max_rank=rng.randrange(-1, 4), groups=groups)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_and_qdrant_client_agree(tmp_path, seed):
    rng = random.Random(seed)
    chunks = _corpus(rng, 60)
    vectors = unit_vectors(len(chunks), seed=seed)
    edge = EdgeVectorStore(tmp_path / "edge", DIM)
    ref = QdrantVectorStore.local(":memory:", "chunks", DIM)
    stores = (edge, ref)
    try:
        for store in stores:
            store.upsert(chunks, vectors)
        # The same mutations on both: drop documents and chunks, relabel a few documents.
        dropped_docs = [f"doc-{d}" for d in rng.sample(range(60), 5)]
        dropped_chunks = [c.chunk_id for c in rng.sample(chunks, 10)]
        relabels = [
            (
                f"doc-{d}",
                AccessLabel(
                    classification=LEVELS[r := rng.randrange(4)],
                    groups=frozenset(rng.sample(GROUPS, 2)),
                ),
                r,
            )
            for d in rng.sample(range(60), 5)
        ]
        for store in stores:
            store.delete_documents(dropped_docs)
            store.delete_chunks(dropped_chunks)
            for doc_id, label, rank in relabels:
                store.relabel_document(doc_id, label, rank)

        assert edge.count() == ref.count()
        docs = [f"doc-{d}" for d in range(60)]
        assert edge.chunk_ids_by_document(docs) == ref.chunk_ids_by_document(docs)
        ids = [c.chunk_id for c in chunks]
        assert edge.get_chunks(ids) == ref.get_chunks(ids)

        queries = unit_vectors(25, seed=1000 + seed)
        non_empty = 0
        for query in queries:
            access, filters, limit = _random_scope(rng), _random_filters(rng), rng.randint(1, 40)
            got = edge.search(query, access, filters, limit)
            want = ref.search(query, access, filters, limit)
            assert [c.chunk_id for c, _ in got] == [c.chunk_id for c, _ in want]
            assert [c for c, _ in got] == [c for c, _ in want]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
            non_empty += bool(got)
        assert non_empty >= 5  # the random scopes must exercise real results, not just []
    finally:
        for store in stores:
            store.close()
