"""Odd request bodies against a real index (qdrant-edge and BM25, hashing embedder) served by a
real uvicorn server: text that is valid JSON but not valid Unicode (a lone surrogate such as
``"\\ud800"``) is the caller's error (422, refused with the body's other validation errors before
anything runs), never an outage (503) or a crash (500), on any route that takes text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from citewell.api.main import create_app
from citewell.core.models import AccessLabel
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder
from tests.api.conftest import KEYS, audit_lines
from tests.api.live import live_server

ALICE = {"X-API-Key": KEYS["alice"], "Content-Type": "application/json"}
LONE = "\\ud800"  # as the JSON text carries it: json.loads makes it a lone surrogate


@pytest.fixture
def served(make_settings, principals_file: Path) -> Iterator[tuple[str, Settings]]:
    settings = make_settings(principals_file=principals_file)
    embedder = HashingEmbedder()
    docs = [
        TextDocument(
            doc_id=f"memo-{i}",
            title=f"Memo {i}",
            text=f"The parental leave policy grants {10 + i} weeks of leave to staff.",
            label=AccessLabel(classification="internal", groups=frozenset({"engineering"})),
        )
        for i in range(3)
    ]
    Ingestor(settings, embedder=embedder).ingest_texts(docs, index=settings.index, source_name="kb")
    service = ServingIndex(settings, embedder=embedder)
    try:
        with live_server(create_app(settings, service)) as base:
            yield base, settings
    finally:
        service.close()


def _store_unavailable(base: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("citewell_store_unavailable_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("field", ["doc_ids", "sources", "doc_types"])
@pytest.mark.parametrize(
    ("route", "text"), [("/v1/search", '"query"'), ("/v1/answer", '"question"')]
)
def test_a_filter_value_that_is_not_unicode_is_the_callers_422_not_an_outage(
    served, field, route, text
):
    """The store could not encode the value and the API answered 503 "index temporarily
    unavailable", counted as a store failure: any caller could raise the outage alarm."""
    base, settings = served
    body = f'{{{text}: "parental leave", "filters": {{"{field}": ["{LONE}"]}}}}'
    response = httpx.post(f"{base}{route}", content=body.encode(), headers=ALICE)
    assert response.status_code == 422, response.text
    assert "valid Unicode" in response.json()["detail"][0]["msg"]
    assert _store_unavailable(base) == 0
    assert [line for line in audit_lines(settings) if line["event"] in ("search", "answer")] == []


@pytest.mark.parametrize(
    "content", [f'"How many weeks{LONE}?"', f'[{{"type": "text", "text": "{LONE}"}}]']
)
def test_a_chat_message_that_is_not_unicode_is_the_callers_422(served, content):
    """The answerability check's tokenizer raised UnicodeEncodeError: a 500, and no audit line
    for the request."""
    base, settings = served
    body = (
        f'{{"model": "{settings.index}", "messages": [{{"role": "user", "content": {content}}}]}}'
    )
    response = httpx.post(f"{base}/v1/chat/completions", content=body.encode(), headers=ALICE)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"].startswith("messages.0.content")
    assert "valid Unicode" in response.text
    assert audit_lines(settings) == []
