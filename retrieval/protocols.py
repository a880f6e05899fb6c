"""Contracts at the seams of retrieval. Implementations are small classes; each protocol has one
contract test suite (``tests/retrieval/contracts/``) run against every implementation."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from citewell.core.models import (
    AccessLabel,
    Chunk,
    Principal,
    SearchFilters,
    SearchRequest,
    SearchResult,
)
from citewell.retrieval.access import AccessScope

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Maps text into the one vector space shared by documents and queries.

    Constructors are cheap; the model loads on first use (or ``warm_up()``).
    """

    @property
    def cache_key(self) -> str:
        """Identifies the vectors this embedder produces (model, backend, max length).
        Two embedders with different keys may produce different vectors."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector (may load the model)."""
        ...

    def warm_up(self) -> None:
        """Load the model now."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        """Return an (n, dimension) float32 array of L2-normalised vectors, in input order."""
        ...

    def embed_query(self, text: str) -> Vector:
        """Return one L2-normalised float32 vector for a search query."""
        ...


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant."""

    @property
    def name(self) -> str:
        """Model id or path, for reports and audit."""
        ...

    def warm_up(self) -> None:
        """Load the model now."""
        ...

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        """One score per passage, in input order."""
        ...


@runtime_checkable
class VectorStore(Protocol):
    """Dense vectors with chunk payloads. Every search applies the access scope inside the store,
    before top-k."""

    def upsert(self, chunks: Sequence[Chunk], vectors: Matrix) -> None:
        """Insert or replace chunks by ``chunk_id`` (idempotent)."""
        ...

    def delete_documents(self, doc_ids: Collection[str]) -> None:
        """Remove every chunk of these documents (missing ids are ignored)."""
        ...

    def delete_chunks(self, chunk_ids: Collection[str]) -> None:
        """Remove these chunks (missing ids are ignored)."""
        ...

    def relabel_document(self, doc_id: str, label: AccessLabel, classification_rank: int) -> None:
        """Change the access payload of every chunk of a document, without touching vectors."""
        ...

    def search(
        self, vector: Vector, scope: AccessScope, filters: SearchFilters, limit: int
    ) -> list[tuple[Chunk, float]]:
        """Top ``limit`` visible chunks by similarity, best first. Empty if the scope matches
        nothing."""
        ...

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        """Chunks by id, in input order; unknown ids are skipped."""
        ...

    def chunk_ids_by_document(self, doc_ids: Collection[str]) -> dict[str, list[str]]:
        """Chunk ids of each given document (documents with no chunks are absent)."""
        ...

    def count(self) -> int:
        """Number of chunks stored."""
        ...

    def flush(self) -> None:
        """Make every acknowledged write durable."""
        ...

    def close(self) -> None:
        """Release files and connections. Idempotent."""
        ...


@runtime_checkable
class LexicalIndex(Protocol):
    """BM25 over chunk text. Scores for a scope are computed from the statistics of the chunks that
    scope can see (so invisible documents cannot change what a caller sees), and the access mask
    is applied before selecting the top."""

    def add(self, chunks: Sequence[Chunk], texts: Sequence[str] | None = None) -> None:
        """Index chunks (a chunk id already present is replaced). ``texts`` are what to index
        for each chunk (e.g. title + section + text); default: the chunk text."""
        ...

    def delete_documents(self, doc_ids: Collection[str]) -> None:
        """Remove every chunk of these documents."""
        ...

    def relabel_document(self, doc_id: str, label: AccessLabel, classification_rank: int) -> None:
        """Change the access fields of a document's chunks."""
        ...

    def search(
        self, query: str, scope: AccessScope, filters: SearchFilters, limit: int
    ) -> list[tuple[str, float]]:
        """Top ``limit`` (chunk_id, score) with score > 0, best first."""
        ...

    def document_terms(
        self, text: str, scope: AccessScope, doc_ids: Collection[str]
    ) -> dict[str, frozenset[str]]:
        """Per document of ``doc_ids``: the terms of ``text`` its visible chunks hold."""
        ...

    def visible_documents(self, doc_ids: Collection[str], scope: AccessScope) -> frozenset[str]:
        """Those of ``doc_ids`` with a chunk the scope may see, at the same cost for an
        invisible id as for a missing one."""
        ...

    def __len__(self) -> int:
        """Number of chunks indexed."""
        ...


@runtime_checkable
class SearchService(Protocol):
    """What the API, the agent and evaluation call. The principal is always required."""

    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        """Best visible chunks for the request; raises ``StoreUnavailableError`` when a store
        cannot be queried (never returns unfiltered or partial results)."""
        ...
