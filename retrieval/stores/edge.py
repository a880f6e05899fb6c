"""Embedded vector store on qdrant-edge: one shard directory per index version.

Facts about qdrant-edge-py 0.9 that callers depend on (verified on this machine, see
``tests/retrieval/stores/test_edge.py``):

* One process, one open shard per path. A second ``EdgeShard.load`` of a path that is open —
  in another process *or in this same process* — fails with "Can't init WAL: WouldBlock"
  (raised here as :class:`StoreUnavailableError`). After ``close()`` the same process can load
  it again. There is no read-only mode.
* A ``cp -r`` / ``shutil.copytree`` copy of a shard directory that another process currently has
  loaded (and only reads) opens fine, with all flushed points, and the copy is writable. So a
  reader can serve one copy while a writer builds the next version in a copy of its own.

Restrictive filters: HNSW with a filter that few points pass can return fewer than ``limit``
results although more match, or a full list that misses part of the true top (graph
connectivity; see MEASURED.md and ``test_edge.py``). :meth:`EdgeVectorStore.search` therefore
plans each filtered search (:class:`~retrieval.stores.shared.FilteredSearchPlanner`): the
engine's cardinality estimate (``count(exact=False)``, ~0.05 ms at 100k points) decides, and a
filter matching at most ``exact_search_max_points`` points is searched with ``exact=True`` (a
brute-force scan of the points the payload indexes select). Broader filters use HNSW, and a short
answer is still checked with an exact count and repeated exactly. ACORN was measured as the
alternative: at 100k points and a 2% filter it took 7.6 ms p50 against 0.9 ms for plain HNSW on
every query (``benchmarks/vector_store.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as edge

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
    edge_doc_filter,
    edge_filter,
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
_UPSERT_BATCH = 1000
_SCROLL_PAGE = 1000


class EdgeVectorStore:
    """A :class:`~retrieval.protocols.VectorStore` over a qdrant-edge shard at ``path``.

    The constructor only stores its arguments; the shard is opened (created if the directory is
    missing or empty) on first use. ``full_scan_threshold_kb`` and ``indexing_threshold_kb``
    tune HNSW and apply only when the shard is created or opened by this object. Filters matching
    at most ``exact_search_max_points`` points are searched exactly (0: always HNSW).
    """

    def __init__(
        self,
        path: Path,
        dimension: int,
        *,
        full_scan_threshold_kb: int | None = None,
        indexing_threshold_kb: int | None = None,
        exact_search_max_points: int = EXACT_SEARCH_MAX_POINTS,
    ) -> None:
        if dimension <= 0:
            raise ValueError("dimension must be positive")
        self._planner = FilteredSearchPlanner(exact_search_max_points)
        self._path = Path(path)
        self._dimension = dimension
        self._full_scan_threshold_kb = full_scan_threshold_kb
        self._indexing_threshold_kb = indexing_threshold_kb
        self._shard: edge.EdgeShard | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dimension(self) -> int:
        return self._dimension

    # --- lifecycle -----------------------------------------------------------------------------

    def _config(self) -> edge.EdgeConfig:
        hnsw = None
        if self._full_scan_threshold_kb is not None:
            # m and ef_construct are Qdrant's defaults; the binding has no way to leave them unset.
            hnsw = edge.HnswIndexConfig(
                m=16, ef_construct=100, full_scan_threshold=self._full_scan_threshold_kb
            )
        optimizers = None
        if self._indexing_threshold_kb is not None:
            optimizers = edge.EdgeOptimizersConfig(indexing_threshold=self._indexing_threshold_kb)
        return edge.EdgeConfig(
            vectors={
                VECTOR_NAME: edge.EdgeVectorParams(
                    size=self._dimension, distance=edge.Distance.Cosine
                )
            },
            hnsw_config=hnsw,
            optimizers=optimizers,
        )

    def _open(self) -> edge.EdgeShard:
        shard = self._shard
        if shard is not None:
            return shard
        with self._lock:
            if self._shard is not None:
                return self._shard
            fresh = False
            try:
                fresh = not self._path.exists() or not any(self._path.iterdir())
                if fresh:
                    shard = edge.EdgeShard.create(str(self._path), self._config())
                    try:
                        self._create_indexes(shard)
                    except Exception:
                        shard.close()  # release the WAL lock, or the path stays unusable
                        raise
                else:
                    # Passing the config makes the engine check it against the stored segments
                    # (a dimension mismatch fails here, not on the first query).
                    shard = edge.EdgeShard.load(str(self._path), self._config())
            except CitewellError:
                raise
            except Exception as exc:
                raise StoreUnavailableError(self._describe(exc, "open")) from exc
            self._shard = shard
            log_event(
                logger, logging.INFO, "vector_store.opened", path=str(self._path), created=fresh
            )
            return shard

    @staticmethod
    def _create_indexes(shard: edge.EdgeShard) -> None:
        schema = edge.PayloadSchemaType
        fields = [(RANK_FIELD, schema.Integer), (MODIFIED_FIELD, schema.Datetime)]
        fields += [(field, schema.Keyword) for field in KEYWORD_FIELDS]
        for field, kind in fields:
            shard.update(edge.UpdateOperation.create_field_index(field, kind))

    def _describe(self, exc: Exception, action: str) -> str:
        text = str(exc)
        if "WouldBlock" in text:
            return (
                f"vector store at {self._path} is open elsewhere (another process, or another "
                f"store object in this one); qdrant-edge allows one opener per path: {text}"
            )
        return f"vector store at {self._path}: cannot {action}: {text}"

    @contextmanager
    def _engine(self, action: str) -> Iterator[edge.EdgeShard]:
        """The open shard; any engine error inside the block becomes StoreUnavailableError."""
        shard = self._open()
        try:
            yield shard
        except CitewellError:
            raise
        except Exception as exc:
            # qdrant-edge raises bare Exception for everything; there is nothing finer to catch.
            raise StoreUnavailableError(self._describe(exc, action)) from exc

    def flush(self) -> None:
        with self._engine("flush") as shard:
            shard.flush()

    def optimize(self) -> bool:
        """Build HNSW and merge segments (blocking; call after bulk writes). True if work was
        done."""
        with self._engine("optimize") as shard:
            return bool(shard.optimize())

    def close(self) -> None:
        with self._lock:
            shard, self._shard = self._shard, None
        if shard is None:
            return
        try:
            shard.close()
        except Exception as exc:
            raise StoreUnavailableError(self._describe(exc, "close")) from exc

    # --- writes --------------------------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], vectors: Matrix) -> None:
        ids = checked_point_ids(chunks, vectors, self._dimension)
        if not ids:
            return
        rows = np.asarray(vectors, dtype=np.float32).tolist()
        with self._engine("upsert") as shard:
            for start in range(0, len(ids), _UPSERT_BATCH):
                points = [
                    edge.Point(ids[i], {VECTOR_NAME: rows[i]}, chunk_payload(chunks[i]))
                    for i in range(start, min(len(ids), start + _UPSERT_BATCH))
                ]
                shard.update(edge.UpdateOperation.upsert_points(points))
        self._planner.invalidate()

    def delete_documents(self, doc_ids: Collection[str]) -> None:
        if not doc_ids:
            return
        with self._engine("delete documents") as shard:
            shard.update(edge.UpdateOperation.delete_points_by_filter(edge_doc_filter(doc_ids)))
        self._planner.invalidate()

    def delete_chunks(self, chunk_ids: Collection[str]) -> None:
        ids = [pid for pid in map(point_id, chunk_ids) if pid is not None]
        if not ids:
            return
        with self._engine("delete chunks") as shard:
            shard.update(edge.UpdateOperation.delete_points(list(ids)))
        self._planner.invalidate()

    def relabel_document(self, doc_id: str, label: AccessLabel, classification_rank: int) -> None:
        with self._engine("relabel") as shard:
            shard.update(
                edge.UpdateOperation.set_payload_by_filter(
                    edge_doc_filter([doc_id]), access_payload(label, classification_rank)
                )
            )
        self._planner.invalidate()

    # --- reads ---------------------------------------------------------------------------------

    def search(
        self, vector: Vector, scope: AccessScope, filters: SearchFilters, limit: int
    ) -> list[tuple[Chunk, float]]:
        if scope.matches_nothing or limit <= 0:
            return []
        query = checked_query(vector, self._dimension)
        flt = edge_filter(scope, filters)
        nearest = edge.Query.Nearest(query.tolist(), using=VECTOR_NAME)
        with self._engine("search") as shard:

            def count_matching(exact: bool = True) -> int:
                return int(shard.count(edge.CountRequest(exact=exact, filter=flt)))

            def run(n: int, exact: bool) -> list[edge.ScoredPoint]:
                params = edge.SearchParams(exact=True) if exact else None
                request = edge.QueryRequest(
                    limit=n, query=nearest, filter=flt, with_payload=True, params=params
                )
                return list(shard.query(request))

            points = self._planner.search_best(
                (scope.cache_key, filters),
                run,
                lambda: count_matching(exact=False),
                count_matching,
                limit,
                logger,
            )
        return [(chunk_from_payload(p.payload), float(p.score)) for p in points]

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        wanted, unique = wanted_point_ids(chunk_ids)
        if not unique:
            return []
        with self._engine("retrieve") as shard:
            records = shard.retrieve(list(unique), True, False)
        return chunks_in_order(wanted, ((r.id, r.payload) for r in records))

    def chunk_ids_by_document(self, doc_ids: Collection[str]) -> dict[str, list[str]]:
        if not doc_ids:
            return {}
        payloads: list[dict[str, Any] | None] = []
        offset: object = None
        with self._engine("scroll") as shard:
            while True:
                records, offset = shard.scroll(
                    edge.ScrollRequest(
                        offset=offset,  # type: ignore[arg-type]
                        limit=_SCROLL_PAGE,
                        filter=edge_doc_filter(doc_ids),
                        with_payload=CHUNK_ID_FIELDS,
                    )
                )
                payloads.extend(r.payload for r in records)
                if offset is None:
                    break
        return group_chunk_ids(payloads)

    def count(self) -> int:
        with self._engine("count") as shard:
            return int(shard.count(edge.CountRequest(exact=True)))
