"""``citewell mcp --user NAME`` looks its principal up again for every tool call, as the HTTP API
does for every request: a session kept open for days must not keep serving a clearance or a
group taken away since it started, nor a user removed from the principals file. Driven by the
mcp package's own stdio client against a real ``citewell mcp`` process."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from citewell.core.models import AccessLabel
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from tests.agent.fakes import HashingEmbedder

REPO = Path(__file__).resolve().parents[2]

# ``citewell mcp`` with argv[1:], querying with the hashing embedder that built the index (one
# embedder per index; the real model would take a minute to export on 2 cores).
_MCP = """
import sys
import citewell.retrieval.service as service
from citewell.cli.main import main
from tests.agent.fakes import HashingEmbedder

service.build_embedder = lambda settings: HashingEmbedder()
sys.exit(main(["mcp", *sys.argv[1:]]))
"""

CONFIDENTIAL_AND_HR = "clearance: confidential\n    groups: [everyone, hr]"


def _index(data_dir: Path) -> None:
    everyone = AccessLabel(classification="public", groups=frozenset({"everyone"}))
    hr_only = AccessLabel(classification="confidential", groups=frozenset({"hr"}))
    docs = [
        TextDocument(
            doc_id="handbook",
            title="Payroll handbook",
            text="Payroll runs on the last working day of the month.",
            label=everyone,
        ),
        TextDocument(
            doc_id="bonus-pool",
            title="Payroll bonus pool",
            text="The payroll bonus pool for this year is 4 million euros.",
            label=hr_only,
        ),
    ]
    Ingestor(Settings(data_dir=data_dir), embedder=HashingEmbedder()).ingest_texts(
        docs, index="kb", source_name="t"
    )


def _write_principals(path: Path, erin: str | None) -> None:
    """The principals file with ``erin`` (her entry's lines) or without her. The mtime moves on
    even within the file system's clock tick, so the change is seen however fast it is made."""
    lines = ["principals:", "  frank:", "    clearance: public"]
    if erin is not None:
        lines += ["  erin:", f"    {erin}"]
    existed = path.exists()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if existed:
        later = time.time_ns() + 1_000_000
        os.utime(path, ns=(later, later))


def _audit(data_dir: Path) -> list[dict[str, Any]]:
    text = (data_dir / "audit.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def kb(tmp_path: Path) -> tuple[Path, Path]:
    """The data dir holding index ``kb`` and a principals file in which erin may read HR's
    confidential bonus pool."""
    data_dir = tmp_path / "data"
    _index(data_dir)
    principals = tmp_path / "principals.yaml"
    _write_principals(principals, CONFIDENTIAL_AND_HR)
    return data_dir, principals


@asynccontextmanager
async def _session(data_dir: Path, principals: Path) -> AsyncIterator[Client]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITEWELL_")}
    env["CITEWELL_DATA_DIR"] = str(data_dir)
    env["CITEWELL_PRINCIPALS_FILE"] = str(principals)
    env["PYTHONPATH"] = str(REPO)
    env["HF_HUB_OFFLINE"] = "1"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", _MCP, "--index", "kb", "--user", "erin"],
        env=env,
        cwd=REPO,
    )
    async with Client(params) as client:
        yield client


async def _found(client: Client) -> set[str]:
    result = await client.call_tool("search", {"query": "payroll bonus pool", "k": 5})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return {hit["doc_id"] for hit in result.structured_content["results"]}


def test_a_changed_clearance_or_group_applies_to_the_next_call_of_the_session(
    kb: tuple[Path, Path],
) -> None:
    data_dir, principals = kb

    async def scenario() -> list[set[str]]:
        seen = []
        async with _session(data_dir, principals) as client:
            seen.append(await _found(client))
            _write_principals(principals, "clearance: internal\n    groups: [everyone, hr]")
            seen.append(await _found(client))
            _write_principals(principals, CONFIDENTIAL_AND_HR)  # raised again
            seen.append(await _found(client))
            _write_principals(principals, "clearance: confidential\n    groups: [everyone]")
            seen.append(await _found(client))
        return seen

    at_start, lowered, raised, without_hr = anyio.run(scenario)
    assert at_start == {"handbook", "bonus-pool"}
    assert lowered == {"handbook"}, "a lowered clearance must apply to the session's next call"
    assert raised == {"handbook", "bonus-pool"}
    assert without_hr == {"handbook"}, "a removed group must apply to the session's next call"


def test_a_user_removed_from_the_principals_file_is_refused_and_audited(
    kb: tuple[Path, Path],
) -> None:
    data_dir, principals = kb

    async def scenario() -> tuple[set[str], bool, str, set[str]]:
        async with _session(data_dir, principals) as client:
            before = await _found(client)
            _write_principals(principals, None)
            refused = await client.call_tool("search", {"query": "payroll bonus pool"})
            message = " ".join(getattr(c, "text", "") for c in refused.content)
            _write_principals(principals, CONFIDENTIAL_AND_HR)  # back: served again
            after = await _found(client)
        return before, refused.is_error, message, after

    before, is_error, message, after = anyio.run(scenario)
    assert before == {"handbook", "bonus-pool"}
    assert is_error, f"a removed user's call must be refused, got: {message}"
    assert "'erin'" in message and "principals file" in message, message
    assert after == {"handbook", "bonus-pool"}
    lines = [
        (x["event"], x["outcome"], x.get("principal"), x.get("caller")) for x in _audit(data_dir)
    ]
    assert lines == [
        ("search", "ok", "erin", None),
        ("auth", "denied", None, "erin"),
        ("search", "ok", "erin", None),
    ]
    refusal = _audit(data_dir)[1]
    assert refusal["endpoint"] == "mcp:stdio" and refusal["reason"] == "principal_unknown"
    assert refusal["auth_method"] == "local"
