"""Every shell command in README.md, docs/*.md and examples/README.md runs as written (issue 18's
"done means"), in order, in one shell session per document (see docs_commands.py). A block the
tests cannot run says why in the document itself (``<!-- docs-test: skip REASON -->``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.docs_commands import (
    REPO,
    CommandRun,
    describe_failure,
    run_document,
    scratch_checkout,
    shared_model_cache,
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


@pytest.mark.slow
def test_readme_quick_tour_runs_as_written(tmp_path: Path) -> None:
    runs = run_document(REPO / "README.md", scratch_checkout(tmp_path / "checkout"), {})
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
    assert (
        "report written to " in report.stdout and (tmp_path / "checkout" / "report.html").is_file()
    )


@pytest.mark.slow
def test_examples_readme_runs_as_written(tmp_path: Path) -> None:
    runs = run_document(
        REPO / "examples" / "README.md", scratch_checkout(tmp_path / "c"), shared_model_cache()
    )
    assert all(run.status == 0 for run in runs), describe_failure(runs)


@pytest.mark.slow
def test_data_engineers_guide_runs_as_written(tmp_path: Path) -> None:
    runs = run_document(
        REPO / "docs" / "data-engineers.md",
        scratch_checkout(tmp_path / "checkout"),
        shared_model_cache(),
    )
    assert all(run.status == 0 for run in runs), describe_failure(runs)
    listed = _find(runs, "airflow dags list")
    for dag_id in ("citewell_refresh_kb", "citewell_rebuild_kb", "citewell_evaluate_kb"):
        assert dag_id in listed.stdout, listed.stdout
    versions = _find(runs, "citewell index versions --index demo")
    assert "v000002" in versions.stdout, versions.stdout
