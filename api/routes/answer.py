"""``POST /v1/answer``: an answer from the documents the caller may see, with verified citations.

Same authentication, audit and error mapping as ``/v1/search``; the agent retrieves with the
caller's principal only. With generation switched off (``generation_enabled=false``) the answer
is empty and the sources are returned.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from citewell.agent.agent import Agent
from citewell.agent.factory import build_agent
from citewell.agent.models import Answer, AnswerTimings, Citation, Source, TokenUsage
from citewell.api.deps import AuthContextDep, OperationsDep
from citewell.api.schemas import SearchFiltersBody, error_responses
from citewell.core.errors import StoreUnavailableError
from citewell.retrieval.protocols import Embedder

router = APIRouter(prefix="/v1", tags=["answer"])

_ERRORS = error_responses(401, 403, 413, 503)


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
    confidence: float | None = Field(
        description="calibrated probability that the best source sentence answers the question"
    )
    refusal_reason: str | None = Field(
        description='why the agent refused ("no passage answers ..."); null when it answered'
    )
    backend: str
    retrievals: int
    flagged_sources: list[int] = Field(description="[n] of sources that look like instructions")
    notes: list[str]
    principal: str
    index_version: str | None
    timings: AnswerTimings | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="server timings; only for operator principals",
    )
    usage: TokenUsage | None

    @classmethod
    def from_answer(
        cls, answer: Answer, principal: str, *, operator: bool = False
    ) -> AnswerResponseBody:
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
            confidence=answer.confidence,
            refusal_reason=answer.refusal_reason,
            backend=answer.backend,
            retrievals=answer.retrievals,
            flagged_sources=[s.n for s in answer.sources if s.chunk_id in flagged],
            notes=list(answer.notes),
            principal=principal,
            index_version=answer.index_version,
            timings=answer.timings if operator else None,
            usage=answer.usage,
        )


_build_lock = threading.Lock()


def agent_for(state: Any) -> Agent:
    """The app's agent: ``state.answer_agent`` when the app factory set one, else built on
    first use from the serving index's query embedder (the model is already loaded there)."""
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


def get_agent(request: Request) -> Agent:
    return agent_for(request.app.state)


@router.post(
    "/answer",
    response_model=AnswerResponseBody,
    responses=_ERRORS,
    summary="Answer a question from the documents the caller may see, with citations",
)
def answer(
    auth: AuthContextDep,
    body: AnswerRequestBody,
    operations: OperationsDep,
) -> AnswerResponseBody:
    """Retrieves with the caller's access, answers, and verifies that every citation [n] points
    at a source that was given to the answerer. Refuses (``refused: true``) when the knowledge
    base holds nothing relevant enough."""
    result = operations.answer(
        auth,
        question=body.question,
        endpoint="/v1/answer",
        filters=body.filters.to_filters() if body.filters is not None else None,
    )
    return AnswerResponseBody.from_answer(result, auth.principal.name, operator=auth.operator)
