"""The single place where access scopes and search filters become backend filters.

A chunk passes iff ``classification_rank <= scope.max_rank`` AND its ``groups`` share at least
one value with ``scope.groups`` AND every non-empty :class:`SearchFilters` field matches. Search
filters only add ``must`` conditions, so they can narrow what the access part allows, never widen
it. Callers must check :attr:`AccessScope.matches_nothing` first and skip the query: an empty
``MatchAny`` is not a reliable "match nothing" in every backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import qdrant_edge as edge
from pydantic import ValidationError

from citewell.core.errors import InputRejectedError, StoreUnavailableError
from citewell.core.models import AccessLabel, Chunk, SearchFilters
from citewell.retrieval.access import AccessScope, as_utc, filter_values
from citewell.retrieval.protocols import Matrix

if TYPE_CHECKING:
    from qdrant_client import models as qm

# Payload field names (the Chunk fields, stored as ``chunk.model_dump(mode="json")``).
RANK_FIELD = "classification_rank"
GROUPS_FIELD = "groups"
DOC_ID_FIELD = "doc_id"
SOURCE_FIELD = "source"
DOC_TYPE_FIELD = "doc_type"
MODIFIED_FIELD = "modified_at"

KEYWORD_FIELDS: tuple[str, ...] = (GROUPS_FIELD, DOC_ID_FIELD, SOURCE_FIELD, DOC_TYPE_FIELD)


def _modified_range(filters: SearchFilters) -> tuple[datetime | None, datetime | None] | None:
    """The modification-time bounds of ``filters`` in UTC (from, to), or None when it sets
    neither. A range never matches a null/missing value, so undated chunks drop out."""
    if filters.modified_from is None and filters.modified_to is None:
        return None
    low, high = filters.modified_from, filters.modified_to
    return (as_utc(low) if low else None, as_utc(high) if high else None)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _sorted(values: Iterable[str]) -> list[str]:
    return sorted(values)  # deterministic filters make results and logs reproducible


def _narrowing(filters: SearchFilters) -> list[tuple[str, list[str]]]:
    """(field, values) pairs for the match-any parts of ``filters``; empty sets mean "no filter",
    the same reading as :attr:`SearchFilters.is_empty`."""
    pairs: list[tuple[str, list[str]]] = []
    for field, values in (
        (SOURCE_FIELD, filter_values(filters.sources)),
        (DOC_TYPE_FIELD, filter_values(filters.doc_types)),
        (DOC_ID_FIELD, filter_values(filters.doc_ids)),
    ):
        if values is not None:
            pairs.append((field, _sorted(values)))
    return pairs


def edge_filter(scope: AccessScope, filters: SearchFilters) -> edge.Filter:
    """The qdrant-edge filter for ``scope`` narrowed by ``filters``."""
    must: list[edge.ConditionType] = [
        edge.FieldCondition(RANK_FIELD, range=edge.RangeFloat(lte=float(scope.max_rank))),
        edge.FieldCondition(GROUPS_FIELD, match=edge.MatchAny(_sorted(scope.groups))),
    ]
    for field, values in _narrowing(filters):
        must.append(edge.FieldCondition(field, match=edge.MatchAny(values)))
    modified = _modified_range(filters)
    if modified is not None:
        low, high = modified
        range_ = edge.RangeDateTime(gte=_iso(low), lte=_iso(high))
        must.append(edge.FieldCondition(MODIFIED_FIELD, range=range_))
    return edge.Filter(must=must)


def edge_doc_filter(doc_ids: Iterable[str]) -> edge.Filter:
    """Every chunk of these documents (no access part: used for writes and bookkeeping)."""
    return edge.Filter(
        must=[edge.FieldCondition(DOC_ID_FIELD, match=edge.MatchAny(_sorted(doc_ids)))]
    )


def client_filter(scope: AccessScope, filters: SearchFilters) -> qm.Filter:
    """The qdrant-client filter for ``scope`` narrowed by ``filters``; same logic as
    :func:`edge_filter`."""
    from qdrant_client import models as qm  # the client is heavy to import; embedded use skips it

    must: list[qm.Condition] = [
        qm.FieldCondition(key=RANK_FIELD, range=qm.Range(lte=scope.max_rank)),
        qm.FieldCondition(key=GROUPS_FIELD, match=qm.MatchAny(any=_sorted(scope.groups))),
    ]
    for field, values in _narrowing(filters):
        must.append(qm.FieldCondition(key=field, match=qm.MatchAny(any=values)))
    modified = _modified_range(filters)
    if modified is not None:
        low, high = modified
        must.append(
            qm.FieldCondition(key=MODIFIED_FIELD, range=qm.DatetimeRange(gte=low, lte=high))
        )
    return qm.Filter(must=must)


def client_doc_filter(doc_ids: Iterable[str]) -> qm.Filter:
    """Every chunk of these documents (no access part: used for writes and bookkeeping)."""
    from qdrant_client import models as qm

    return qm.Filter(
        must=[qm.FieldCondition(key=DOC_ID_FIELD, match=qm.MatchAny(any=_sorted(doc_ids)))]
    )


# --- payload schema ------------------------------------------------------------------------------
# Kept next to the filters because both must agree on field names and value encodings.


def point_id(chunk_id: str) -> str | None:
    """The canonical point id for a chunk id (a UUID), or None if it is not a UUID.

    Both engines accept only integers and UUIDs as point ids and return UUIDs in canonical
    lower-case hyphenated form, so ids are canonicalised before every call.
    """
    try:
        return str(uuid.UUID(chunk_id))
    except (ValueError, AttributeError, TypeError):
        return None


def chunk_payload(chunk: Chunk) -> dict[str, object]:
    """The stored payload: every Chunk field in JSON form (datetimes as ISO 8601 strings).
    An absent document date is left out rather than stored as null: it loads as None either way,
    and a null field changed qdrant-edge's filtered HNSW results on restrictive filters from the
    exact fallback to full but approximate lists (recall 0.24-0.52 in test_edge's scenario)."""
    payload = chunk.model_dump(mode="json")
    if payload.get("document_date") is None:
        payload.pop("document_date", None)
    return payload


def chunk_from_payload(payload: Mapping[str, object] | None) -> Chunk:
    """Rebuild a Chunk from a stored payload; a malformed payload is a store fault."""
    if payload is None:
        raise StoreUnavailableError("vector store returned a point without its payload")
    try:
        return Chunk.model_validate(dict(payload))
    except ValidationError as exc:
        raise StoreUnavailableError(
            "vector store holds a payload that is not a valid chunk (index written by an "
            "incompatible version?)"
        ) from exc


def access_payload(label: AccessLabel, classification_rank: int) -> dict[str, object]:
    """The payload fields that :meth:`VectorStore.relabel_document` rewrites."""
    return {
        "classification": label.classification,
        RANK_FIELD: classification_rank,
        GROUPS_FIELD: _sorted(label.groups),
    }


def checked_point_ids(chunks: Sequence[Chunk], vectors: Matrix, dimension: int) -> list[str]:
    """Point ids for ``chunks`` after checking they line up with ``vectors``."""
    shape = np.shape(vectors)
    if len(chunks) == 0 and (len(shape) == 0 or shape[0] == 0):
        return []
    if len(shape) != 2 or shape[0] != len(chunks) or shape[1] != dimension:
        raise InputRejectedError(
            f"expected vectors of shape ({len(chunks)}, {dimension}), got {tuple(shape)}"
        )
    ids: list[str] = []
    for chunk in chunks:
        pid = point_id(chunk.chunk_id)
        if pid is None:
            raise InputRejectedError(f"chunk id {chunk.chunk_id!r} is not a UUID")
        ids.append(pid)
    return ids
