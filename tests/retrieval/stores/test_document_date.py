"""Both vector stores keep ``Chunk.document_date`` through upsert, search and lookup, and chunks
stored before the field existed still load (with no date)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from citewell.core.models import SearchFilters
from citewell.retrieval.stores.edge import EdgeVectorStore
from citewell.retrieval.stores.filters import chunk_from_payload, chunk_payload
from citewell.retrieval.stores.qdrant import QdrantVectorStore
from tests.retrieval.contracts.vector_store_contract import DIM, make_chunk, scope, unit_vectors

STATED = datetime(2023, 10, 24, 20, 14, 59, tzinfo=UTC)


def test_payload_without_document_date_loads_as_none():
    chunk = make_chunk("old", 0).model_copy(update={"document_date": STATED})
    payload = chunk_payload(chunk)
    assert payload["document_date"] == "2023-10-24T20:14:59Z"
    assert chunk_from_payload(payload) == chunk
    del payload["document_date"]  # written by a version without the field
    assert chunk_from_payload(payload).document_date is None


@pytest.mark.parametrize("backend", ["edge", "qdrant"])
def test_store_round_trip(tmp_path: Path, backend: str):
    store = (
        EdgeVectorStore(tmp_path / "edge", DIM)
        if backend == "edge"
        else QdrantVectorStore.local(":memory:", "chunks", DIM)
    )
    dated = make_chunk("dated", 0).model_copy(update={"document_date": STATED})
    undated = make_chunk("undated", 0)
    vectors = unit_vectors(2, seed=7)
    try:
        store.upsert([dated, undated], vectors)
        hits = store.search(vectors[0], scope(), SearchFilters(), 10)
        assert {c.doc_id: c.document_date for c, _ in hits} == {"dated": STATED, "undated": None}
        assert [c.document_date for c in store.get_chunks([dated.chunk_id])] == [STATED]
    finally:
        store.close()
