"""``POST /v1/answer``: an answer from the documents the caller may see, with verified citations.

Same authentication, audit and error mapping as ``/v1/search``; the agent retrieves with the
caller's principal only. With generation switched off (``generation_enabled=false``) the answer
is empty and the sources are returned.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from citewell.agent.agent import Agent
from citewell.agent.factory import build_agent
from citewell.agent.models import Answer, AnswerTimings, Citation, Source, TokenUsage
from citewell.api.audit import AuditOutcome, AuditRecord, FilterSummary, query_hash
from citewell.api.deps import AuditLogDep, AuthContextDep, MetricsDep, SettingsDep
from citewell.api.metrics import AnswerMetrics
from citewell.api.schemas import ErrorBody, SearchFiltersBody
from citewell.core.errors import CitewellError, InputRejectedError, StoreUnavailableError
from citewell.core.models import SearchFilters
from citewell.retrieval.protocols import Embedder

router = APIRouter(prefix="/v1", tags=["answer"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No or invalid credentials"},
    403: {"model": ErrorBody, "description": "Credentials do not permit this request"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    503: {"model": ErrorBody, "description": "The index is unavailable; nothing was returned"},
}


class AnswerRequestBody(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",  # no groups/clearance/principal in the body
        json_schema_extra={
            "examples": [{"question": "What was Apple's total net sales in Q3 2022?"}]
        },
    )

    question: str = Field(min_length=1, description="a natural-language question")
    filters: SearchFiltersBody | None = None


class AnswerResponseBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    answer: str = Field(description="empty when refused or when generation is switched off")
    citations: list[Citation]
    sources: list[Source] = Field(description="every chunk given to the answerer, as [n]")
    refused: bool = Field(description="the knowledge base does not contain the answer")
    generated: bool = Field(description="false: sources only (kill switch, budget, LLM error)")
    unsupported_sentences: list[str]
    removed_citations: int
    support_score: float | None
    backend: str
    retrievals: int
    flagged_sources: list[int] = Field(description="[n] of sources that look like instructions")
    notes: list[str]
    principal: str
    index_version: str | None
    timings: AnswerTimings
    usage: TokenUsage | None

    @classmethod
    def from_answer(cls, answer: Answer, principal: str) -> AnswerResponseBody:
        flagged = set(answer.flagged_chunks)
        return cls(
            answer=answer.answer,
            citations=list(answer.citations),
            sources=list(answer.sources),
            refused=answer.refused,
            generated=answer.generated,
            unsupported_sentences=list(answer.unsupported_sentences),
            removed_citations=answer.removed_citations,
            support_score=answer.support_score,
            backend=answer.backend,
            retrievals=answer.retrievals,
            flagged_sources=[s.n for s in answer.sources if s.chunk_id in flagged],
            notes=list(answer.notes),
            principal=principal,
            index_version=answer.index_version,
            timings=answer.timings,
            usage=answer.usage,
        )


_build_lock = threading.Lock()


def get_agent(request: Request) -> Agent:
    """The app's agent: ``app.state.answer_agent`` when the app factory set one, else built on
    first use from the serving index's query embedder (the model is already loaded there)."""
    state = request.app.state
    agent: Agent | None = getattr(state, "answer_agent", None)
    if agent is not None:
        return agent
    with _build_lock:
        agent = getattr(state, "answer_agent", None)
        if agent is None:
            holder = state.holder
            embedder = getattr(holder.service, "embedder", None)
            if not isinstance(embedder, Embedder):
                raise StoreUnavailableError("no index is loaded yet")
            agent = build_agent(state.settings, holder, embedder)
            state.answer_agent = agent
    return agent


def get_answer_metrics(request: Request, metrics: MetricsDep) -> AnswerMetrics:
    state = request.app.state
    with _build_lock:
        answer_metrics: AnswerMetrics | None = getattr(state, "answer_metrics", None)
        if answer_metrics is None:
            answer_metrics = AnswerMetrics(metrics)
            state.answer_metrics = answer_metrics
    return answer_metrics


AgentDep = Annotated[Agent, Depends(get_agent)]
AnswerMetricsDep = Annotated[AnswerMetrics, Depends(get_answer_metrics)]


@router.post(
    "/answer",
    response_model=AnswerResponseBody,
    responses=_ERRORS,
    summary="Answer a question from the documents the caller may see, with citations",
)
def answer(
    auth: AuthContextDep,
    body: AnswerRequestBody,
    settings: SettingsDep,
    audit: AuditLogDep,
    answer_metrics: AnswerMetricsDep,
    agent: AgentDep,
) -> AnswerResponseBody:
    """Retrieves with the caller's access, answers, and verifies that every citation [n] points
    at a source that was given to the answerer. Refuses (``refused: true``) when the knowledge
    base holds nothing relevant enough."""
    principal = auth.principal
    filters = body.filters.to_filters() if body.filters is not None else SearchFilters()
    started = time.perf_counter()

    def record(
        event: str,
        outcome: AuditOutcome,
        result: Answer | None,
        reason: str | None,
        chunk_ids: tuple[str, ...] | None = None,
    ) -> None:
        audit.record(
            AuditRecord(
                event=event,
                outcome=outcome,
                principal=principal.name,
                caller=auth.caller,
                auth_method=auth.method,
                query_sha256=query_hash(body.question),
                query=body.question,  # AuditLog drops it unless audit_log_queries is on
                mode=agent.config.mode,
                k=agent.config.top_k,
                filters=FilterSummary.of(filters),
                chunk_ids=chunk_ids
                if chunk_ids is not None
                else tuple(s.chunk_id for s in result.sources)
                if result
                else (),
                index_version=result.index_version if result else None,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                reason=reason,
            )
        )

    if len(body.question) > settings.max_query_chars:
        record("answer", "rejected", None, "query_too_long")
        raise InputRejectedError(f"question longer than {settings.max_query_chars} characters")
    try:
        result = agent.answer(principal, body.question, filters)
    except StoreUnavailableError:
        record("answer", "unavailable", None, "store_unavailable")
        raise
    except CitewellError as exc:
        record("answer", "error", None, type(exc).__name__)
        raise
    if result.flagged_chunks:
        # A separate line so security tooling can alert on it without parsing answers.
        record(
            "answer.injection_suspected",
            "ok",
            result,
            "instruction_like_text_in_sources",
            chunk_ids=result.flagged_chunks,
        )
    reason = "refused" if result.refused else None if result.generated else "sources_only"
    record("answer", "ok", result, reason)
    answer_metrics.observe(result)
    return AnswerResponseBody.from_answer(result, principal.name)
