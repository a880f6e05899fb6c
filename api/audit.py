"""The audit log: one JSON line per search (or answer, or denied request).

A line names who asked (and who they acted for), a hash of the query (the text only when
``audit_log_queries`` is on), the mode, a summary of the filters, the returned chunk ids and the
latency. It never holds chunk text, API keys or tokens.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from citewell.core.errors import AuditLogError
from citewell.core.logging import log_event
from citewell.core.models import SearchFilters, SearchMode

logger = logging.getLogger(__name__)

AuditOutcome = Literal["ok", "denied", "rejected", "unavailable", "error"]


class FilterSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: tuple[str, ...] = ()
    doc_types: tuple[str, ...] = ()
    doc_ids: int = 0  # how many; the ids themselves are in the request the caller made
    modified_from: datetime | None = None
    modified_to: datetime | None = None

    @classmethod
    def of(cls, filters: SearchFilters) -> FilterSummary:
        return cls(
            sources=tuple(sorted(filters.sources or ())),
            doc_types=tuple(sorted(filters.doc_types or ())),
            doc_ids=len(filters.doc_ids or ()),
            modified_from=filters.modified_from,
            modified_to=filters.modified_to,
        )


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    event: str  # "search", "answer", "auth", "act_for"
    endpoint: str | None = None
    outcome: AuditOutcome
    principal: str | None  # the principal the request ran as
    caller: str | None = None  # the authenticated service, when it acted for ``principal``
    auth_method: str | None = None
    query_sha256: str | None = None
    query: str | None = None
    mode: SearchMode | None = None
    k: int | None = None
    rerank_requested: bool | None = None
    reranked: bool | None = None
    filters: FilterSummary | None = None
    chunk_ids: tuple[str, ...] = ()
    index_version: str | None = None
    latency_ms: float | None = None
    reason: str | None = None  # short cause for a non-ok outcome (never a credential)


def query_hash(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8")).hexdigest()


class AuditLog:
    """Appends :class:`AuditRecord` lines to a file. Thread-safe; each line is one ``write`` on
    an ``O_APPEND`` descriptor, so lines from several processes do not interleave."""

    def __init__(self, path: Path, log_queries: bool = False) -> None:
        self.path = path
        self.log_queries = log_queries
        self._lock = threading.Lock()

    def record(self, record: AuditRecord) -> None:
        if record.query is not None and not self.log_queries:
            # Callers build records by hand too; enforce the setting here, in one place.
            record = record.model_copy(update={"query": None})
        line = (record.model_dump_json(exclude_none=True) + "\n").encode("utf-8")
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            except OSError as exc:
                log_event(logger, logging.ERROR, "audit.write_failed", path=str(self.path))
                raise AuditLogError(f"cannot write audit log {self.path}") from exc
