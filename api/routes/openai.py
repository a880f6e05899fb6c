"""OpenAI-compatible routes for chat front ends and agent frameworks: ``GET /v1/models`` and
``POST /v1/chat/completions`` (JSON, or server-sent events with ``stream: true``).

Answers come from the grounded agent, exactly as ``/v1/answer``: the text keeps its ``[n]``
markers, the citations come both as a structured ``citations`` field and as a readable list at
the end of the message, and a refusal is an ordinary answer. Who is asking comes only from the
credential (``Authorization: Bearer <API key or JWT>``, or ``X-API-Key``; ``X-Act-For``); nothing
in the messages, the system prompt or any body field changes it. Earlier user turns may shape
the retrieval query of a short follow-up question.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from citewell.agent.models import Answer
from citewell.api.deps import AuthContextDep, MetricsDep, OperationsDep, SettingsDep
from citewell.api.errors import NotFoundError
from citewell.api.schemas import UnicodeText, error_responses
from citewell.core.errors import InputRejectedError

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

_ERRORS = error_responses(
    400, 401, 403, 413, 503, route_specific={404: "Unknown model (see GET /v1/models)"}
)

# A follow-up this short ("and for part-time staff?") is searched together with the previous
# user turn; a longer question stands on its own.
FOLLOW_UP_MAX_WORDS = 6
STREAM_WORDS_PER_CHUNK = 6
# Body fields that would claim an identity or access: refused outright (422), so a client that
# believes it can set them learns that it cannot. Every other unknown field is ignored.
ACCESS_FIELDS = frozenset({"groups", "clearance", "principal", "act_for", "scope", "roles"})


class ContentPart(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str
    text: UnicodeText | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: UnicodeText | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return ""
        return " ".join(p.text for p in self.content if p.type == "text" and p.text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body. Sampling options (temperature, max_tokens, …) are accepted and
    ignored: the grounded agent decides what to say."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",  # OpenAI clients send many optional fields; none of them is read
        json_schema_extra={
            "examples": [
                {
                    "model": "demo",
                    "messages": [{"role": "user", "content": "How many weeks of parental leave?"}],
                }
            ]
        },
    )

    model: str = Field(description="an id from GET /v1/models (the index name)")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Read, unlike the sampling options: a client asking for several choices would otherwise
    # get one and fail reading the next.
    n: Literal[1] | None = Field(default=None, description="the number of choices: only 1")

    @model_validator(mode="before")
    @classmethod
    def _no_access_claims(cls, data: Any) -> Any:
        if isinstance(data, dict):
            claimed = sorted(ACCESS_FIELDS & set(data))
            if claimed:
                raise ValueError(
                    f"{', '.join(claimed)}: access comes from the credential, not the body"
                )
        return data


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "citewell"


class ModelList(BaseModel):
    model_config = ConfigDict(frozen=True)

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatCitation(BaseModel):
    model_config = ConfigDict(frozen=True)

    n: int
    title: str
    page: int | None
    source: str = Field(description="the document's URI")
    quote: str
    doc_id: str
    chunk_id: str
    char_start: int
    char_end: int


class AssistantMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    citations: list[ChatCitation] = Field(description="the sources cited by [n] in the answer")
    refused: bool = Field(description="the knowledge base does not contain the answer")
    refusal_reason: str | None = Field(description="why it refused; null when it answered")
    confidence: float | None = Field(
        description="calibrated probability that the best source sentence answers the question"
    )
    unsupported_sentences: list[str] = Field(
        description="sentences of the answer that cite no source (listed again in the message)"
    )


def retrieval_question(messages: list[ChatMessage]) -> str:
    """The question to answer: the last user turn, with the previous user turn in front when
    the last one is a short follow-up. System, assistant and tool turns are never used."""
    turns = [m.text.strip() for m in messages if m.role == "user" and m.text.strip()]
    if not turns:
        raise InputRejectedError("the conversation has no user message")
    last = turns[-1]
    if len(turns) > 1 and len(last.split()) <= FOLLOW_UP_MAX_WORDS:
        return f"{turns[-2]} {last}"
    return last


def citations_of(answer: Answer) -> list[ChatCitation]:
    return [
        ChatCitation(
            n=c.n,
            title=c.title,
            page=c.page,
            source=c.source_uri,
            quote=" ".join(c.quote.split()),
            doc_id=c.doc_id,
            chunk_id=c.chunk_id,
            char_start=c.char_start,
            char_end=c.char_end,
        )
        for c in answer.citations
    ]


def message_text(answer: Answer, citations: list[ChatCitation]) -> str:
    """The answer as a chat message: the text with its [n] markers, then a readable list of
    the sources (one entry per [n], with its quotes)."""
    if answer.refused:
        return answer.answer
    if not answer.generated:
        reason = answer.notes[-1] if answer.notes else "generation is off"
        lines = [f"No generated answer ({reason}). Sources:"]
        for s in answer.sources:
            page = f", p. {s.page}" if s.page is not None else ""
            lines.append(f"[{s.n}] {s.title}{page} ({s.source_uri})")
        return "\n".join(lines)
    lines = [answer.answer]
    if answer.unsupported_sentences:
        # A chat front end shows only the message: it says which sentences cite nothing, as
        # `citewell ask` does, so none is read as part of the cited answer.
        lines += ["", "Not supported by a cited source:"]
        lines.extend(f'    "{sentence}"' for sentence in answer.unsupported_sentences)
    if not citations:
        return "\n".join(lines)
    lines += ["", "Sources:"]
    seen: dict[int, list[str]] = {}
    heads: dict[int, str] = {}
    for c in citations:
        page = f", p. {c.page}" if c.page is not None else ""
        heads.setdefault(c.n, f"[{c.n}] {c.title}{page} ({c.source})")
        seen.setdefault(c.n, []).append(c.quote)
    for n in sorted(heads):
        lines.append(heads[n])
        lines.extend(f'    "{quote}"' for quote in dict.fromkeys(seen[n]))
    return "\n".join(lines)


def _usage(answer: Answer) -> Usage:
    if answer.usage is None:
        return Usage()
    prompt, completion = answer.usage.prompt_tokens, answer.usage.completion_tokens
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _pieces(text: str) -> Iterator[str]:
    """The message in small pieces of whole words (whitespace kept), as a model would stream."""
    words = text.split(" ")
    for i in range(0, len(words), STREAM_WORDS_PER_CHUNK):
        piece = " ".join(words[i : i + STREAM_WORDS_PER_CHUNK])
        yield piece if i + STREAM_WORDS_PER_CHUNK >= len(words) else piece + " "


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _stream(completion: ChatCompletion, include_usage: bool) -> Iterator[str]:
    base = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({**base, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(completion.choices[0].message.content):
        yield chunk({"content": piece})
    yield chunk(
        {},
        "stop",
        citations=[c.model_dump(mode="json") for c in completion.citations],
        refused=completion.refused,
        refusal_reason=completion.refusal_reason,
        confidence=completion.confidence,
        unsupported_sentences=completion.unsupported_sentences,
    )
    if include_usage:
        yield _sse({**base, "choices": [], "usage": completion.usage.model_dump()})
    yield "data: [DONE]\n\n"


@router.get(
    "/models",
    response_model=ModelList,
    responses=_ERRORS,
    summary="OpenAI-compatible: the models (one per index) the caller may use",
)
def list_models(auth: AuthContextDep, settings: SettingsDep) -> ModelList:
    """One model per index this server answers from; its id is the index name."""
    del auth  # authenticated like every /v1 route; every caller may query the served index
    return ModelList(data=[ModelCard(id=settings.index, created=0)])


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **_ERRORS,
        200: {
            "description": "A chat completion, or with stream=true server-sent events of "
            "chat.completion.chunk objects ending with data: [DONE]",
            "content": {"text/event-stream": {}},
        },
    },
    summary="OpenAI-compatible: a grounded, cited answer to the conversation's last question",
)
def chat_completions(
    auth: AuthContextDep,
    body: ChatCompletionRequest,
    operations: OperationsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> ChatCompletion | StreamingResponse:
    """Answers the last user message from the documents the caller may see, with verified
    citations. ``stream: true`` sends the same answer as server-sent events."""
    stream = str(body.stream).lower()
    if body.model != settings.index:
        metrics.chat_completions.labels(stream=stream, outcome="unknown_model").inc()
        raise NotFoundError(f"model {body.model!r} does not exist; GET /v1/models lists them")
    try:
        question = retrieval_question(body.messages)
        # The answer is complete before anything is sent, so errors are ordinary HTTP errors
        # even when streaming.
        answer = operations.answer(auth, question=question, endpoint="/v1/chat/completions")
    except Exception:
        metrics.chat_completions.labels(stream=stream, outcome="error").inc()
        raise
    citations = citations_of(answer)
    completion = ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.model,
        choices=[Choice(message=AssistantMessage(content=message_text(answer, citations)))],
        usage=_usage(answer),
        citations=citations,
        refused=answer.refused,
        refusal_reason=answer.refusal_reason,
        confidence=answer.confidence,
        unsupported_sentences=list(answer.unsupported_sentences),
    )
    outcome = "refused" if answer.refused else "answered" if answer.generated else "sources_only"
    metrics.chat_completions.labels(stream=stream, outcome=outcome).inc()
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            _stream(completion, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return completion
