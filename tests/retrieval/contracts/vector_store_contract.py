"""The VectorStore contract, run against every implementation.

Subclass :class:`VectorStoreContract`, implement ``make_store(tmp_path)`` (and set
``persistent = True`` if a new store on the same ``tmp_path`` sees the old data). Class names
must start with ``Test`` in the subclass so pytest collects the inherited tests.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from citewell.core.models import AccessLabel, Chunk, SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.protocols import VectorStore

DIM = 16
LEVELS = ("public", "internal", "confidential", "restricted")


def make_chunk(
    doc_id: str,
    index: int,
    *,
    rank: int = 0,
    groups: tuple[str, ...] = ("everyone",),
    source: str = "wiki",
    doc_type: str = "md",
    modified_at: datetime | None = None,
) -> Chunk:
    chunk_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc_id}#{index}"))
    return Chunk(
        chunk_id=chunk_id,
        doc_id=doc_id,
        chunk_index=index,
        text=f"text of {doc_id} part {index}",
        title=f"Title {doc_id}",
        section="Intro" if index % 2 else None,
        source=source,
        source_uri=f"file:///{source}/{doc_id}.{doc_type}",
        doc_type=doc_type,
        page=index + 1 if doc_type == "pdf" else None,
        char_start=index * 100,
        char_end=index * 100 + 99,
        classification=LEVELS[rank],
        classification_rank=rank,
        groups=groups,
        modified_at=modified_at,
    )


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def scope(max_rank: int = 3, groups: tuple[str, ...] = ("everyone",)) -> AccessScope:
    return AccessScope(principal="tester", max_rank=max_rank, groups=frozenset(groups))


NO_FILTERS = SearchFilters()


class VectorStoreContract:
    persistent = False

    def make_store(self, tmp_path: Path) -> VectorStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path):
        s = self.make_store(tmp_path)
        yield s
        s.close()

    @pytest.fixture
    def corpus(self, store: VectorStore) -> tuple[list[Chunk], np.ndarray]:
        """Four documents: a public/everyone doc, an internal/sales doc, a confidential/legal doc
        from another source and type, and a restricted doc with no groups."""
        chunks = [
            *(
                make_chunk("doc-a", i, modified_at=datetime(2024, 1, 1 + i, tzinfo=UTC))
                for i in range(3)
            ),
            *(make_chunk("doc-b", i, rank=1, groups=("sales",)) for i in range(2)),
            *(
                make_chunk(
                    "doc-c",
                    i,
                    rank=2,
                    groups=("legal", "everyone"),
                    source="share",
                    doc_type="pdf",
                    modified_at=datetime(2024, 6, 1, tzinfo=UTC),
                )
                for i in range(2)
            ),
            make_chunk("doc-d", 0, rank=3, groups=()),
        ]
        vectors = unit_vectors(len(chunks), seed=1)
        store.upsert(chunks, vectors)
        return chunks, vectors

    # --- round trips ---------------------------------------------------------------------------

    def test_protocol(self, store):
        assert isinstance(store, VectorStore)

    def test_upsert_get_round_trip(self, store, corpus):
        chunks, _ = corpus
        ids = [c.chunk_id for c in reversed(chunks)]
        assert store.get_chunks(ids) == list(reversed(chunks))

    def test_get_skips_unknown_and_non_uuid_ids(self, store, corpus):
        chunks, _ = corpus
        unknown = str(uuid.uuid4())
        got = store.get_chunks([unknown, chunks[1].chunk_id, "not-a-uuid", chunks[0].chunk_id])
        assert got == [chunks[1], chunks[0]]
        assert store.get_chunks([]) == []

    def test_upsert_is_idempotent_and_replaces(self, store, corpus):
        chunks, vectors = corpus
        store.upsert(chunks, vectors)
        assert store.count() == len(chunks)
        changed = chunks[0].model_copy(update={"text": "new text", "title": "New"})
        store.upsert([changed], vectors[:1])
        assert store.count() == len(chunks)
        assert store.get_chunks([changed.chunk_id]) == [changed]

    def test_upsert_rejects_mismatched_vectors(self, store):
        from citewell.core.errors import InputRejectedError

        chunk = make_chunk("doc-x", 0)
        with pytest.raises(InputRejectedError):
            store.upsert([chunk], unit_vectors(2, seed=0))
        with pytest.raises(InputRejectedError):
            store.upsert([chunk], unit_vectors(1, seed=0, dim=DIM + 1))
        store.upsert([], np.zeros((0, DIM), dtype=np.float32))
        assert store.count() == 0

    def test_count(self, store, corpus):
        assert store.count() == len(corpus[0])

    def test_chunk_ids_by_document(self, store, corpus):
        chunks, _ = corpus
        got = store.chunk_ids_by_document(["doc-a", "doc-c", "doc-missing"])
        assert got == {
            "doc-a": [c.chunk_id for c in chunks if c.doc_id == "doc-a"],
            "doc-c": [c.chunk_id for c in chunks if c.doc_id == "doc-c"],
        }
        assert store.chunk_ids_by_document([]) == {}

    def test_delete_documents(self, store, corpus):
        chunks, _ = corpus
        store.delete_documents(["doc-a", "doc-missing"])
        assert store.count() == len(chunks) - 3
        assert store.chunk_ids_by_document(["doc-a"]) == {}
        assert store.get_chunks([c.chunk_id for c in chunks if c.doc_id == "doc-a"]) == []
        store.delete_documents([])
        assert store.count() == len(chunks) - 3

    def test_delete_chunks(self, store, corpus):
        chunks, _ = corpus
        store.delete_chunks([chunks[0].chunk_id, str(uuid.uuid4()), "not-a-uuid"])
        assert store.count() == len(chunks) - 1
        assert store.get_chunks([chunks[0].chunk_id]) == []
        assert store.chunk_ids_by_document(["doc-a"]) == {
            "doc-a": [chunks[1].chunk_id, chunks[2].chunk_id]
        }

    def test_relabel_changes_visibility_not_vectors(self, store, corpus):
        chunks, vectors = corpus
        b_ids = {c.chunk_id for c in chunks if c.doc_id == "doc-b"}
        query = vectors[3]  # doc-b's first chunk
        before = store.search(query, scope(groups=("sales",)), NO_FILTERS, 10)
        assert {c.chunk_id for c, _ in before} == b_ids
        before_scores = {c.chunk_id: s for c, s in before}

        label = AccessLabel(classification="restricted", groups=frozenset({"exec"}))
        store.relabel_document("doc-b", label, 3)

        assert store.search(query, scope(groups=("sales",)), NO_FILTERS, 10) == []
        after = store.search(query, scope(groups=("exec",)), NO_FILTERS, 10)
        assert {c.chunk_id for c, _ in after} == b_ids
        for chunk, score in after:
            assert score == pytest.approx(before_scores[chunk.chunk_id], abs=1e-5)
            assert chunk.classification == "restricted"
            assert chunk.classification_rank == 3
            assert chunk.groups == ("exec",)
            assert chunk.text == next(c.text for c in chunks if c.chunk_id == chunk.chunk_id)
        assert store.search(query, scope(max_rank=2, groups=("exec",)), NO_FILTERS, 10) == []
        assert store.count() == len(chunks)

    # --- access --------------------------------------------------------------------------------

    def _visible(self, store, s: AccessScope, filters: SearchFilters = NO_FILTERS) -> set[str]:
        query = unit_vectors(1, seed=99)[0]
        results = store.search(query, s, filters, 100)
        for chunk, _ in results:
            assert s.allows_chunk(chunk)
        return {c.doc_id for c, _ in results}

    def test_search_applies_rank(self, store, corpus):
        assert self._visible(store, scope(max_rank=0, groups=("everyone", "legal", "sales"))) == {
            "doc-a"
        }
        assert self._visible(store, scope(max_rank=1, groups=("everyone", "legal", "sales"))) == {
            "doc-a",
            "doc-b",
        }
        assert self._visible(store, scope(max_rank=3, groups=("everyone", "legal", "sales"))) == {
            "doc-a",
            "doc-b",
            "doc-c",
        }

    def test_search_applies_groups(self, store, corpus):
        assert self._visible(store, scope(groups=("sales",))) == {"doc-b"}
        assert self._visible(store, scope(groups=("legal",))) == {"doc-c"}
        assert self._visible(store, scope(groups=("everyone",))) == {"doc-a", "doc-c"}

    def test_empty_groups_and_negative_rank_see_nothing(self, store, corpus):
        query = corpus[1][0]
        assert store.search(query, scope(groups=()), NO_FILTERS, 10) == []
        assert store.search(query, scope(max_rank=-1), NO_FILTERS, 10) == []

    def test_unknown_group_sees_nothing(self, store, corpus):
        assert self._visible(store, scope(groups=("no-such-group",))) == set()

    def test_chunk_without_groups_is_visible_to_nobody(self, store, corpus):
        everything = scope(groups=("everyone", "sales", "legal", "exec", ""))
        assert "doc-d" not in self._visible(store, everything)

    def test_search_orders_by_similarity_and_respects_limit(self, store, corpus):
        chunks, vectors = corpus
        query = vectors[0]
        results = store.search(query, scope(groups=("everyone",)), NO_FILTERS, 3)
        assert len(results) == 3
        assert results[0][0] == chunks[0]
        assert results[0][1] == pytest.approx(1.0, abs=1e-5)
        scores = [s for _, s in results]
        assert scores == sorted(scores, reverse=True)
        visible = [i for i, c in enumerate(chunks) if c.doc_id in {"doc-a", "doc-c"}]
        expected = sorted(visible, key=lambda i: -float(vectors[i] @ query))[:3]
        assert [c.chunk_id for c, _ in results] == [chunks[i].chunk_id for i in expected]

    # --- filters -------------------------------------------------------------------------------

    def test_filters_narrow(self, store, corpus):
        wide = scope(groups=("everyone", "sales", "legal"))
        assert self._visible(store, wide, SearchFilters(sources=frozenset({"share"}))) == {"doc-c"}
        assert self._visible(store, wide, SearchFilters(doc_types=frozenset({"md"}))) == {
            "doc-a",
            "doc-b",
        }
        assert self._visible(store, wide, SearchFilters(doc_ids=frozenset({"doc-b", "doc-x"}))) == {
            "doc-b"
        }
        assert (
            self._visible(
                store,
                wide,
                SearchFilters(sources=frozenset({"wiki"}), doc_types=frozenset({"pdf"})),
            )
            == set()
        )

    def test_filters_never_widen(self, store, corpus):
        # doc-b and doc-d are outside the scope; naming them in filters must not reveal them.
        narrow = scope(max_rank=0, groups=("everyone",))
        filters = SearchFilters(doc_ids=frozenset({"doc-b", "doc-d"}))
        assert self._visible(store, narrow, filters) == set()
        assert self._visible(store, narrow, SearchFilters(sources=frozenset({"share"}))) == set()

    def test_date_range_excludes_undated(self, store, corpus):
        wide = scope(groups=("everyone", "sales", "legal"))
        since = SearchFilters(modified_from=datetime(2024, 1, 2, tzinfo=UTC))
        query = unit_vectors(1, seed=99)[0]
        got = {(c.doc_id, c.chunk_index) for c, _ in store.search(query, wide, since, 100)}
        assert got == {("doc-a", 1), ("doc-a", 2), ("doc-c", 0), ("doc-c", 1)}
        window = SearchFilters(
            modified_from=datetime(2024, 1, 2, tzinfo=UTC),
            modified_to=datetime(2024, 1, 2, 12, tzinfo=UTC),
        )
        got = {(c.doc_id, c.chunk_index) for c, _ in store.search(query, wide, window, 100)}
        assert got == {("doc-a", 1)}
        until = SearchFilters(modified_to=datetime(2024, 3, 1, tzinfo=UTC))
        assert self._visible(store, wide, until) == {"doc-a"}  # doc-b has no date

    # --- lifecycle -----------------------------------------------------------------------------

    def test_close_is_idempotent(self, tmp_path):
        s = self.make_store(tmp_path)
        s.upsert([make_chunk("doc-a", 0)], unit_vectors(1, seed=0))
        s.flush()
        s.close()
        s.close()

    def test_reopen_after_close_keeps_data(self, tmp_path):
        if not self.persistent:
            pytest.skip("not a persistent backend")
        chunks = [make_chunk("doc-a", i) for i in range(3)]
        vectors = unit_vectors(3, seed=5)
        s = self.make_store(tmp_path)
        s.upsert(chunks, vectors)
        s.flush()
        s.close()
        reopened = self.make_store(tmp_path)
        try:
            assert reopened.count() == 3
            assert reopened.get_chunks([c.chunk_id for c in chunks]) == chunks
            top = reopened.search(vectors[2], scope(), NO_FILTERS, 1)
            assert top[0][0] == chunks[2]
        finally:
            reopened.close()
