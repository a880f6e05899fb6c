"""Chunk.context (the contextual header) round-trips through both vector stores' payloads."""

from __future__ import annotations

import pytest

from citewell.core.models import SearchFilters
from citewell.retrieval.stores.edge import EdgeVectorStore
from citewell.retrieval.stores.filters import chunk_from_payload, chunk_payload
from citewell.retrieval.stores.qdrant import QdrantVectorStore
from tests.retrieval.contracts.vector_store_contract import DIM, make_chunk, scope, unit_vectors

HEADER = "Form 10-Q for Apple Inc. | 2023 Q3 AAPL | Gross Margin"


@pytest.mark.parametrize("backend", ["edge", "qdrant-local"])
def test_context_round_trips_through_get_and_search(tmp_path, backend):
    store = (
        EdgeVectorStore(tmp_path / "shard", DIM)
        if backend == "edge"
        else QdrantVectorStore.local(":memory:", "chunks", DIM)
    )
    try:
        chunk = make_chunk("doc-a", 0).model_copy(update={"context": HEADER})
        plain = make_chunk("doc-a", 1)
        vectors = unit_vectors(2, seed=3)
        store.upsert([chunk, plain], vectors)
        assert store.get_chunks([chunk.chunk_id, plain.chunk_id]) == [chunk, plain]
        found = store.search(vectors[0], scope(), SearchFilters(), limit=1)
        assert found[0][0].context == HEADER
    finally:
        store.close()


def test_payload_written_before_the_field_reads_as_no_context():
    payload = chunk_payload(make_chunk("doc-a", 0))
    del payload["context"]
    assert chunk_from_payload(payload).context == ""
