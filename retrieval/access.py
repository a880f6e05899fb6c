"""The one module that turns a principal into an access filter.

A chunk is visible iff its classification rank is at or below the principal's clearance rank
AND it shares at least one group with the principal (the principal's own groups plus the
configured default groups such as ``everyone``). A chunk with no groups is visible to nobody;
a principal with no groups sees nothing; an unknown group simply matches nothing.

Every leg applies :class:`AccessScope` before its top-k, and :func:`enforce` checks every result
again before it leaves retrieval (defence in depth).

Search filters (:class:`~core.models.SearchFilters`) only narrow that set; what each of their
fields means is defined here too (:func:`filter_values`, :func:`filter_time_range`,
:func:`filters_allow`) and every backend's translation follows it (the Qdrant filters in
``retrieval/stores/filters.py``, the BM25 masks in ``retrieval/lexical/filtering.py``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from citewell.core.logging import log_event
from citewell.core.models import Chunk, ClassificationScheme, Frozen, Principal, SearchFilters

logger = logging.getLogger(__name__)


class AccessScope(Frozen):
    """What a principal may see, resolved against the classification scheme."""

    principal: str
    max_rank: int
    groups: frozenset[str]

    @property
    def matches_nothing(self) -> bool:
        return self.max_rank < 0 or not self.groups

    @property
    def cache_key(self) -> str:
        """A stable key for caches: equal only for scopes that see exactly the same chunks."""
        material = f"{self.max_rank}|" + "\x1f".join(sorted(self.groups))
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def allows(self, classification_rank: int, groups: Iterable[str]) -> bool:
        if self.matches_nothing or classification_rank > self.max_rank:
            return False
        return not self.groups.isdisjoint(groups)

    def allows_chunk(self, chunk: Chunk) -> bool:
        return self.allows(chunk.classification_rank, chunk.groups)


def scope_for(
    principal: Principal,
    scheme: ClassificationScheme,
    default_groups: Sequence[str] = ("everyone",),
) -> AccessScope:
    """Resolve a principal. An unknown clearance raises ``UnknownClassificationError``."""
    groups = frozenset(g for g in (*principal.groups, *default_groups) if g)
    return AccessScope(
        principal=principal.name, max_rank=scheme.rank(principal.clearance), groups=groups
    )


def maintenance_principal(
    name: str, scheme: ClassificationScheme, groups: Iterable[str]
) -> Principal:
    """The principal of an internal job (rebuild smoke test, quality gates, evaluation) that must
    see every labelled document: the most restrictive clearance and the index's own groups.
    Documents with no groups stay invisible even to it; there is no "see everything" scope."""
    return Principal(name=name, clearance=scheme.most_restrictive, groups=frozenset(groups))


def filter_values(values: frozenset[str] | None) -> frozenset[str] | None:
    """The values a match-any filter field keeps, or None when it keeps everything: an absent
    and an empty set both mean "no filter" (the reading of ``SearchFilters.is_empty``)."""
    return values if values else None


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are UTC everywhere in Citewell (as Qdrant reads naive payload values)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def filter_time_range(filters: SearchFilters) -> tuple[datetime | None, datetime | None]:
    """Inclusive UTC bounds on ``modified_at`` (None: unbounded). While either bound is set, a
    chunk without a modification time matches nothing."""
    low = as_utc(filters.modified_from) if filters.modified_from is not None else None
    high = as_utc(filters.modified_to) if filters.modified_to is not None else None
    return low, high


def filters_allow(filters: SearchFilters, chunk: Chunk) -> bool:
    """Whether ``chunk`` passes ``filters`` (the reference every backend's filter must agree
    with; ``tests/retrieval/stores/test_congruence.py`` and the BM25 tests compare them)."""
    for allowed, value in (
        (filter_values(filters.sources), chunk.source),
        (filter_values(filters.doc_types), chunk.doc_type),
        (filter_values(filters.doc_ids), chunk.doc_id),
    ):
        if allowed is not None and value not in allowed:
            return False
    low, high = filter_time_range(filters)
    if low is None and high is None:
        return True
    if chunk.modified_at is None:
        return False
    moment = as_utc(chunk.modified_at)
    return (low is None or moment >= low) and (high is None or moment <= high)


T = TypeVar("T")


def enforce(scope: AccessScope, items: Sequence[T]) -> list[T]:
    """Drop (and log as a security event) any item whose chunk the scope may not see.

    ``items`` are ``Chunk`` objects or objects with a ``chunk`` attribute.
    """
    kept: list[T] = []
    for item in items:
        chunk = item if isinstance(item, Chunk) else getattr(item, "chunk", None)
        if isinstance(chunk, Chunk) and scope.allows_chunk(chunk):
            kept.append(item)
            continue
        log_event(
            logger,
            logging.ERROR,
            "security.access_violation_dropped",
            principal=scope.principal,
            chunk_id=getattr(chunk, "chunk_id", None),
        )
    return kept
