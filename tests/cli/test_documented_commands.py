"""Every shell command in README.md, docs/*.md and examples/README.md runs as written (issue 18's
"done means"), in order, in one shell session per document (see docs_commands.py). A block the
tests cannot run says why in the document itself (``<!-- docs-test: skip REASON -->``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.cli.docs_commands import (
    REPO,
    CommandRun,
    describe_failure,
    run_document,
    scratch_checkout,
    shell_blocks,
)

# Every document with a fenced shell block; the README and the guides must keep theirs.
DOCUMENTS = [
    REPO / "README.md",
    *sorted(p for p in (REPO / "docs").glob("*.md") if "```bash" in p.read_text(encoding="utf-8")),
    REPO / "examples" / "README.md",
]
REQUIRED = {
    REPO / "README.md",
    REPO / "docs" / "data-engineers.md",
    REPO / "examples" / "README.md",
}


def test_the_guides_are_checked() -> None:
    assert set(DOCUMENTS) >= REQUIRED


def _find(runs: list[CommandRun], prefix: str) -> CommandRun:
    return next(run for run in runs if run.command.startswith(prefix))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shell_block_runs_or_says_why_not(document: Path) -> None:
    blocks = shell_blocks(document)
    assert blocks, f"{document} has no shell block"
    for block in blocks:
        assert block.commands, f"{document}:{block.line}: empty block"
        if block.skip_reason is not None:
            assert len(block.skip_reason) > 20, f"{document}:{block.line}: say why it is skipped"


@dataclass(frozen=True)
class QuickTour:
    checkout: Path
    runs: list[CommandRun]


@pytest.fixture(scope="module")
def quick_tour(tmp_path_factory: pytest.TempPathFactory) -> QuickTour:
    """The README's commands, run once as written; the tests below read what they left (its
    own model export: a new user's first command has none)."""
    checkout = scratch_checkout(tmp_path_factory.mktemp("tour") / "checkout")
    return QuickTour(checkout, run_document(REPO / "README.md", checkout, {}))


@pytest.mark.slow
def test_readme_quick_tour_runs_as_written(quick_tour: QuickTour) -> None:
    runs = quick_tour.runs
    assert all(run.status == 0 for run in runs), describe_failure(runs)
    # The demo's point: the public user is told the knowledge base holds no answer for them
    # (never a near-miss sentence), the HR reader gets the policy's figure, cited.
    demo = _find(runs, "citewell demo").stdout
    alice, carol = demo.split("== As alice")[1].split("== As carol")
    assert "does not contain an answer" in alice and "20 weeks" not in alice, alice
    assert "Birth parents receive 20 weeks" in carol and "[1]" in carol, carol
    # 18.3: the refresh right after the demo adds and changes nothing.
    refresh = _find(runs, "citewell ingest examples/kb --index demo")
    counts = {
        " ".join(line.split()[:-1]): line.split()[-1]
        for line in refresh.stdout.splitlines()[1:]
        if line.startswith("  ")
    }
    assert (counts["added"], counts["updated"], counts["unchanged"]) == ("0", "0", "18"), counts
    # 18.6: a line at once saying what will be read (no bars: stderr is not a terminal).
    assert refresh.stderr.startswith("reading 18 files from "), refresh.stderr
    assert "\r" not in refresh.stderr
    # 18.5: no warning noise on commands; the result says it was not reranked.
    for prefix in ("citewell search", "citewell ask"):
        for run in (r for r in runs if r.command.startswith(prefix)):
            assert run.stderr == "", (run.command, run.stderr)
    plain_search = _find(runs, 'citewell search "parental leave" --index demo --user carol')
    assert "not reranked" in plain_search.stdout
    as_json = json.loads(
        _find(runs, 'citewell search "parental leave" --index demo --clear').stdout
    )
    assert as_json["reranked"] is False and as_json["rerank_note"]
    serve = _find(runs, "citewell serve --index demo")
    assert "index demo version v" in serve.stdout and "/docs" in serve.stdout, serve.stdout
    curl = _find(runs, "curl -s -H 'X-API-Key: demo-carol-key'")
    assert json.loads(curl.stdout)["results"], curl.stdout
    # 18.2: the OpenAI-compatible chat, with an API key as the bearer token.
    chat = json.loads(_find(runs, "curl -s http://127.0.0.1:8000/v1/chat/completions").stdout)
    content = chat["choices"][0]["message"]["content"]
    assert chat["model"] == "demo" and chat["refused"] is False, chat
    assert "[1]" in content and "\nSources:\n[1] " in content, content
    assert {"title", "page", "source", "quote"} <= set(chat["citations"][0])
    # 18.8: where the report was written.
    report = _find(runs, "citewell eval answers")
    assert "report written to " in report.stdout and (quick_tour.checkout / "report.html").is_file()


def _readme_line(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix``, split as a shell would."""
    readme = (REPO / "README.md").read_text()
    lines = [m.group(1) for m in re.finditer(rf"^({re.escape(prefix)}.*)$", readme, re.M)]
    assert lines, f"README has no line starting with {prefix!r}"
    words = shlex.split(lines[0].split("#")[0])
    assert words[0] == "citewell"
    return words[1:]


@pytest.mark.slow
def test_readme_mcp_line_serves_the_quick_tour_index(quick_tour: QuickTour) -> None:
    """Agents as the README documents them, after the quick tour: ``citewell mcp`` driven by
    the mcp package's own stdio client, on the index the tour's ``citewell demo`` built (the
    tour's own run of the line has no client on its stdin)."""
    demo = _find(quick_tour.runs, "citewell demo")
    assert demo.status == 0, describe_failure(quick_tour.runs)
    data_dir = quick_tour.checkout / ".citewell"
    # No CITEWELL_MODEL_CACHE_DIR: the server loads the export the tour made in its data dir.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITEWELL_")}
    env["CITEWELL_DATA_DIR"] = str(data_dir)
    env["CITEWELL_PRINCIPALS_FILE"] = "examples/principals.yaml"  # as the quick tour exports it
    env["PYTHONPATH"] = str(REPO)
    # `citewell` is `python -m citewell.cli.main` from the working tree (the console script
    # would run whatever copy is installed).
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "citewell.cli.main", *_readme_line("citewell mcp ")],
        env=env,
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
    audit = (data_dir / "audit.jsonl").read_text().splitlines()
    assert any('"endpoint":"mcp:stdio"' in line and '"principal":"carol"' in line for line in audit)
