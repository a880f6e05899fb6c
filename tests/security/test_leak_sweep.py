"""Leak sweep: over 10,000 random (principal, query) pairs through every way out of Citewell
(library in every mode, /v1/search, /v1/answer, MCP tools, the CLI, evaluation reports), with
caches, pagination and error paths. Every document carries a marker token, so a leak of a
document the principal may not see is a substring in the response."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from fastapi.testclient import TestClient
from mcp import Client

from citewell.agent.factory import build_agent
from citewell.api.audit import AuditLog
from citewell.api.auth import AuthContext
from citewell.api.main import create_app
from citewell.api.mcp_server import stdio_mcp_server
from citewell.api.metrics import ApiMetrics
from citewell.api.operations import Operations
from citewell.cli.main import main as cli_main
from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.evaluation.answers_eval import evaluate_answers
from citewell.evaluation.coverage import evaluate_coverage
from citewell.evaluation.golden_set import GoldenQuestion
from citewell.evaluation.report import make_bundle, render_html
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.rerank import CrossEncoderReranker
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder
from tests.principal_files import keyed, write_principals
from tests.retrieval.test_rerank import build_cross_encoder
from tests.security.corpus import (
    GROUPS,
    LEVELS,
    QUERIES,
    doc_id,
    documents,
    hidden_markers,
    leaks,
    scope,
)

pytestmark = pytest.mark.slow

JWT_SECRET = "sweep-secret-0123456789-abcdefghijklmnop"
DOCS = documents(36)
# name → (clearance, groups, api key)
KEYED = {
    "guest": ("public", (), "guest-key-0001"),
    "eng": ("internal", ("engineering",), "eng-key-0002"),
    "hr-lead": ("confidential", ("hr",), "hr-key-0003"),
    "sec-admin": ("restricted", ("security", "finance"), "sec-key-0004"),
}
# Pairs per exit; they add up to more than 10,000.
N_LIBRARY = 6020
N_LIBRARY_RERANK = 300
N_API_SEARCH = 3000
N_API_ANSWER = 400
N_MCP = 300
N_CLI = 40
N_REPORTS = 3
ALL_GROUPS = (*GROUPS, "no-such-group")
BODY_TEXT = {doc_id(i): " ".join(f"{d.title} {d.text}".split()) for i, d in enumerate(DOCS)}


def random_principal(rng: random.Random, n: int) -> Principal:
    groups = rng.sample(ALL_GROUPS, k=rng.randint(0, 3))
    return Principal(name=f"p{n}", clearance=rng.choice(LEVELS), groups=frozenset(groups))


def token_for(principal: Principal) -> str:
    claims = {
        "sub": principal.name,
        "clearance": principal.clearance,
        "groups": sorted(principal.groups),
        "exp": int(time.time()) + 600,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def assert_no_leak(settings: Settings, principal: Principal, body: str, query: str = "") -> None:
    found = leaks(body, hidden_markers(settings, principal, DOCS), query)
    assert not found, f"{principal} saw hidden {found} for {query!r}"


class KB:
    def __init__(self, settings: Settings, service: ServingIndex, embedder: Any) -> None:
        self.settings = settings
        self.service = service
        self.embedder = embedder


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KB]:
    """The sweep's index, embedded by the hashing test embedder: access is enforced the same
    whatever made the vectors, and the real model's query embedding (per caller: the cache is
    partitioned) was most of the sweep's time. The CLI leg, which loads the configured model,
    has its own index (``cli_index``)."""
    embedder = HashingEmbedder()
    root = tmp_path_factory.mktemp("sweep")
    write_principals(
        root / "principals.yaml", {name: keyed(c, g, key) for name, (c, g, key) in KEYED.items()}
    )
    settings = Settings(
        data_dir=root / "data",
        index="sweep",
        principals_file=root / "principals.yaml",
        jwt_secret=JWT_SECRET,
        rerank_candidates=5,
        candidates_per_leg=30,
    )
    Ingestor(settings, embedder=embedder).ingest_texts(DOCS, index="sweep", source_name="kb")
    path = build_cross_encoder(root / "ce", layers=1)
    reranker = CrossEncoderReranker(str(path), backend="torch", threads=2)
    service = ServingIndex(settings, embedder=embedder, reranker=reranker)
    yield KB(settings, service, embedder)
    service.close()


def test_library_every_mode_with_pagination(kb: KB) -> None:
    rng = random.Random(7)
    checked = nonempty = 0
    modes = list(SearchMode)
    for n in range(N_LIBRARY + N_LIBRARY_RERANK):
        principal = random_principal(rng, n)
        query = rng.choice(QUERIES)
        rerank = n >= N_LIBRARY
        mode = SearchMode.HYBRID if rerank else modes[n % 3]
        request = SearchRequest(query=query, k=rng.randint(1, 30), mode=mode, rerank=rerank)
        result = kb.service.search(principal, request)
        s = scope(kb.settings, principal)
        assert all(s.allows_chunk(r.chunk) for r in result.results)
        assert_no_leak(kb.settings, principal, result.model_dump_json(), query)
        assert result.reranked == (rerank and bool(result.results))
        checked += 1
        nonempty += bool(result.results)
        if n % 50 == 0:
            # Pagination: a smaller k is a prefix of a larger one (no page reveals more).
            small = request.model_copy(update={"k": 3})
            large = request.model_copy(update={"k": 25})
            head = [r.chunk.chunk_id for r in kb.service.search(principal, small).results]
            full = [r.chunk.chunk_id for r in kb.service.search(principal, large).results]
            assert full[: len(head)] == head
    assert checked == N_LIBRARY + N_LIBRARY_RERANK
    assert nonempty > checked // 3, "the sweep must exercise non-empty results"


def test_caches_are_not_shared_across_scopes(kb: KB) -> None:
    """Query-embedding cache and per-scope BM25 statistics: a low-clearance user's results are
    the same whether or not a high-clearance user just ran the same query."""
    high = Principal(name="high", clearance="restricted", groups=frozenset(GROUPS))
    low = Principal(name="low", clearance="public", groups=frozenset())
    requests = [
        SearchRequest(query=q, k=10, mode=mode, rerank=False)
        for q in QUERIES
        for mode in SearchMode
    ]
    cold = ServingIndex(kb.settings, embedder=kb.embedder)
    warm = ServingIndex(kb.settings, embedder=kb.embedder)
    try:
        alone = [cold.search(low, r) for r in requests]
        for request, expected in zip(requests, alone, strict=True):
            warm.search(high, request)
            after_high = warm.search(low, request)
            assert [(h.chunk.chunk_id, h.score) for h in after_high.results] == [
                (h.chunk.chunk_id, h.score) for h in expected.results
            ]
            assert_no_leak(kb.settings, low, after_high.model_dump_json(), request.query)
    finally:
        cold.close()
        warm.close()


@pytest.fixture(scope="module")
def client(kb: KB) -> Iterator[TestClient]:
    with TestClient(create_app(kb.settings, kb.service)) as test_client:
        yield test_client


def _auth(rng: random.Random, n: int) -> tuple[Principal, dict[str, str]]:
    if n % 4 == 0:
        name = rng.choice(list(KEYED))
        clearance, groups, key = KEYED[name]
        return Principal(name=name, clearance=clearance, groups=frozenset(groups)), {
            "X-API-Key": key
        }
    principal = random_principal(rng, n)
    return principal, {"Authorization": f"Bearer {token_for(principal)}"}


def test_api_search(kb: KB, client: TestClient) -> None:
    rng = random.Random(11)
    hidden_ids_tried = 0
    for n in range(N_API_SEARCH):
        principal, headers = _auth(rng, n)
        query = rng.choice(QUERIES)
        body: dict[str, Any] = {
            "query": query,
            "k": rng.randint(1, 40),
            "mode": rng.choice([m.value for m in SearchMode]),
            "rerank": n % 10 == 0,
        }
        if n % 5 == 0:
            body["filters"] = {"doc_ids": [doc_id(rng.randrange(len(DOCS)))]}
            hidden_ids_tried += 1
        response = client.post("/v1/search", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert_no_leak(kb.settings, principal, response.text, query)
        payload = response.json()
        assert payload["principal"] == principal.name
        allowed = {
            doc_id(i)
            for i, d in enumerate(DOCS)
            if scope(kb.settings, principal).allows(
                kb.settings.scheme.rank(d.label.classification), d.label.groups
            )
        }
        assert {hit["doc_id"] for hit in payload["results"]} <= allowed
    assert hidden_ids_tried > 0


def _visible_text(settings: Settings, principal: Principal) -> list[str]:
    s = scope(settings, principal)
    rank = settings.scheme.rank
    return [
        BODY_TEXT[doc_id(i)]
        for i, d in enumerate(DOCS)
        if s.allows(rank(d.label.classification), d.label.groups)
    ]


def check_answer_payload(settings: Settings, principal: Principal, payload: dict[str, Any]) -> None:
    visible = _visible_text(settings, principal)
    for citation in payload["citations"]:
        quote = " ".join(citation["quote"].split())
        assert any(quote in text for text in visible), f"quote not from a visible doc: {quote!r}"
    answer_text = re.sub(r"\[\d+\]", "", payload["answer"])
    for sentence in re.split(r"(?<=[.!?])\s+|\n", answer_text):
        sentence = " ".join(sentence.split())
        if payload["generated"] and not payload["refused"] and len(sentence) > 20:
            # The offline answerer copies sentences verbatim from its sources.
            assert any(sentence in text for text in visible), sentence


def test_api_answer(kb: KB, client: TestClient) -> None:
    rng = random.Random(13)
    answered = 0
    for n in range(N_API_ANSWER):
        principal, headers = _auth(rng, n)
        question = rng.choice(QUERIES)
        response = client.post("/v1/answer", json={"question": question}, headers=headers)
        assert response.status_code == 200, response.text
        assert_no_leak(kb.settings, principal, response.text, question)
        payload = response.json()
        check_answer_payload(kb.settings, principal, payload)
        answered += bool(payload["citations"])
    assert answered > 0, "some answers must carry citations for the check to mean anything"


def test_mcp_tools(kb: KB) -> None:
    rng = random.Random(17)
    agent = build_agent(kb.settings, kb.service, kb.embedder)
    principals = [random_principal(rng, n) for n in range(N_MCP // 10)]
    audit = AuditLog(kb.settings.data_dir / "mcp-audit.jsonl")
    operations = Operations(kb.settings, kb.service, lambda: agent, audit, ApiMetrics())

    async def round_trip(principal: Principal) -> list[tuple[str, str]]:
        server = stdio_mcp_server(operations, AuthContext(principal=principal, method="local"))
        out: list[tuple[str, str]] = []
        async with Client(server) as client:
            for i in range(10):
                query = rng.choice(QUERIES)
                if i % 3 == 0:
                    result = await client.call_tool("answer", {"question": query})
                    assert result.structured_content is not None
                    check_answer_payload(kb.settings, principal, result.structured_content)
                else:
                    args = {"query": query, "k": rng.randint(1, 20), "mode": "hybrid"}
                    result = await client.call_tool("search", args)
                text = json.dumps(result.structured_content) + "".join(
                    getattr(c, "text", "") for c in result.content
                )
                out.append((query, text))
        return out

    calls = 0
    for principal in principals:
        for query, text in anyio.run(round_trip, principal):
            assert_no_leak(kb.settings, principal, text, query)
            calls += 1
    assert calls == N_MCP


@pytest.fixture(scope="module")
def cli_index(kb: KB, embedder: Any) -> str:
    """The sweep's documents indexed by the configured model, as the CLI's processes load it."""
    Ingestor(kb.settings, embedder=embedder).ingest_texts(DOCS, index="sweep-cli", source_name="kb")
    return "sweep-cli"


def test_cli_search_and_ask(
    kb: KB,
    cli_index: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CLI configures the root logger; keep pytest's handlers for the rest of the session.
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    rng = random.Random(19)
    base = ["--data-dir", str(kb.settings.data_dir), "--index", cli_index]
    for n in range(N_CLI):
        principal = random_principal(rng, n)
        query = rng.choice(QUERIES)
        who = ["--clearance", principal.clearance]
        if principal.groups:
            who += ["--groups", ",".join(sorted(principal.groups))]
        # Hybrid loads the embedding model per process; a few runs cover that path.
        mode = "hybrid" if n == 0 else "dense" if n == 1 else "bm25"
        argv = ["search", query, *base, *who, "--mode", mode, "--k", str(rng.randint(1, 20))]
        if n % 2:
            argv.append("--json")
        assert cli_main(argv) == 0
        out = capsys.readouterr()
        assert_no_leak(kb.settings, principal, out.out + out.err, query)


def test_evaluation_reports(kb: KB) -> None:
    questions = [GoldenQuestion(question=q) for q in QUERIES[:6]]
    for clearance, groups in (
        ("public", ()),
        ("internal", ("hr",)),
        ("confidential", ("finance",)),
    ):
        principal = Principal(
            name=f"owner-{clearance}", clearance=clearance, groups=frozenset(groups)
        )
        report = evaluate_answers(
            kb.settings, principal, questions, service=kb.service, embedder=kb.embedder
        )
        coverage = evaluate_coverage(kb.settings, principal, report)
        bundle = make_bundle(
            principal.name, principal.clearance, "sweep", answers=report, coverage=coverage
        )
        html = render_html(bundle)
        assert_no_leak(kb.settings, principal, html)
        assert_no_leak(kb.settings, principal, bundle.model_dump_json())
        assert coverage.documents == len(_visible_text(kb.settings, principal))


def test_hidden_and_missing_ids_look_the_same(kb: KB, client: TestClient) -> None:
    guest_key = {"X-API-Key": KEYED["guest"][2]}
    guest = Principal(name="guest", clearance="public", groups=frozenset())
    hidden = [m for m in hidden_markers(kb.settings, guest, DOCS) if m.startswith("zqdoc")]
    assert hidden

    def shape(response: Any) -> Any:
        payload = response.json()
        payload.pop("took_ms", None)
        payload.pop("timings", None)
        return response.status_code, payload

    for hidden_id in hidden[:8]:
        for query, mode in (("zqmark", "bm25"), (QUERIES[0], "hybrid"), (QUERIES[3], "dense")):
            responses = [
                client.post(
                    "/v1/search",
                    json={"query": query, "mode": mode, "filters": {"doc_ids": [ident]}},
                    headers=guest_key,
                )
                for ident in (hidden_id, "zqdoc999-does-not-exist")
            ]
            assert shape(responses[0]) == shape(responses[1])
            assert responses[0].json()["results"] == []
        answers = [
            client.post(
                "/v1/answer",
                json={"question": QUERIES[1], "filters": {"doc_ids": [ident]}},
                headers=guest_key,
            )
            for ident in (hidden_id, "zqdoc999-does-not-exist")
        ]
        assert shape(answers[0]) == shape(answers[1])


def test_error_bodies_reveal_nothing(kb: KB, client: TestClient, tmp_path: Path) -> None:
    markers = [m for i in range(len(DOCS)) for m in (f"zqmark{i:03d}", doc_id(i))]
    markers += [d.title for d in DOCS]
    expired = jwt.encode(
        {"sub": "x", "clearance": "restricted", "groups": ["security"], "exp": 1},
        JWT_SECRET,
        algorithm="HS256",
    )
    forged = jwt.encode(
        {"sub": "x", "clearance": "restricted", "groups": ["security"], "exp": 2**31},
        "not-the-secret-but-long-enough-000000000",
        algorithm="HS256",
    )
    bad_clearance = jwt.encode(
        {"sub": "x", "clearance": "top-secret", "groups": ["security"], "exp": 2**31},
        JWT_SECRET,
        algorithm="HS256",
    )
    attempts: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({}, {"query": "zqmark005"}),
        ({"X-API-Key": "wrong"}, {"query": "zqmark005"}),
        ({"Authorization": f"Bearer {expired}"}, {"query": "zqmark005"}),
        ({"Authorization": f"Bearer {forged}"}, {"query": "zqmark005"}),
        ({"Authorization": f"Bearer {bad_clearance}"}, {"query": "zqmark005"}),
        ({"X-API-Key": KEYED["guest"][2]}, {"query": "zqmark005", "groups": ["security"]}),
        ({"X-API-Key": KEYED["guest"][2]}, {"query": "zqmark005", "k": 0}),
        ({"X-API-Key": KEYED["guest"][2]}, {"query": "x" * 5000}),
        (
            {
                "X-API-Key": KEYED["guest"][2],
                "X-Act-For": token_for(
                    Principal(name="a", clearance="restricted", groups=frozenset({"security"}))
                ),
            },
            {"query": "zqmark005"},
        ),
    ]
    for headers, body in attempts:
        for path in ("/v1/search", "/v1/answer"):
            payload = dict(body)
            if path == "/v1/answer":
                payload["question"] = payload.pop("query")
            response = client.post(path, json=payload, headers=headers)
            assert response.status_code >= 400, (path, headers, body)
            text = response.text
            for m in ("zqmark005", "x" * 5000):
                text = text.replace(m, "")  # the caller's own input echoed back by validation
            assert not [m for m in markers if m in text], (path, response.text)
            assert JWT_SECRET not in text and KEYED["guest"][2] not in text

    # A store that cannot be opened: 503 with a fixed message (no path, index or document).
    broken = Settings(
        data_dir=tmp_path / "empty",
        index="sweep",
        principals_file=kb.settings.principals_file,
        jwt_secret=JWT_SECRET,
    )
    broken_service = ServingIndex(broken, embedder=kb.embedder)
    with TestClient(create_app(broken, broken_service)) as broken_client:
        response = broken_client.post(
            "/v1/search", json={"query": "zqmark005"}, headers={"X-API-Key": KEYED["guest"][2]}
        )
    assert response.status_code == 503
    assert str(tmp_path) not in response.text and "sweep" not in response.text


def test_sweep_covers_at_least_ten_thousand_pairs() -> None:
    total = N_LIBRARY + N_LIBRARY_RERANK + N_API_SEARCH + N_API_ANSWER + N_MCP + N_CLI + N_REPORTS
    assert total >= 10_000
