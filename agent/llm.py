"""LLM backends behind one small interface.

``OpenAICompatibleLLM`` speaks ``POST {base_url}/chat/completions`` (vLLM, Ollama, llama.cpp,
hosted APIs) with httpx. llama-index's ``OpenAILike`` would need two more packages (``openai``,
``llama-index-llms-openai``) for one request; a direct call also gives us the usage block and
a hard per-call timeout without adapter layers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import httpx
from pydantic import SecretStr

from citewell.core.errors import ConfigurationError, LLMError
from citewell.core.logging import log_event
from citewell.core.models import Frozen

logger = logging.getLogger(__name__)

# Generous bounds on a reply: characters per token requested, and bytes of JSON around the text.
_MAX_CHARS_PER_TOKEN = 32
_MAX_REPLY_BYTES = 1 << 20


class Message(Frozen):
    role: Literal["system", "user", "assistant"]
    content: str


class Completion(Frozen):
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class LLM(Protocol):
    """A chat model: messages in, one completion out."""

    @property
    def name(self) -> str:
        """Backend and model, for reports and audit."""
        ...

    def complete(self, messages: Sequence[Message], timeout_s: float | None = None) -> Completion:
        """Generate one reply; raises ``LLMError`` on failure or timeout."""
        ...


class OpenAICompatibleLLM:
    """Any OpenAI-compatible chat completions endpoint. Temperature 0 for repeatable answers."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: SecretStr | None = None,
        timeout_s: float = 60.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"llm_base_url must be an http(s) URL, got {base_url!r}")
        if not model:
            raise ConfigurationError("llm_model is required with llm_base_url")
        if timeout_s <= 0 or max_tokens < 1:
            raise ConfigurationError("llm timeout and max_tokens must be positive")
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._transport = transport

    @property
    def name(self) -> str:
        return f"openai-compatible:{self._model}"

    def complete(self, messages: Sequence[Message], timeout_s: float | None = None) -> Completion:
        timeout = min(self._timeout_s, timeout_s) if timeout_s is not None else self._timeout_s
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        body = {
            "model": self._model,
            "messages": [m.model_dump() for m in messages],
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
            "stream": False,
        }
        # A reply may hold max_tokens tokens; a server that ignores the limit must not make the
        # agent read, and verify sentence by sentence, an unbounded text.
        max_chars = self._max_tokens * _MAX_CHARS_PER_TOKEN
        started = time.monotonic()
        try:
            with (
                httpx.Client(timeout=timeout, transport=self._transport) as client,
                client.stream("POST", self._url, json=body, headers=headers) as response,
            ):
                response.raise_for_status()
                limit = _MAX_REPLY_BYTES + max_chars * 4
                payload = json.loads(_read_at_most(response, limit, started + timeout))
        except httpx.TimeoutException as exc:
            raise LLMError(f"LLM call timed out after {timeout:.1f}s") from exc
        except httpx.HTTPStatusError as exc:
            # Status only: provider error bodies can echo the prompt or key fragments.
            raise LLMError(f"LLM endpoint returned HTTP {exc.response.status_code}") from exc
        except (httpx.HTTPError, ValueError, RecursionError) as exc:
            reason = type(exc).__name__
            raise LLMError(f"LLM endpoint unreachable or invalid reply: {reason}") from exc
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError("LLM reply has no choices[0].message.content") from exc
        text = _text_of(content)
        if not text.strip():
            # Tool calls, a refusal field, an empty or malformed content: the model wrote no
            # answer, which is not the same as saying the sources hold none (NOT_IN_SOURCES).
            raise LLMError("LLM reply has no text content")
        if len(text) > max_chars:
            raise LLMError(f"LLM reply is longer than max_tokens={self._max_tokens} allows")
        try:
            # JSON may escape a lone surrogate: no tokenizer, store or client can encode it.
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LLMError("LLM reply is not valid Unicode (it holds a lone surrogate)") from exc
        usage = payload.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        completion = Completion(
            text=text,
            prompt_tokens=_token_count(usage.get("prompt_tokens")),
            completion_tokens=_token_count(usage.get("completion_tokens")),
        )
        # Token counts only: the completion's text never reaches the log.
        counts = completion.model_dump(exclude={"text"})
        log_event(logger, logging.INFO, "agent.llm_call", model=self._model, **counts)
        return completion


def _read_at_most(response: httpx.Response, limit: int, deadline: float) -> bytes:
    """The response body; ``ValueError`` past ``limit`` bytes, ``httpx.ReadTimeout`` past
    ``deadline`` (httpx's timeout bounds each read, not a reply trickled in small pieces)."""
    body = bytearray()
    for piece in response.iter_bytes():
        body += piece
        if len(body) > limit:
            raise ValueError(f"reply over {limit} bytes")
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("reply not complete before the deadline")
    return bytes(body)


def _text_of(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts; anything else
    (None with tool calls or a refusal, a number, an object) has none."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
            if isinstance(part.get("text"), str)
        )
    return ""


def _token_count(value: object) -> int:
    """A usage count; 0 for anything but a finite non-negative number (providers vary, and a
    negative count would break the token counters)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if not math.isfinite(value) or value < 0:
        return 0
    return int(value)
