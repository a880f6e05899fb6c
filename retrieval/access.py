"""The one module that turns a principal into an access filter.

A chunk is visible iff its classification rank is at or below the principal's clearance rank
AND it shares at least one group with the principal (the principal's own groups plus the
configured default groups such as ``everyone``). A chunk with no groups is visible to nobody;
a principal with no groups sees nothing; an unknown group simply matches nothing.

Every leg applies :class:`AccessScope` before its top-k, and :func:`enforce` checks every result
again before it leaves retrieval (defence in depth).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import TypeVar

from citewell.core.logging import log_event
from citewell.core.models import Chunk, ClassificationScheme, Frozen, Principal

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
