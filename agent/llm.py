"""LLM backends behind one small interface.

``OpenAICompatibleLLM`` speaks ``POST {base_url}/chat/completions`` (vLLM, Ollama, llama.cpp,
hosted APIs) with httpx. llama-index's ``OpenAILike`` would need two more packages (``openai``,
``llama-index-llms-openai``) for one request; a direct call also gives us the usage block and
a hard per-call timeout without adapter layers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import httpx
from pydantic import SecretStr

from citewell.core.errors import ConfigurationError, LLMError
from citewell.core.logging import log_event
from citewell.core.models import Frozen

logger = logging.getLogger(__name__)


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
        try:
            with httpx.Client(timeout=timeout, transport=self._transport) as client:
                response = client.post(self._url, json=body, headers=headers)
                response.raise_for_status()
                payload = response.json()
        except httpx.TimeoutException as exc:
            raise LLMError(f"LLM call timed out after {timeout:.1f}s") from exc
        except httpx.HTTPStatusError as exc:
            # Status only: provider error bodies can echo the prompt or key fragments.
            raise LLMError(f"LLM endpoint returned HTTP {exc.response.status_code}") from exc
        except (httpx.HTTPError, ValueError) as exc:
            reason = type(exc).__name__
            raise LLMError(f"LLM endpoint unreachable or invalid reply: {reason}") from exc
        try:
            text = payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError("LLM reply has no choices[0].message.content") from exc
        usage = payload.get("usage") or {}
        completion = Completion(
            text=str(text),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
        # Token counts only: the completion's text never reaches the log.
        counts = completion.model_dump(exclude={"text"})
        log_event(logger, logging.INFO, "agent.llm_call", model=self._model, **counts)
        return completion
