"""MCP tools in process: list tools, call search and answer as the principal the server was
started for; every call is audited and counted like a REST call."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from citewell.agent.agent import Agent
from citewell.agent.backends import ExtractiveAnswerer
from citewell.agent.models import AgentConfig
from citewell.agent.scoring import SentenceScorer
from citewell.api.audit import AuditLog
from citewell.api.auth import AuthContext
from citewell.api.mcp_server import STDIO_ENDPOINT, stdio_mcp_server
from citewell.api.metrics import ApiMetrics
from citewell.api.operations import Operations
from citewell.core.models import Principal
from citewell.core.settings import Settings
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
PRINCIPAL = Principal(name="mcp-bot", clearance="internal", groups=frozenset())


def _payload(result) -> dict:
    if result.structured_content is not None:
        return dict(result.structured_content)
    return json.loads(result.content[0].text)


def _audit(settings: Settings) -> list[dict[str, Any]]:
    path = settings.data_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def setup(make_settings: Callable[..., Settings]):
    settings = make_settings()
    search = FakeSearch(CHUNKS)
    agent = Agent(
        search,
        SentenceScorer(HashingEmbedder()),
        ExtractiveAnswerer(),
        AgentConfig(refusal_threshold=0.3),
    )
    metrics = ApiMetrics()
    operations = Operations(
        settings, search, lambda: agent, AuditLog(settings.data_dir / "audit.jsonl"), metrics
    )
    server = stdio_mcp_server(operations, AuthContext(principal=PRINCIPAL, method="local"))
    return settings, search, metrics, server


def test_mcp_search_and_answer_round_trip(setup):
    settings, search, metrics, server = setup

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
    assert "timings" not in answered  # server timings are for operators only (SECURITY.md)
    assert {p.name for p, _ in search.requests} == {"mcp-bot"}
    lines = _audit(settings)
    assert [(x["event"], x["endpoint"], x["principal"]) for x in lines] == [
        ("search", STDIO_ENDPOINT, "mcp-bot"),
        ("answer", STDIO_ENDPOINT, "mcp-bot"),
    ]
    assert lines[0]["auth_method"] == "local"
    text = metrics.render().decode()
    assert 'citewell_mcp_tool_calls_total{outcome="ok",tool="search"} 1.0' in text
    assert 'citewell_answers_total{backend="extractive",outcome="answered"} 1.0' in text


def test_mcp_search_passes_prefer_recent(setup):
    _, search, _, server = setup

    async def scenario() -> dict:
        async with Client(server) as client:
            arguments = {"query": "Normans", "prefer_recent": True}
            return _payload(await client.call_tool("search", arguments))

    found = anyio.run(scenario)
    assert search.requests[-1][1].prefer_recent is True
    assert found["results"] and "document_date" in found["results"][0]


def test_mcp_tool_errors_are_clear_and_leak_nothing(setup):
    settings, _, metrics, server = setup

    async def scenario() -> list[str]:
        async with Client(server) as client:
            out = []
            for args in ({"query": "x", "mode": "nope"}, {"query": "x" * 100_000}):
                try:
                    result = await client.call_tool("search", args)
                except MCPError as exc:
                    out.append(str(exc))
                    continue
                assert result.is_error
                out.append(" ".join(getattr(c, "text", "") for c in result.content))
            return out

    bad_mode, too_long = anyio.run(scenario)
    assert "mode must be one of" in bad_mode
    assert "longer than" in too_long
    assert _audit(settings)[-1]["outcome"] == "rejected"
    assert 'citewell_mcp_tool_calls_total{outcome="422",tool="search"} 2.0' in (
        metrics.render().decode()
    )


def test_mcp_search_with_an_empty_query_is_a_clear_error(setup, caplog):
    """An empty query reached the search request model unchecked: the tool answered "internal
    error" (counted as a 500) and a traceback was logged, for what is the caller's bad input."""
    settings, search, metrics, server = setup

    async def scenario() -> list[str]:
        async with Client(server) as client:
            out = []
            for query in ("", "   "):
                result = await client.call_tool("search", {"query": query})
                assert result.is_error
                out.append(" ".join(getattr(c, "text", "") for c in result.content))
            return out

    with caplog.at_level("DEBUG"):
        messages = anyio.run(scenario)
    assert all("query is empty" in m for m in messages), messages
    assert search.requests == []
    assert [(x["outcome"], x["reason"]) for x in _audit(settings)] == [
        ("rejected", "query_empty"),
        ("rejected", "query_empty"),
    ]
    text = metrics.render().decode()
    assert 'citewell_mcp_tool_calls_total{outcome="422",tool="search"} 2.0' in text
    assert "api.unhandled_error" not in caplog.text and "Traceback" not in caplog.text


def test_mcp_answer_with_a_blank_question_is_rejected_not_an_error(setup):
    """A blank question was audited as an "error" of the agent, not the caller's rejected input."""
    settings, _search, _metrics, server = setup

    async def scenario() -> str:
        async with Client(server) as client:
            result = await client.call_tool("answer", {"question": "  "})
            assert result.is_error
            return " ".join(getattr(c, "text", "") for c in result.content)

    assert "question is empty" in anyio.run(scenario)
    assert [(x["outcome"], x["reason"]) for x in _audit(settings)] == [("rejected", "query_empty")]


def test_a_tool_argument_claiming_access_is_refused_not_ignored(setup):
    """An agent that passes ``clearance`` or ``groups`` to a tool believes it can widen its
    access; silently ignoring them answered as the caller while the agent read the result as
    the wider search. Refused with the reason, as the OpenAI route and /v1/search refuse it."""
    settings, search, _, server = setup

    async def scenario() -> list[Any]:
        async with Client(server) as client:
            return [
                await client.call_tool(
                    "search", {"query": "Normans payroll", "clearance": "restricted"}
                ),
                await client.call_tool(
                    "answer", {"question": "What is the bonus pool?", "groups": ["hr"]}
                ),
            ]

    results = anyio.run(scenario)
    for result, field in zip(results, ("clearance", "groups"), strict=True):
        assert result.is_error, result.content
        assert f"{field}: access comes from the credential" in result.content[0].text
    assert search.requests == []
    assert _audit(settings) == []
