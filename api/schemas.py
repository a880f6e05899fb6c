"""HTTP request and response bodies. Separate from the domain models in ``core.models`` so the
wire format can evolve without touching retrieval, and so request bodies can refuse any field
(``groups``, ``clearance``, ``principal``) a caller might use to claim more than its credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from citewell.core.models import (
    REVERSED_RANGE,
    ScoreBreakdown,
    ScoredChunk,
    SearchFilters,
    SearchMode,
    SearchResult,
)
from citewell.retrieval.access import as_utc


def _unicode(value: str) -> str:
    """JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 consumer (the stores, the
    tokenizers, the audit log) can encode: refused here as the caller's error (422), where it
    was an outage (503) or a crash (500) further in."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (it holds a lone surrogate)") from exc
    return value


# Caller text that is not otherwise constrained: pydantic rejects a lone surrogate only in
# strings with a length or pattern constraint.
UnicodeText = Annotated[str, AfterValidator(_unicode)]


class _Body(BaseModel):
    # extra="forbid": a body that tries to assert groups or clearance is rejected with 422.
    model_config = ConfigDict(frozen=True, extra="forbid")


class SearchFiltersBody(_Body):
    """Filters that narrow what the caller's access already allows; they never widen it."""

    sources: list[UnicodeText] | None = Field(default=None, description="source names to keep")
    doc_types: list[UnicodeText] | None = Field(default=None, description="formats, e.g. pdf, docx")
    doc_ids: list[UnicodeText] | None = Field(
        default=None, description="documents to search within"
    )
    modified_from: datetime | None = Field(default=None, description="modified at or after")
    modified_to: datetime | None = Field(default=None, description="modified at or before")

    @field_validator("modified_from", "modified_to")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """The stores compare dates in UTC (a date without an offset is UTC): convert here, so
        that a date with no UTC equivalent (year 1 at +14:00) is the caller's 422, not a store
        failure (503)."""
        if value is None:
            return None
        try:
            return as_utc(value)
        except OverflowError as exc:
            raise ValueError("date is out of range once converted to UTC") from exc

    @model_validator(mode="after")
    def _range_in_order(self) -> SearchFiltersBody:
        # Both are UTC-aware here; a reversed range matched nothing and answered 200.
        low, high = self.modified_from, self.modified_to
        if low is not None and high is not None and low > high:
            raise ValueError(REVERSED_RANGE)
        return self

    def to_filters(self) -> SearchFilters:
        return SearchFilters(
            sources=frozenset(self.sources) if self.sources else None,
            doc_types=frozenset(self.doc_types) if self.doc_types else None,
            doc_ids=frozenset(self.doc_ids) if self.doc_ids else None,
            modified_from=self.modified_from,
            modified_to=self.modified_to,
        )


class SearchRequestBody(_Body):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "query": "What was the quarterly revenue of the services segment?",
                    "k": 5,
                    "mode": "hybrid",
                    "rerank": True,
                    "filters": {"doc_types": ["pdf"], "modified_from": "2023-01-01T00:00:00Z"},
                }
            ]
        },
    )

    query: str = Field(min_length=1, description="the question or keywords")
    k: int = Field(default=10, ge=1, le=100, description="number of results")
    mode: SearchMode | None = Field(default=None, description="dense, bm25 or hybrid")
    rerank: bool = Field(default=True, description="rerank the fused candidates when possible")
    filters: SearchFiltersBody | None = None
    prefer_recent: bool = Field(
        default=False,
        description="prefer newer documents (by the date each states) among the results found",
    )


class ScoreBreakdownBody(ScoreBreakdown):
    """The score breakdown as the API returns it: the fields of the core model, under a type
    (and an OpenAPI schema) of the API's own."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class SearchHitBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    chunk_id: str
    doc_id: str
    title: str
    section: str | None
    text: str
    source: str
    source_uri: str
    doc_type: str
    page: int | None
    char_start: int
    char_end: int
    classification: str
    modified_at: datetime | None
    document_date: datetime | None = Field(
        default=None, description="the date the document states about itself, if any"
    )
    score: float = Field(
        description="the final ranking score: falls with rank (reranked hits score above the rest)"
    )
    scores: ScoreBreakdownBody

    @classmethod
    def from_scored(cls, hit: ScoredChunk) -> SearchHitBody:
        chunk = hit.chunk
        return cls(
            chunk_id=chunk.chunk_id,
            doc_id=chunk.doc_id,
            title=chunk.title,
            section=chunk.section,
            text=chunk.text,
            source=chunk.source,
            source_uri=chunk.source_uri,
            doc_type=chunk.doc_type,
            page=chunk.page,
            char_start=chunk.char_start,
            char_end=chunk.char_end,
            classification=chunk.classification,
            modified_at=chunk.modified_at,
            document_date=chunk.document_date,
            score=hit.score,
            scores=ScoreBreakdownBody.model_validate(hit.scores.model_dump()),
        )


class SearchResponseBody(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {
                            "chunk_id": "5f1c2a9e-3b7d-5c1e-9a4f-0d2b6e8c7a11",
                            "doc_id": "2023-q3-aapl.pdf",
                            "title": "Apple Inc. Form 10-Q Q3 2023",
                            "section": "Services",
                            "text": "Services net sales increased during the third quarter...",
                            "source": "sec-filings",
                            "source_uri": "file:///srv/docs/2023-q3-aapl.pdf",
                            "doc_type": "pdf",
                            "page": 17,
                            "char_start": 40211,
                            "char_end": 41190,
                            "classification": "internal",
                            "modified_at": "2023-08-04T00:00:00Z",
                            "document_date": "2023-08-04T10:02:23Z",
                            "score": 0.8731,
                            "scores": {
                                "dense_rank": 2,
                                "dense_score": 0.61,
                                "bm25_rank": 1,
                                "bm25_score": 14.2,
                                "fused": 0.0325,
                                "rerank": 0.8731,
                            },
                        }
                    ],
                    "mode": "hybrid",
                    "reranked": True,
                    "rerank_note": None,
                    "index_version": "v20231101T120000",
                    "principal": "alice",
                    "took_ms": 42.5,
                }
            ]
        },
    )

    results: list[SearchHitBody]
    mode: SearchMode
    reranked: bool
    rerank_note: str | None = Field(
        default=None, description="why reranking was off although it was requested"
    )
    index_version: str | None
    principal: str = Field(description="the principal the search ran as")
    took_ms: float | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="server time for the search; only for operator principals (absent "
        "otherwise: timings depend on the whole index, see SECURITY.md)",
    )

    @classmethod
    def from_result(
        cls, result: SearchResult, principal: str, took_ms: float | None
    ) -> SearchResponseBody:
        return cls(
            results=[SearchHitBody.from_scored(hit) for hit in result.results],
            mode=result.mode,
            reranked=result.reranked,
            rerank_note=result.rerank_note,
            index_version=result.index_version,
            principal=principal,
            took_ms=round(took_ms, 3) if took_ms is not None else None,
        )


class HealthBody(BaseModel):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"status": "ok"}]})

    status: str = "ok"


class ReadyBody(BaseModel):
    """Readiness. Deliberately carries no counts or names of documents: the probe is public."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "index": "default",
                    "version": "v20231101T120000",
                    "reranker": None,
                    "loaded_at": "2023-11-01T12:00:03Z",
                }
            ]
        },
    )

    ready: bool
    reason: str | None = Field(
        default=None,
        description="why not ready: no_published_version, integrity_failed, store_unavailable, "
        "model_unavailable or not_loaded",
    )
    index: str | None = None
    version: str | None = None
    reranker: str | None = None
    loaded_at: datetime | None = None


class ErrorBody(BaseModel):
    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"detail": "authentication required"}]}
    )

    detail: str


# What each error status means on the routes that declare it (OpenAPI ``responses``).
_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed credential headers",
    401: "No or invalid credentials",
    403: "Credentials do not permit this request",
    413: "Request body too large",
    503: "The index is unavailable; nothing was returned",
}


def error_responses(
    *statuses: int, route_specific: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, object]]:
    """The OpenAPI ``responses`` of a route that can end in ``statuses`` (or in those
    ``route_specific`` describes), each with an ErrorBody, in status order."""
    descriptions = {status: _ERROR_DESCRIPTIONS[status] for status in statuses}
    descriptions.update(route_specific or {})
    return {
        status: {"model": ErrorBody, "description": descriptions[status]}
        for status in sorted(descriptions)
    }
