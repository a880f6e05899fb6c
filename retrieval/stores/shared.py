"""Engine-neutral steps that both vector stores take the same way: query vector checks, the exact
fallback for short HNSW answers, id-ordered lookups and grouping chunk ids by document.

Each store keeps only the calls into its own engine; see ``retrieval/stores/edge.py`` for why the
exact fallback exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from core.errors import InputRejectedError
from core.logging import log_event
from core.models import Chunk
from retrieval.protocols import Vector
from retrieval.stores.filters import DOC_ID_FIELD, chunk_from_payload, point_id

Point = TypeVar("Point")

# The payload fields :func:`group_chunk_ids` reads; ask the engine for these only.
CHUNK_ID_FIELDS: list[str] = [DOC_ID_FIELD, "chunk_id", "chunk_index"]


def checked_query(vector: Vector, dimension: int) -> npt.NDArray[np.float32]:
    """``vector`` as a flat float32 array, after checking its length against the store's."""
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != dimension:
        raise InputRejectedError(
            f"query vector has dimension {query.shape[0]}, store expects {dimension}"
        )
    return query


def search_with_exact_fallback(
    query: Callable[[bool], list[Point]],
    count_matching: Callable[[], int],
    limit: int,
    logger: logging.Logger,
) -> list[Point]:
    """``query(exact=False)``; if that answers short and an exact count finds more matching
    points than were returned, ``query(exact=True)`` instead."""
    points = query(False)
    if len(points) < limit:
        matching = count_matching()
        if matching > len(points):
            log_event(
                logger,
                logging.INFO,
                "vector_store.exact_fallback",
                returned=len(points),
                matching=matching,
                limit=limit,
            )
            points = query(True)
    return points


def wanted_point_ids(chunk_ids: Sequence[str]) -> tuple[list[str | None], list[str]]:
    """(point id per chunk id, None where it is not a UUID; the distinct valid ids to fetch)."""
    wanted = [point_id(cid) for cid in chunk_ids]
    unique = list(dict.fromkeys(pid for pid in wanted if pid is not None))
    return wanted, unique


def chunks_in_order(
    wanted: Sequence[str | None], records: Iterable[tuple[object, Mapping[str, object] | None]]
) -> list[Chunk]:
    """Chunks of the fetched ``(point id, payload)`` records, in ``wanted`` order; ids that were
    not found are skipped."""
    found = {str(pid): chunk_from_payload(payload) for pid, payload in records}
    return [found[pid] for pid in wanted if pid is not None and pid in found]


def group_chunk_ids(payloads: Iterable[Mapping[str, Any] | None]) -> dict[str, list[str]]:
    """Chunk ids by document, each document's in chunk order, from payloads holding
    :data:`CHUNK_ID_FIELDS`."""
    pairs: list[tuple[str, int, str]] = []
    for payload in payloads:
        fields = payload or {}
        doc_id, index = str(fields[DOC_ID_FIELD]), int(fields["chunk_index"])
        pairs.append((doc_id, index, str(fields["chunk_id"])))
    result: dict[str, list[str]] = {}
    for doc_id, _, chunk_id in sorted(pairs):
        result.setdefault(doc_id, []).append(chunk_id)
    return result
