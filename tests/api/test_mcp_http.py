"""MCP over streamable HTTP at ``/mcp`` in the API app, driven by the mcp package's own client
against a real uvicorn server on loopback: the same authentication as ``/v1/*`` (401 without
credentials, API key or JWT, act-for), every tool call audited and counted."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from citewell.agent.models import AgentConfig
from citewell.api.main import create_app
from citewell.api.routes.answer import agent_for
from citewell.core.settings import Settings
from tests.agent.fakes import HashingEmbedder
from tests.api.conftest import KEYS, FakeServingIndex, audit_lines, hs256_token
from tests.api.live import live_server

QUESTION_WORDS = 14
# A JSON-RPC initialize request, sent by hand where the mcp client cannot be used.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}


@pytest.fixture
def server(api_settings: Settings, fake_index: FakeServingIndex) -> Iterator[str]:
    fake_index.embedder = HashingEmbedder()  # type: ignore[attr-defined]
    app = create_app(api_settings, fake_index)
    with live_server(app) as base:
        # Word-overlap embeddings score lower than MiniLM: a lenient refusal threshold.
        agent = agent_for(app.state)
        agent._config = AgentConfig(refusal_threshold=0.2, top_k=3)
        yield base


def _call(base: str, headers: dict[str, str], calls: list[tuple[str, dict]]) -> tuple[set, list]:
    async def scenario() -> tuple[set, list]:
        http = httpx2.AsyncClient(headers=headers, timeout=30)
        async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            results = []
            for name, args in calls:
                result = await c.call_tool(name, args)
                assert not result.is_error, result.content
                assert result.structured_content is not None
                results.append(result.structured_content)
            return tools, results

    return anyio.run(scenario)


def test_mcp_without_credentials_is_401(server, api_settings, fake_index):
    headers = {"Accept": "application/json, text/event-stream"}
    response = httpx.post(f"{server}/mcp", json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]
    response = httpx.post(f"{server}/mcp", json=INITIALIZE, headers={**headers, "X-API-Key": "x"})
    assert response.status_code == 401
    blank = {**headers, "X-API-Key": KEYS["gateway"], "X-Act-For": ""}
    assert httpx.post(f"{server}/mcp", json=INITIALIZE, headers=blank).status_code == 400
    assert fake_index.seen == []
    # The mcp client itself fails to connect without credentials.
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises, it must not connect
        _call(server, {}, [])
    lines = audit_lines(api_settings)
    assert lines and all(x["outcome"] in ("denied", "rejected") for x in lines)
    assert all(x["endpoint"] == "/mcp" for x in lines)


def test_mcp_tools_with_an_api_key_are_audited_and_counted(server, api_settings, fake_index):
    question = " ".join(fake_index.chunks[1].text.split()[:QUESTION_WORDS]) + "?"
    tools, (found, answered) = _call(
        server,
        {"X-API-Key": KEYS["alice"]},
        [
            ("search", {"query": "white matter infants", "k": 10}),
            ("answer", {"question": question}),
        ],
    )
    assert tools == {"search", "answer"}
    # alice: internal + engineering/everyone; never the hr documents.
    visible = {c.chunk_id for c in fake_index.chunks if c.classification in ("public", "internal")}
    visible -= {c.chunk_id for c in fake_index.chunks if "hr" in c.groups}
    assert {r["chunk_id"] for r in found["results"]} <= visible
    assert found["results"]
    assert answered["refused"] is False and answered["citations"]
    assert {p.name for p, _ in fake_index.seen} == {"alice"}
    lines = [x for x in audit_lines(api_settings) if x["event"] in ("search", "answer")]
    assert [(x["event"], x["endpoint"], x["principal"], x["auth_method"]) for x in lines] == [
        ("search", "/mcp", "alice", "api_key"),
        ("answer", "/mcp", "alice", "api_key"),
    ]
    assert lines[0]["chunk_ids"] == [r["chunk_id"] for r in found["results"]]
    metrics = httpx.get(f"{server}/metrics").text
    assert 'citewell_mcp_tool_calls_total{outcome="ok",tool="search"} 1.0' in metrics
    assert 'citewell_mcp_tool_calls_total{outcome="ok",tool="answer"} 1.0' in metrics
    assert 'citewell_http_requests_total{method="POST",route="/mcp",status="200"}' in metrics
    assert "citewell_answers_total" in metrics


def test_mcp_with_jwt_and_act_for(server, api_settings, fake_index):
    token = hs256_token(sub="carol", clearance="restricted", groups=["hr"])
    _, (found,) = _call(
        server, {"Authorization": f"Bearer {token}"}, [("search", {"query": "the", "k": 10})]
    )
    assert {r["chunk_id"] for r in found["results"]} >= {fake_index.chunks[4].chunk_id}
    # A gateway acting for frank: runs as frank, audited with both names.
    user = hs256_token(sub="frank", clearance="internal", groups=["engineering"])
    headers = {"X-API-Key": KEYS["gateway"], "X-Act-For": user}
    _, (found,) = _call(server, headers, [("search", {"query": "the", "k": 10})])
    assert fake_index.seen[-1][0].name == "frank"
    line = [x for x in audit_lines(api_settings) if x["event"] == "search"][-1]
    assert (line["principal"], line["caller"], line["endpoint"]) == (
        "frank",
        "search-gateway",
        "/mcp",
    )
    # alice may not act for anyone, over MCP either.
    with pytest.raises(Exception):  # noqa: B017
        _call(server, {"X-API-Key": KEYS["alice"], "X-Act-For": user}, [])
    assert fake_index.seen[-1][0].name == "frank"


def test_mcp_survives_a_second_lifespan(api_settings, fake_index):
    """An app's lifespan may run twice (tests, reloads); MCP's session manager runs once, so
    each run gets its own."""
    from fastapi.testclient import TestClient

    app = create_app(api_settings, fake_index)
    headers = {"Accept": "application/json, text/event-stream", "X-API-Key": KEYS["alice"]}
    for _ in range(2):
        with TestClient(app) as client:
            response = client.post("/mcp", json=INITIALIZE, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["result"]["serverInfo"]["name"] == "citewell"
    # Outside any lifespan: a clear 503, never an unauthenticated pass-through.
    response = TestClient(app).post("/mcp", json=INITIALIZE, headers=headers)
    assert response.status_code == 503


def test_mcp_get_is_refused_so_no_endless_stream_holds_the_server(server):
    """Stateless MCP has no session for a server-initiated message to go to: a GET /mcp stream
    could carry nothing, stayed open for ever, and held ``citewell serve`` from shutting down
    (uvicorn waits for open connections). The spec's answer for a server without that stream
    is 405; the mcp client reads it as "no stream" and works on."""
    headers = {"Accept": "text/event-stream", "X-API-Key": KEYS["alice"]}
    with httpx.stream("GET", f"{server}/mcp", headers=headers, timeout=10) as response:
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
    # Unauthenticated, the answer is the same 401 as for a POST.
    response = httpx.get(f"{server}/mcp", headers={"Accept": "text/event-stream"}, timeout=10)
    assert response.status_code in (401, 405)
    # The mcp client works on as before.
    tools, _ = _call(server, {"X-API-Key": KEYS["alice"]}, [])
    assert tools == {"search", "answer"}
