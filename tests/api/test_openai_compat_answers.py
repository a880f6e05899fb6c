"""What a chat front end reads of a grounded answer through ``/v1/chat/completions``, against a
real uvicorn server whose agent writes with an LLM (the local chat server): the same
confidence, refusal reason and unsupported sentences as ``/v1/answer`` reports, JSON and
streamed, and a message that says which sentences cite nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from citewell.agent.models import AgentConfig
from citewell.api.main import create_app
from citewell.api.routes.answer import agent_for
from citewell.core.settings import Settings
from tests.agent.fakes import HashingEmbedder
from tests.agent.openai_server import chat_server
from tests.api.conftest import KEYS, FakeServingIndex
from tests.api.live import live_server

UNCITED = "HACKED-7731 every employee gets unlimited leave."


def first_sentence_of_source_1(body: dict[str, Any]) -> str:
    """The model: source 1's first sentence, cited, then a sentence it cites nothing for."""
    user = body["messages"][-1]["content"]
    found = re.search(r'<source n="1"[^>]*>\n(.*?)\n</source>', user, re.S)
    assert found, user
    first = re.split(r"(?<=\.)\s+", " ".join(found.group(1).split()))[0].rstrip(".")
    return f"{first} [1].\n{UNCITED}"


@pytest.fixture
def served(api_settings: Settings, fake_index: FakeServingIndex) -> Iterator[tuple[str, FastAPI]]:
    fake_index.embedder = HashingEmbedder()  # type: ignore[attr-defined]
    with chat_server(first_sentence_of_source_1) as llm:
        settings = api_settings.model_copy(
            update={"llm_base_url": llm.base_url, "llm_model": "local"}
        )
        app = create_app(settings, fake_index)
        with live_server(app) as base:
            agent_for(app.state)._config = AgentConfig(refusal_threshold=0.2, top_k=3)
            yield base, app


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["alice"], max_retries=0)


def _extra(obj: Any, name: str) -> Any:
    return (obj.model_extra or {})[name]


def _streamed_last(base: str, model: str, question: str) -> Any:
    stream = _client(base).chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True
    )
    return [c for c in stream if c.choices][-1]


def test_an_uncited_sentence_is_reported_and_marked_in_the_message(
    served: tuple[str, FastAPI], fake_index: FakeServingIndex, api_settings: Settings
) -> None:
    base, _ = served
    question = " ".join(fake_index.chunks[1].text.split()[:14]) + "?"
    rest = httpx.post(
        f"{base}/v1/answer", json={"question": question}, headers={"X-API-Key": KEYS["alice"]}
    ).json()
    assert not rest["refused"] and rest["citations"], rest["notes"]
    assert rest["unsupported_sentences"] == [UNCITED]
    completion = _client(base).chat.completions.create(
        model=api_settings.index, messages=[{"role": "user", "content": question}]
    )
    text = completion.choices[0].message.content or ""
    # The chat message showed the uncited sentence like the cited ones, and the completion
    # said nothing of it, nor of the answer's confidence.
    assert _extra(completion, "unsupported_sentences") == [UNCITED]
    assert _extra(completion, "confidence") == rest["confidence"]
    body = text.split("\n\nSources:\n")[0]
    assert body.endswith(f'\n\nNot supported by a cited source:\n    "{UNCITED}"'), text
    last = _streamed_last(base, api_settings.index, question)
    assert _extra(last, "unsupported_sentences") == [UNCITED]
    assert _extra(last, "confidence") == rest["confidence"]


def test_a_refusal_says_why_with_its_confidence(
    served: tuple[str, FastAPI], api_settings: Settings
) -> None:
    base, app = served
    agent_for(app.state)._config = AgentConfig(refusal_threshold=0.99, top_k=3)
    question = "zebra quantum saxophone tariff?"
    rest = httpx.post(
        f"{base}/v1/answer", json={"question": question}, headers={"X-API-Key": KEYS["alice"]}
    ).json()
    assert rest["refused"] and rest["refusal_reason"]
    completion = _client(base).chat.completions.create(
        model=api_settings.index, messages=[{"role": "user", "content": question}]
    )
    assert _extra(completion, "refused") is True
    assert _extra(completion, "refusal_reason") == rest["refusal_reason"]
    assert _extra(completion, "confidence") == rest["confidence"]
    last = _streamed_last(base, api_settings.index, question)
    assert _extra(last, "refusal_reason") == rest["refusal_reason"]
