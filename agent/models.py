"""Frozen models the agent returns and takes. They cross into api/, cli/ and evaluation/."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import Field, computed_field

from citewell.core.models import Chunk, Frozen, SearchMode
from citewell.core.settings import Settings

# The fields a reference copies from the chunk it points at.
_CHUNK_FIELDS = (
    "chunk_id",
    "doc_id",
    "title",
    "source_uri",
    "page",
    "char_start",
    "char_end",
    "document_date",
    "classification_rank",
    "groups",
)


class ChunkReference(Frozen):
    """What source or citation ``[n]`` points at: a chunk and a span of its document."""

    n: int = Field(ge=1)
    chunk_id: str
    doc_id: str
    title: str
    source_uri: str
    page: int | None = None
    char_start: int  # document offsets
    char_end: int
    document_date: datetime | None = None  # the date the document states (Chunk.document_date)
    # The chunk's access label, so entry points check every reference against the caller's
    # scope before it leaves (defence in depth). Never serialized: which other groups share a
    # source is not the caller's to learn.
    classification_rank: int = Field(exclude=True)
    groups: tuple[str, ...] = Field(exclude=True)

    @classmethod
    def from_chunk(cls, n: int, chunk: Chunk, **fields: Any) -> Self:
        """Reference ``[n]`` to ``chunk``; ``fields`` set the subclass's own fields or override
        the chunk's (a citation's span is the quote's, inside the chunk)."""
        return cls.model_validate(
            {name: getattr(chunk, name) for name in _CHUNK_FIELDS} | fields | {"n": n}
        )


class Source(ChunkReference):
    """A retrieved chunk given to the answer backend as source ``[n]``."""

    score: float


class Citation(ChunkReference):
    """A verified citation: marker ``[n]`` and the text of source n that supports it; its
    ``char_start``/``char_end`` are the document offsets of ``quote``."""

    quote: str


class TokenUsage(Frozen):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class AnswerTimings(Frozen):
    retrieval_ms: float = 0.0
    scoring_ms: float = 0.0
    generation_ms: float = 0.0
    verification_ms: float = 0.0
    total_ms: float = 0.0


class Answer(Frozen):
    question: str
    answer: str  # empty when refused or when generation is switched off
    citations: tuple[Citation, ...] = ()
    sources: tuple[Source, ...] = ()  # everything given to the backend, in marker order
    refused: bool = False
    generated: bool = True  # False: kill switch or time budget → sources only
    unsupported_sentences: tuple[str, ...] = ()
    # Markers removed: to no given source, or (LLM) to a source that does not support the
    # sentence while another cited one does.
    removed_citations: int = 0
    support_score: float | None = None  # best question/sentence embedding similarity
    # Calibrated probability that the best candidate sentence answers the question
    # (agent/answerability.py); None when nothing was retrieved.
    confidence: float | None = None
    refusal_reason: str | None = None  # why the agent refused ("no passage answers ...")
    removed_claims: int = (
        0  # LLM sentences dropped because their cited source does not support them
    )
    retrievals: int = 0
    backend: str
    flagged_chunks: tuple[str, ...] = ()  # chunk ids whose text looks like instructions
    notes: tuple[str, ...] = ()
    index_version: str | None = None
    timings: AnswerTimings = AnswerTimings()
    usage: TokenUsage | None = None  # only when an LLM was called


class AgentConfig(Frozen):
    """The agent's knobs, derived from Settings by entry points."""

    top_k: int = Field(default=5, ge=1, le=20)
    mode: SearchMode = SearchMode.HYBRID
    rerank: bool = True
    # Overrides the calibrated answerability threshold (a probability, agent/answerability.py);
    # None: the index's calibration, else the shipped one.
    refusal_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    max_retrievals: int = Field(default=2, ge=1, le=5)
    time_budget_s: float = Field(default=30.0, gt=0)
    generation_enabled: bool = True
    max_answer_sentences: int = Field(default=3, ge=1, le=10)
    max_query_chars: int = Field(default=2000, ge=1)
    # Ask retrieval to prefer recent documents when the question asks for the latest report or
    # version (agent/recency.py).
    detect_recency: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> AgentConfig:
        values: dict[str, object] = {
            "mode": settings.default_mode,
            "max_retrievals": settings.answer_max_retrievals,
            "time_budget_s": settings.answer_time_budget_s,
            "generation_enabled": settings.generation_enabled,
            "max_query_chars": settings.max_query_chars,
        }
        if settings.answer_refusal_threshold is not None:
            values["refusal_threshold"] = settings.answer_refusal_threshold
        values.update(overrides)
        return cls.model_validate(values)
