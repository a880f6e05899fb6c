"""Vector store on qdrant-client: a remote Qdrant server/cluster, or local mode in tests.

Local mode (``QdrantVectorStore.local``) is brute-force Python and ignores payload indexes and
search params; it exists so the congruence tests can hold the edge store against the reference
client. Remote rebuilds write a fresh collection and then move an alias onto it in one atomic
``update_collection_aliases`` call (:meth:`QdrantVectorStore.switch_alias`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from citewell.core.errors import CitewellError, StoreUnavailableError
from citewell.core.logging import log_event
from citewell.core.models import AccessLabel, Chunk, SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.protocols import Matrix, Vector
from citewell.retrieval.stores.filters import (
    KEYWORD_FIELDS,
    MODIFIED_FIELD,
    RANK_FIELD,
    access_payload,
    checked_point_ids,
    chunk_from_payload,
    chunk_payload,
    client_doc_filter,
    client_filter,
    point_id,
)
from citewell.retrieval.stores.shared import (
    CHUNK_ID_FIELDS,
    EXACT_SEARCH_MAX_POINTS,
    FilteredSearchPlanner,
    checked_query,
    chunks_in_order,
    group_chunk_ids,
    wanted_point_ids,
)

logger = logging.getLogger(__name__)

VECTOR_NAME = "dense"
MEMORY = ":memory:"
_UPSERT_BATCH = 256
_SCROLL_PAGE = 1000


class QdrantVectorStore:
    """A :class:`~retrieval.protocols.VectorStore` over one Qdrant collection (or alias).

    The collection and its payload indexes are created on first use if neither a collection nor
    an alias of that name exists and ``create`` is set; otherwise a missing collection is
    StoreUnavailableError (a reader must not stand an empty collection in for a deleted one).
    Filters matching at most ``exact_search_max_points`` points are
    searched exactly (0: always HNSW), as in the edge store.
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dimension: int,
        *,
        exact_search_max_points: int = EXACT_SEARCH_MAX_POINTS,
        create: bool = True,
    ) -> None:
        if dimension <= 0:
            raise ValueError("dimension must be positive")
        if not collection:
            raise ValueError("collection name must not be empty")
        self._client: QdrantClient | None = client
        self._collection = collection
        self._dimension = dimension
        self._ready = False
        self._create = create
        self._lock = threading.Lock()
        self._planner = FilteredSearchPlanner(exact_search_max_points)
        # Local mode (":memory:" or a path) is always brute force and warns on every request
        # that carries search params, so exact requests go without them there.
        options = getattr(client, "init_options", {})
        self._brute_force = options.get("path") is not None or options.get("location") == MEMORY

    @classmethod
    def from_url(
        cls,
        url: str,
        api_key: str | SecretStr | None,
        collection: str,
        dimension: int,
        *,
        exact_search_max_points: int = EXACT_SEARCH_MAX_POINTS,
        create: bool = True,
    ) -> QdrantVectorStore:
        """A store on a Qdrant server. Connects on first use, not here."""
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        # check_compatibility would make a request now; the constructor must stay cheap.
        client = QdrantClient(url=url, api_key=key, check_compatibility=False)
        return cls(
            client,
            collection,
            dimension,
            exact_search_max_points=exact_search_max_points,
            create=create,
        )

    @classmethod
    def local(
        cls,
        path_or_memory: Path | str,
        collection: str,
        dimension: int,
        *,
        exact_search_max_points: int = EXACT_SEARCH_MAX_POINTS,
    ) -> QdrantVectorStore:
        """A store in qdrant-client local mode: ``":memory:"`` or a directory path."""
        try:
            if str(path_or_memory) == MEMORY:
                client = QdrantClient(location=MEMORY)
            else:
                client = QdrantClient(path=str(path_or_memory))
        except Exception as exc:
            # e.g. "Storage folder ... is already accessed by another instance".
            raise StoreUnavailableError(
                f"cannot open local Qdrant at {path_or_memory}: {exc}"
            ) from exc
        return cls(client, collection, dimension, exact_search_max_points=exact_search_max_points)

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def dimension(self) -> int:
        return self._dimension

    # --- lifecycle -----------------------------------------------------------------------------

    def _raw(self) -> QdrantClient:
        if self._client is None:
            raise StoreUnavailableError(f"vector store {self._collection!r} is closed")
        return self._client

    @contextmanager
    def _guard(self, action: str) -> Iterator[QdrantClient]:
        """The client; any client error inside the block becomes StoreUnavailableError."""
        client = self._raw()
        try:
            yield client
        except CitewellError:
            raise
        except Exception as exc:
            # qdrant-client raises httpx, grpc, UnexpectedResponse, ValueError and RuntimeError
            # depending on transport and mode; all mean the store cannot serve this call.
            raise StoreUnavailableError(
                f"Qdrant collection {self._collection!r}: cannot {action}: {exc}"
            ) from exc

    @contextmanager
    def _engine(self, action: str) -> Iterator[QdrantClient]:
        self._ensure()
        with self._guard(action) as client:
            yield client

    def _ensure(self) -> None:
        if self._ready:
            return
        with self._lock, self._guard("create collection") as client:
            if self._ready:
                return
            aliases = {a.alias_name for a in client.get_aliases().aliases}
            if self._collection not in aliases and not client.collection_exists(self._collection):
                if not self._create:
                    raise _missing_collection(self._collection)
                client.create_collection(
                    self._collection,
                    vectors_config={
                        VECTOR_NAME: qm.VectorParams(
                            size=self._dimension, distance=qm.Distance.COSINE
                        )
                    },
                )
                fields: list[tuple[str, qm.PayloadSchemaType]] = [
                    (RANK_FIELD, qm.PayloadSchemaType.INTEGER),
                    (MODIFIED_FIELD, qm.PayloadSchemaType.DATETIME),
                ]
                fields += [(field, qm.PayloadSchemaType.KEYWORD) for field in KEYWORD_FIELDS]
                with warnings.catch_warnings():
                    # Local mode warns that payload indexes have no effect there; the same
                    # schema is still created so both modes run the same code.
                    warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                    for field, kind in fields:
                        client.create_payload_index(self._collection, field, field_schema=kind)
                log_event(
                    logger,
                    logging.INFO,
                    "vector_store.collection_created",
                    collection=self._collection,
                )
            self._check_dimension(client)
            self._ready = True

    def _check_dimension(self, client: QdrantClient) -> None:
        params = client.get_collection(self._collection).config.params.vectors
        stored = params.get(VECTOR_NAME) if isinstance(params, dict) else None
        if stored is None or stored.size != self._dimension:
            raise StoreUnavailableError(
                f"Qdrant collection {self._collection!r} has no {VECTOR_NAME!r} vector of "
                f"dimension {self._dimension}"
            )

    def flush(self) -> None:
        # Every write uses wait=True (the default), so an acknowledged write is already durable.
        self._raw()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        try:
            client.close()
        except Exception as exc:
            raise StoreUnavailableError(f"cannot close Qdrant client: {exc}") from exc

    # --- collections and aliases (remote rebuilds) ---------------------------------------------

    def collections(self) -> list[str]:
        """Names of every collection the client can see, sorted."""
        with self._guard("list collections") as client:
            return sorted(c.name for c in client.get_collections().collections)

    def aliases(self) -> dict[str, str]:
        """Alias name → collection name."""
        with self._guard("list aliases") as client:
            return {a.alias_name: a.collection_name for a in client.get_aliases().aliases}

    def create_alias(self, alias: str, collection: str) -> None:
        with self._guard("create alias") as client:
            client.update_collection_aliases(
                [
                    qm.CreateAliasOperation(
                        create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
                    )
                ]
            )

    def switch_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic operation (creates it if missing)."""
        with self._guard("switch alias") as client:
            existing = {a.alias_name for a in client.get_aliases().aliases}
            operations: list[qm.CreateAliasOperation | qm.DeleteAliasOperation] = []
            if alias in existing:
                operations.append(
                    qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))
                )
            operations.append(
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
                )
            )
            client.update_collection_aliases(operations)
        self._planner.invalidate()  # this store may read through the alias
        log_event(
            logger, logging.INFO, "vector_store.alias_switched", alias=alias, collection=collection
        )

    def delete_collection(self, collection: str | None = None) -> None:
        """Delete ``collection`` (default: this store's own). A missing collection is ignored."""
        name = collection or self._collection
        with self._guard("delete collection") as client:
            client.delete_collection(name)
        if name == self._collection:
            self._ready = False
        self._planner.invalidate()

    def copy_points_from(self, source: str) -> int:
        """Copy every point of collection ``source`` (vectors and payload) into this store's
        collection; returns how many. A refresh stages a version this way, as the embedded
        store copies its shard: the published collection is never written."""
        copied = 0
        offset: qm.ExtendedPointId | None = None
        with self._engine("copy points") as client:
            if not client.collection_exists(source):
                raise _missing_collection(source)
            while True:
                records, offset = client.scroll(
                    source, limit=_UPSERT_BATCH, offset=offset, with_payload=True, with_vectors=True
                )
                if records:
                    client.upsert(
                        self._collection,
                        points=[
                            qm.PointStruct(id=r.id, vector=r.vector or {}, payload=r.payload)
                            for r in records
                        ],
                    )
                    copied += len(records)
                if offset is None:
                    break
        self._planner.invalidate()
        return copied

    # --- writes --------------------------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], vectors: Matrix) -> None:
        ids = checked_point_ids(chunks, vectors, self._dimension)
        if not ids:
            return
        rows = np.asarray(vectors, dtype=np.float32).tolist()
        with self._engine("upsert") as client:
            for start in range(0, len(ids), _UPSERT_BATCH):
                end = min(len(ids), start + _UPSERT_BATCH)
                client.upsert(
                    self._collection,
                    points=[
                        qm.PointStruct(
                            id=ids[i],
                            vector={VECTOR_NAME: rows[i]},
                            payload=chunk_payload(chunks[i]),
                        )
                        for i in range(start, end)
                    ],
                )
        self._planner.invalidate()

    def delete_documents(self, doc_ids: Collection[str]) -> None:
        if not doc_ids:
            return
        with self._engine("delete documents") as client:
            client.delete(
                self._collection,
                points_selector=qm.FilterSelector(filter=client_doc_filter(doc_ids)),
            )
        self._planner.invalidate()

    def delete_chunks(self, chunk_ids: Collection[str]) -> None:
        ids: list[qm.ExtendedPointId] = [pid for pid in map(point_id, chunk_ids) if pid is not None]
        if not ids:
            return
        with self._engine("delete chunks") as client:
            client.delete(self._collection, points_selector=qm.PointIdsList(points=ids))
        self._planner.invalidate()

    def relabel_document(self, doc_id: str, label: AccessLabel, classification_rank: int) -> None:
        with self._engine("relabel") as client:
            client.set_payload(
                self._collection,
                payload=access_payload(label, classification_rank),
                points=qm.FilterSelector(filter=client_doc_filter([doc_id])),
            )
        self._planner.invalidate()

    # --- reads ---------------------------------------------------------------------------------

    def search(
        self, vector: Vector, scope: AccessScope, filters: SearchFilters, limit: int
    ) -> list[tuple[Chunk, float]]:
        if scope.matches_nothing or limit <= 0:
            return []
        query = checked_query(vector, self._dimension)
        flt = client_filter(scope, filters)
        with self._engine("search") as client:

            def count_matching(exact: bool = True) -> int:
                return client.count(self._collection, count_filter=flt, exact=exact).count

            def run(n: int, exact: bool) -> list[qm.ScoredPoint]:
                return self._query(client, query, flt, n, exact=exact)

            # Same plan as the edge store (see retrieval/stores/edge). On a server the estimate
            # is one request; plans are remembered per scope, so recurring scopes skip it.
            points = self._planner.search_best(
                (scope.cache_key, filters),
                run,
                lambda: count_matching(exact=False),
                count_matching,
                limit,
                logger,
            )
        return [(chunk_from_payload(p.payload), float(p.score)) for p in points]

    def _query(
        self,
        client: QdrantClient,
        query: Vector,
        flt: qm.Filter,
        limit: int,
        *,
        exact: bool,
    ) -> list[qm.ScoredPoint]:
        response = client.query_points(
            self._collection,
            query=query.tolist(),
            using=VECTOR_NAME,
            query_filter=flt,
            limit=limit,
            with_payload=True,
            search_params=qm.SearchParams(exact=True) if exact and not self._brute_force else None,
        )
        return list(response.points)

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        wanted, unique = wanted_point_ids(chunk_ids)
        if not unique:
            return []
        ids: list[qm.ExtendedPointId] = list(unique)
        with self._engine("retrieve") as client:
            records = client.retrieve(self._collection, ids=ids, with_payload=True)
        return chunks_in_order(wanted, ((r.id, r.payload) for r in records))

    def chunk_ids_by_document(self, doc_ids: Collection[str]) -> dict[str, list[str]]:
        if not doc_ids:
            return {}
        payloads: list[dict[str, Any] | None] = []
        offset: qm.ExtendedPointId | None = None
        with self._engine("scroll") as client:
            while True:
                records, offset = client.scroll(
                    self._collection,
                    scroll_filter=client_doc_filter(doc_ids),
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=CHUNK_ID_FIELDS,
                )
                payloads.extend(r.payload for r in records)
                if offset is None:
                    break
        return group_chunk_ids(payloads)

    def count(self) -> int:
        with self._engine("count") as client:
            return int(client.count(self._collection, exact=True).count)


def _missing_collection(collection: str) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"Qdrant collection {collection!r} does not exist on the server (deleted?); a fresh "
        "build (`citewell ingest --fresh`) makes a new one"
    )
