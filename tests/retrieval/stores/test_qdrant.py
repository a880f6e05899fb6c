from __future__ import annotations

import pytest

from citewell.core.errors import StoreUnavailableError
from citewell.retrieval.stores.qdrant import QdrantVectorStore
from tests.retrieval.contracts.vector_store_contract import (
    DIM,
    NO_FILTERS,
    VectorStoreContract,
    make_chunk,
    scope,
    unit_vectors,
)


class TestQdrantLocalContract(VectorStoreContract):
    persistent = True

    def make_store(self, tmp_path):
        return QdrantVectorStore.local(tmp_path / "qdrant", "chunks", DIM)


class TestQdrantMemoryContract(VectorStoreContract):
    def make_store(self, tmp_path):
        return QdrantVectorStore.local(":memory:", "chunks", DIM)


def test_second_client_on_same_path_is_unavailable(tmp_path):
    first = QdrantVectorStore.local(tmp_path / "q", "chunks", DIM)
    try:
        with pytest.raises(StoreUnavailableError):
            QdrantVectorStore.local(tmp_path / "q", "chunks", DIM)
    finally:
        first.close()


def test_closed_store_is_unavailable(tmp_path):
    store = QdrantVectorStore.local(":memory:", "chunks", DIM)
    store.close()
    with pytest.raises(StoreUnavailableError):
        store.count()


def test_unreachable_server_is_unavailable():
    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    store = QdrantVectorStore.from_url("http://127.0.0.1:9", None, "chunks", DIM)
    with pytest.raises(StoreUnavailableError):
        store.count()


def test_dimension_mismatch_is_unavailable(tmp_path):
    store = QdrantVectorStore.local(tmp_path / "q", "chunks", DIM)
    store.upsert([make_chunk("doc-a", 0)], unit_vectors(1, seed=0))
    store.close()
    other = QdrantVectorStore.local(tmp_path / "q", "chunks", DIM * 2)
    try:
        with pytest.raises(StoreUnavailableError, match="dimension"):
            other.count()
    finally:
        other.close()


def test_alias_switch_moves_readers_atomically():
    v1 = QdrantVectorStore.local(":memory:", "docs_v1", DIM)
    client = v1._client
    v2 = QdrantVectorStore(client, "docs_v2", DIM)
    v1.upsert([make_chunk("old", 0)], unit_vectors(1, seed=1))
    v2.upsert([make_chunk("new", 0)], unit_vectors(1, seed=2))
    v1.switch_alias("docs", "docs_v1")
    reader = QdrantVectorStore(client, "docs", DIM)
    query = unit_vectors(1, seed=3)[0]
    assert [c.doc_id for c, _ in reader.search(query, scope(), NO_FILTERS, 5)] == ["old"]
    v1.switch_alias("docs", "docs_v2")
    assert [c.doc_id for c, _ in reader.search(query, scope(), NO_FILTERS, 5)] == ["new"]
    assert v1.aliases() == {"docs": "docs_v2"}
    assert v1.collections() == ["docs_v1", "docs_v2"]  # the alias created no collection
    v1.delete_collection()
    assert v1.collections() == ["docs_v2"]
    v1.create_alias("latest", "docs_v2")
    assert v1.aliases() == {"docs": "docs_v2", "latest": "docs_v2"}
    v1.close()
