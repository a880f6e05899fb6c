"""Domain models that cross package boundaries. All are frozen pydantic models."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citewell.core.errors import UnknownClassificationError

DEFAULT_LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClassificationScheme(Frozen):
    """Ordered classification levels, least to most sensitive."""

    levels: tuple[str, ...] = DEFAULT_LEVELS

    @field_validator("levels")
    @classmethod
    def _non_empty_unique(cls, levels: tuple[str, ...]) -> tuple[str, ...]:
        normalised = tuple(level.strip().lower() for level in levels)
        if not normalised or len(set(normalised)) != len(normalised) or "" in normalised:
            raise ValueError("classification levels must be non-empty and unique")
        return normalised

    def rank(self, level: str) -> int:
        """The level's position (0 = least sensitive). Unknown names raise."""
        try:
            return self.levels.index(level.strip().lower())
        except ValueError as exc:
            raise UnknownClassificationError(
                f"unknown classification level {level!r}; known: {', '.join(self.levels)}"
            ) from exc

    @property
    def most_restrictive(self) -> str:
        return self.levels[-1]

    def max(self, *levels: str) -> str:
        return max(levels, key=self.rank)


class AccessLabel(Frozen):
    """Who may see a document: a classification level and the groups that hold it."""

    classification: str
    groups: frozenset[str] = frozenset()


class Principal(Frozen):
    """A caller: sees chunks at or below ``clearance`` that share a group with ``groups``."""

    name: str
    clearance: str
    groups: frozenset[str] = frozenset()


class Chunk(Frozen):
    """One retrievable piece of a document, with everything a citation needs."""

    chunk_id: str  # UUID string, deterministic from (doc_id, chunk_index, content hash)
    doc_id: str
    chunk_index: int
    text: str
    title: str
    section: str | None = None
    # Contextual header (title, file name, section) prepended to ``text`` for embedding and BM25
    # only; ``text`` and the character span stay exactly the document's, for citations.
    context: str = ""
    source: str  # name of the source (e.g. the folder's configured name)
    source_uri: str
    doc_type: str  # format, e.g. "pdf", "docx", "md"
    page: int | None = None
    char_start: int
    char_end: int
    classification: str
    classification_rank: int
    groups: tuple[str, ...]
    modified_at: datetime | None = None  # the file's mtime: filters and refresh detection
    # The date the document states about itself (PDF Info, Office core properties, e-mail Date
    # header); what "the latest version" means. None when it states none (or the index predates
    # the field: dates arrive when a document is re-ingested).
    document_date: datetime | None = None


class SearchMode(StrEnum):
    DENSE = "dense"
    BM25 = "bm25"
    HYBRID = "hybrid"


class FusionMethod(StrEnum):
    RRF = "rrf"
    WEIGHTED = "weighted"


REVERSED_RANGE = "modified_from is after modified_to"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # naive is UTC


class SearchFilters(Frozen):
    """Optional filters that narrow (never widen) what the access filter allows."""

    sources: frozenset[str] | None = None
    doc_types: frozenset[str] | None = None
    doc_ids: frozenset[str] | None = None
    modified_from: datetime | None = None
    modified_to: datetime | None = None

    @field_validator("modified_from", "modified_to")
    @classmethod
    def _in_utc(cls, moment: datetime | None) -> datetime | None:
        """In UTC, as the stores compare them (naive is UTC); a date with no UTC equivalent
        (year 1 at +14:00) is the caller's error here, not a store failure later."""
        if moment is None or moment.tzinfo is None:
            return moment
        try:
            return moment.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("date is out of range once converted to UTC") from exc

    @model_validator(mode="after")
    def _range_in_order(self) -> SearchFilters:
        """A reversed range is the caller's mistake, not a search that matches nothing."""
        low, high = self.modified_from, self.modified_to
        if low is not None and high is not None and _utc(low) > _utc(high):
            raise ValueError(REVERSED_RANGE)
        return self

    @property
    def is_empty(self) -> bool:
        return not (
            self.sources or self.doc_types or self.doc_ids or self.modified_from or self.modified_to
        )


class SearchRequest(Frozen):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=100)
    mode: SearchMode = SearchMode.HYBRID
    rerank: bool = True
    filters: SearchFilters = SearchFilters()
    # Re-order the retrieved candidates towards newer documents (by ``Chunk.document_date``);
    # never adds a candidate. See retrieval/fusion.py.
    prefer_recent: bool = False
    # Also say, per result document, which terms of this text its visible chunks hold
    # (``SearchResult.document_terms``): the agent's check that a passage's document names
    # what the question names (a filing names its company on the cover, not in every chunk).
    document_terms_of: str | None = Field(default=None, max_length=2000)


class ScoreBreakdown(Frozen):
    dense_rank: int | None = None
    dense_score: float | None = None
    bm25_rank: int | None = None
    bm25_score: float | None = None
    fused: float | None = None
    rerank: float | None = None


class ScoredChunk(Frozen):
    chunk: Chunk
    score: float
    scores: ScoreBreakdown


class SearchResult(Frozen):
    results: tuple[ScoredChunk, ...]
    mode: SearchMode
    reranked: bool
    rerank_note: str | None = None  # why reranking was off, when it was requested
    index_version: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    # doc_id -> the terms of the request's ``document_terms_of`` (as the lexical index
    # tokenizes them) that the document's visible chunks hold; result documents only.
    document_terms: dict[str, frozenset[str]] = Field(default_factory=dict)


class DocumentStatus(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    RELABELED = "relabeled"
    FAILED = "failed"


class DocumentFailure(Frozen):
    source_uri: str
    reason: str
    # The document's path relative to its source, where it has one: reports match a failure to
    # a document by it (a URI suffix also matches a namesake in a subfolder). None: a folder,
    # a file not taken as a document (symlink, odd name), or a report from before the field.
    relative_path: str | None = None


class IngestStages(Frozen):
    """Where an ingestion run's time went. ``parse_s`` is worker time (parsing overlaps the
    rest); ``parse_wait_s`` is how long the run waited for a parsed document; ``chunk_s``,
    ``embed_s`` and ``write_s`` (both indexes and the manifest) are the run's own time."""

    parse_s: float = 0.0
    parse_wait_s: float = 0.0
    chunk_s: float = 0.0
    embed_s: float = 0.0
    write_s: float = 0.0
    parse_workers: int = 0
    parse_workers_replaced: int = 0  # killed at a limit or lost, and started again
    parse_peak_rss_bytes: int = 0  # the largest resident size a parse worker reached


class IngestReport(Frozen):
    index: str
    index_version: str | None
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    relabeled: tuple[str, ...] = ()
    failed: tuple[DocumentFailure, ...] = ()
    unlabelled: tuple[str, ...] = ()  # ingested fail-closed: visible to nobody
    # Indexed before, but their labels cannot be determined now: no longer served (each is also
    # in ``failed`` with the reason) until a refresh finds their labels valid again.
    withdrawn: tuple[str, ...] = ()
    # Documents whose sensitivity label was refused (unmapped, ambiguous, unknown tenant), with
    # the reason; they are also unlabelled (visible to nobody).
    label_refusals: tuple[DocumentFailure, ...] = ()
    chunks_written: int = 0
    embeddings_computed: int = 0
    seconds: float = 0.0
    stages: IngestStages = IngestStages()

    # The per-document outcomes above, each a tuple of documents.
    OUTCOMES: ClassVar[tuple[str, ...]] = (
        "added",
        "updated",
        "unchanged",
        "deleted",
        "relabeled",
        "failed",
        "unlabelled",
        "withdrawn",
        "label_refusals",
    )

    def summary(self) -> dict[str, Any]:
        """The report without its document lists: how many documents each outcome holds, the
        counts, the time and the stages (what the run's log line says)."""
        return {
            "index": self.index,
            "version": self.index_version,
            **{outcome: len(getattr(self, outcome)) for outcome in self.OUTCOMES},
            "chunks_written": self.chunks_written,
            "embeddings_computed": self.embeddings_computed,
            "seconds": self.seconds,
            **self.stages.model_dump(),
        }


def ordered_unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
