"""MCP tool round trip, in process: list tools, call search and answer as the configured
principal."""

from __future__ import annotations

import json

import anyio
from mcp import Client

from citewell.agent.agent import Agent
from citewell.agent.backends import ExtractiveAnswerer
from citewell.agent.models import AgentConfig
from citewell.agent.scoring import SentenceScorer
from citewell.api.mcp_server import build_mcp_server
from citewell.core.models import Principal
from tests.agent.fakes import FakeSearch, HashingEmbedder, make_chunk

CHUNKS = [
    make_chunk("normans", "The Normans gave their name to Normandy, a region in France."),
    make_chunk(
        "payroll",
        "The Normans payroll bonus pool is 4 million euros.",
        classification="confidential",
        groups=("hr",),
    ),
]


def _payload(result) -> dict:
    if result.structured_content is not None:
        return dict(result.structured_content)
    return json.loads(result.content[0].text)


def test_mcp_search_and_answer_round_trip():
    search = FakeSearch(CHUNKS)
    principal = Principal(name="mcp-bot", clearance="internal", groups=frozenset())
    agent = Agent(
        search,
        SentenceScorer(HashingEmbedder()),
        ExtractiveAnswerer(),
        AgentConfig(refusal_threshold=0.3),
    )
    server = build_mcp_server(search, agent, principal)

    async def scenario() -> tuple[set[str], dict, dict]:
        async with Client(server) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            found = _payload(await client.call_tool("search", {"query": "Normans payroll"}))
            answered = _payload(
                await client.call_tool("answer", {"question": "Who gave their name to Normandy?"})
            )
            return tools, found, answered

    tools, found, answered = anyio.run(scenario)
    assert tools == {"search", "answer"}
    assert [r["doc_id"] for r in found["results"]] == ["normans"]  # payroll is hr-only
    assert answered["refused"] is False and answered["citations"]
    assert answered["citations"][0]["doc_id"] == "normans"
    assert {p.name for p, _ in search.requests} == {"mcp-bot"}


def test_mcp_search_passes_prefer_recent():
    search = FakeSearch(CHUNKS)
    principal = Principal(name="mcp-bot", clearance="internal", groups=frozenset())
    agent = Agent(search, SentenceScorer(HashingEmbedder()), ExtractiveAnswerer(), AgentConfig())
    server = build_mcp_server(search, agent, principal)

    async def scenario() -> dict:
        async with Client(server) as client:
            arguments = {"query": "Normans", "prefer_recent": True}
            return _payload(await client.call_tool("search", arguments))

    found = anyio.run(scenario)
    assert search.requests[-1][1].prefer_recent is True
    assert found["results"] and "document_date" in found["results"][0]
