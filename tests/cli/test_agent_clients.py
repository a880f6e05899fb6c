"""Agents as the README documents them, after the quick tour's ``citewell demo``:
``citewell mcp`` driven by the mcp package's own stdio client (the README's chat-completions
``curl`` runs in tests/cli/test_documented_commands.py). Also a clear failure at start when the
index is missing (MCP used to start and then fail every call)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.cli.docs_commands import shared_model_cache

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def _cli(*args: str) -> list[str]:
    # `citewell` is `python -m citewell.cli.main` from the working tree (the console script
    # would run whatever copy is installed).
    return [sys.executable, "-m", "citewell.cli.main", *args]


def _readme_line(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix``, split as a shell would."""
    lines = [
        m.group(1) for m in re.finditer(rf"^({re.escape(prefix)}.*)$", README.read_text(), re.M)
    ]
    assert lines, f"README has no line starting with {prefix!r}"
    words = shlex.split(lines[0].split("#")[0])
    assert words[0] == "citewell"
    return words[1:]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITEWELL_")}
    env.update(shared_model_cache())  # the quick tour's own first export is tested elsewhere
    env["CITEWELL_DATA_DIR"] = str(data_dir)
    env["CITEWELL_PRINCIPALS_FILE"] = "examples/principals.yaml"  # as the quick tour exports it
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The quick tour's first step, `citewell demo`, into a fresh data dir."""
    data_dir = tmp_path_factory.mktemp("tour") / "data"
    done = subprocess.run(
        _cli("demo"), cwd=REPO, env=_env(data_dir), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    yield data_dir


@pytest.mark.slow
def test_readme_mcp_line_serves_the_quick_tour_index(demo_data: Path) -> None:
    args = _readme_line("citewell mcp ")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "citewell.cli.main", *args],
        env=_env(demo_data),
        cwd=REPO,
    )

    async def scenario() -> tuple[set[str], dict, dict]:
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            found = await client.call_tool("search", {"query": "parental leave", "k": 5})
            answered = await client.call_tool(
                "answer", {"question": "How many weeks of parental leave?"}
            )
            assert not found.is_error, found.content
            assert not answered.is_error, answered.content
            assert found.structured_content is not None
            assert answered.structured_content is not None
            return tools, dict(found.structured_content), dict(answered.structured_content)

    tools, found, answered = anyio.run(scenario)
    assert tools == {"search", "answer"}
    assert found["results"], "the demo index holds parental-leave documents carol may see"
    assert answered["refused"] is False and answered["citations"], answered
    audit = (demo_data / "audit.jsonl").read_text().splitlines()
    assert any('"endpoint":"mcp:stdio"' in line and '"principal":"carol"' in line for line in audit)


def _mcp_refused_at_start(data_dir: Path, *args: str) -> str:
    """Start ``citewell mcp --user carol ARGS``; it must exit 2 at once. Returns its stderr."""
    done = subprocess.run(
        _cli("mcp", "--user", "carol", *args),
        cwd=REPO,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    return done.stderr


def test_mcp_fails_at_start_when_the_index_is_missing(tmp_path: Path) -> None:
    (tmp_path / "data" / "indexes" / "demo").mkdir(parents=True)
    stderr = _mcp_refused_at_start(tmp_path / "data")
    assert "index 'default' has no published version" in stderr
    assert "demo" in stderr and "--index" in stderr
    assert "Traceback" not in stderr


def test_mcp_opens_no_http_listener(tmp_path: Path) -> None:
    stderr = _mcp_refused_at_start(tmp_path / "data", "--transport", "http")
    assert "/mcp" in stderr and "citewell serve" in stderr
