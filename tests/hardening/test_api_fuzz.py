"""Bad input at the API: schemathesis fuzzes every operation from the OpenAPI schema against a
real small index (zero 5xx), then explicit cases for oversized bodies, huge queries, unicode edge
cases, out-of-range parameters and unknown fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from citewell.api.main import create_app
from citewell.core.settings import Settings
from citewell.retrieval.service import ServingIndex
from tests.hardening import small_index
from tests.hardening.small_index import HEADERS

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, embedder: Any
) -> Iterator[tuple[Settings, ServingIndex]]:
    root = tmp_path_factory.mktemp("fuzz-index")
    settings = small_index.build(root, shared_data, embedder)
    service = ServingIndex(settings, embedder=embedder)
    service.versions.load()
    yield settings, service
    service.close()


@pytest.fixture(scope="module")
def app(served: tuple[Settings, ServingIndex]) -> FastAPI:
    return create_app(*served)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("mode", list(FUZZ_EXAMPLES), ids=str)
def test_schemathesis_finds_no_server_errors(app: FastAPI, mode: GenerationMode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an unusable operation is a schema bug
        operations.append(result.ok())
    assert {op.path for op in operations} >= {"/v1/search", "/v1/answer", "/readyz"}
    failures: list[str] = []
    sent: dict[str, int] = {}
    succeeded: set[str] = set()
    for operation in operations:

        @hypothesis.settings(
            max_examples=FUZZ_EXAMPLES[mode],
            deadline=None,
            derandomize=True,  # the same cases every run: a failure here is reproducible
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: Any) -> None:
            # A valid key on most cases, so requests get past authentication to the index.
            response = case.call(headers=HEADERS)
            sent[case.path] = sent.get(case.path, 0) + 1
            if response.status_code == 200:
                succeeded.add(case.path)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.body!r} -> {response.text}")

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:
            # No invalid input exists for an operation without parameters or body (/healthz).
            assert mode is GenerationMode.NEGATIVE and not operation.body, operation.path
    assert not failures, "\n".join(failures[:5])
    assert sent.get("/v1/search", 0) >= FUZZ_EXAMPLES[mode] // 2
    assert sent.get("/v1/answer", 0) >= FUZZ_EXAMPLES[mode] // 2
    if mode is GenerationMode.POSITIVE:  # the key worked: cases reached the real index
        assert {"/v1/search", "/v1/answer"} <= succeeded


def _search(client: TestClient, body: Any, **kwargs: Any) -> Any:
    return client.post("/v1/search", json=body, headers=HEADERS, **kwargs)


def test_oversized_bodies_are_refused_with_413(client: TestClient, served: Any):
    settings, _ = served
    big = {"query": "x" * (settings.max_request_bytes + 1)}
    assert _search(client, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield b'{"query": "'
        for _ in range(settings.max_request_bytes // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    streamed = client.post(
        "/v1/search",
        content=chunks(),
        headers=HEADERS | {"content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert streamed.json() == {"detail": "request body too large"}


def test_huge_query_is_refused_with_a_clear_422(client: TestClient, served: Any):
    settings, _ = served
    response = _search(client, {"query": "word " * settings.max_query_chars})
    assert response.status_code == 422
    assert str(settings.max_query_chars) in response.json()["detail"]
    question = client.post(
        "/v1/answer", json={"question": "why " * settings.max_query_chars}, headers=HEADERS
    )
    assert question.status_code < 500


UNICODE_QUERIES = {
    "nul": "white\u0000matter",
    "rtl": "\u05de\u05d5\u05d7 \u202ebrain\u202c \u0627\u0644\u062f\u0645\u0627\u063a",
    "emoji": "🧠 brain 👶🏽 newborn 🏳️‍🌈",
    "combining": "neuro" + "\u0301" * 300 + "n",
    "zero-width": "white\u200b\u200d\ufeffmatter",
    "long-word": "a" * 1999,
    "only-punctuation": "?!..,;:--",
    "whitespace": " \t\n\u00a0\u3000 ",
    "astral": "\U0001d49c\U0001d4b7 \U00010348",
    "noncharacter": "\ufffe\uffff matter",
}


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "dense"])
def test_unicode_edge_cases_never_fail_the_server(client: TestClient, mode: str):
    for name, query in UNICODE_QUERIES.items():
        response = _search(client, {"query": query, "k": 5, "mode": mode, "rerank": False})
        assert response.status_code in (200, 422), (name, response.text)


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"query": "\ud800 lone high surrogate"}',
        rb'{"query": "lone low \udfff"}',
        rb'{"query": "\udfff\ud800 reversed pair"}',
        b'{"query": "\xff\xfe invalid utf-8"}',
        b'{"query": "overlong \xc0\xaf"}',
    ],
    ids=["high", "low", "reversed", "bad-utf8", "overlong"],
)
def test_lone_surrogates_and_invalid_utf8_are_client_errors(client: TestClient, raw: bytes):
    for path, field in (("/v1/search", "query"), ("/v1/answer", "question")):
        body = raw.replace(b'"query"', f'"{field}"'.encode())
        response = client.post(
            path, content=body, headers=HEADERS | {"content-type": "application/json"}
        )
        assert response.status_code < 500, (path, response.text)


@pytest.mark.parametrize(
    "body",
    [
        {"query": "brain", "k": 0},
        {"query": "brain", "k": 101},
        {"query": "brain", "k": -1},
        {"query": "brain", "k": 10**30},
        {"query": "brain", "k": "ten"},
        {"query": "brain", "k": 2.5},
        {"query": "brain", "k": None},
        {"query": ""},
        {"query": None},
        {"query": ["brain"]},
        {"query": "brain", "mode": "sql"},
        {"query": "brain", "groups": ["hr"]},
        {"query": "brain", "clearance": "restricted"},
        {"query": "brain", "filters": {"groups": ["hr"]}},
        {"query": "brain", "filters": {"modified_from": "yesterday"}},
        {"query": "brain", "filters": {"doc_ids": "not-a-list"}},
        [],
        "brain",
    ],
)
def test_out_of_range_and_unknown_fields_are_422(client: TestClient, body: Any):
    response = _search(client, body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{", "application/json"),
        (b"", "application/json"),
        (b'{"query": "brain"}', "text/plain"),
        (b"query=brain", "application/x-www-form-urlencoded"),
        (json.dumps({"query": "brain"}).encode() * 2, "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
    ],
    ids=["truncated", "empty", "text-plain", "form", "two-documents", "deep-nesting"],
)
def test_malformed_bodies_are_client_errors(client: TestClient, content: bytes, content_type: str):
    response = client.post(
        "/v1/search", content=content, headers=HEADERS | {"content-type": content_type}
    )
    assert 400 <= response.status_code < 500, response.text


def test_a_valid_search_still_works_after_the_noise(client: TestClient):
    response = _search(client, {"query": "white matter in newborn brains", "k": 3})
    assert response.status_code == 200
    assert response.json()["results"]
