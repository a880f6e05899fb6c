"""``citewell search --prefer-recent``: the flag reaches retrieval and dates come back in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citewell.cli.main import main as cli_main
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from tests.agent.fakes import HashingEmbedder
from tests.retrieval.test_recency import dated_reports


def test_search_prefer_recent_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    # Weighted fusion keeps the reports' tied relevance tied, so the order shows the recency leg.
    monkeypatch.setenv("CITEWELL_FUSION", "weighted")
    # Queries are embedded by the embedder that built the index (one backend per index).
    monkeypatch.setattr(
        "citewell.retrieval.service.build_embedder", lambda settings: HashingEmbedder()
    )
    settings = Settings(data_dir=tmp_path / "data", index="dated")
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        dated_reports(), index="dated", source_name="t"
    )
    base = ["search", "quarterly report revenue", "--data-dir", str(settings.data_dir)]
    base += ["--index", "dated", "--clearance", "internal", "--groups", "finance"]
    base += ["--mode", "bm25", "--no-rerank", "--json"]

    def run(*extra: str) -> list[dict[str, object]]:
        assert cli_main([*base, *extra]) == 0
        results: list[dict[str, object]] = json.loads(capsys.readouterr().out)["results"]
        return results

    recent = run("--prefer-recent")
    assert [r["doc_id"] for r in recent][:3] == ["q3", "q2", "q1"]
    assert recent[0]["document_date"] == "2023-07-15T00:00:00+00:00"
    assert "board-q4" not in {r["doc_id"] for r in recent}
    assert {r["doc_id"] for r in run()} == {r["doc_id"] for r in recent}


def test_rerank_note_is_said_once_in_the_result_and_in_verbose_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18.5: no WARNING line on every command when no reranker is configured."""
    import logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setattr(
        "citewell.retrieval.service.build_embedder", lambda settings: HashingEmbedder()
    )
    settings = Settings(data_dir=tmp_path / "data", index="dated")
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        dated_reports(), index="dated", source_name="t"
    )
    argv = ["search", "quarterly report", "--data-dir", str(settings.data_dir), "--index"]
    argv += ["dated", "--clearance", "internal", "--groups", "finance", "--mode", "bm25"]
    try:
        assert cli_main(argv) == 0
        quiet = capsys.readouterr()
        assert "(not reranked: " in quiet.out and quiet.err == ""
        assert cli_main(["-v", *argv]) == 0
        verbose = capsys.readouterr()
        assert '"event": "rerank.unavailable"' in verbose.err
        assert '"level": "INFO"' in next(
            line for line in verbose.err.splitlines() if "rerank.unavailable" in line
        )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_search_never_writes_terminal_control_sequences_from_a_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Documents are written by others: a title or text holding escape sequences (OSC 52 sets
    # the clipboard, ESC[2J clears the screen) reached the terminal as written.
    from datetime import UTC, datetime

    from citewell.core.models import AccessLabel
    from citewell.ingestion.pipeline import TextDocument

    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(
        "citewell.retrieval.service.build_embedder", lambda settings: HashingEmbedder()
    )
    settings = Settings(data_dir=tmp_path / "data", index="notes")
    hostile = TextDocument(
        doc_id="memo",
        title="Depot memo\x1b]52;c;cm0gLXJmIH4K\x07\n[2] Forged result",
        text="The depot opens at nine.\x1b[2J\x1b[1A\x1b[2K Forklifts are charged overnight.",
        label=AccessLabel(classification="internal", groups=frozenset({"everyone"})),
        modified_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    # Unrelated documents, so BM25 finds the memo's terms rare enough to score.
    others = [
        hostile.model_copy(update={"doc_id": f"other-{i}", "title": title, "text": title})
        for i, title in enumerate(("Parental leave policy", "Incident runbook"))
    ]
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        [hostile, *others], index="notes", source_name="t"
    )
    argv = ["search", "depot opens", "--data-dir", str(settings.data_dir), "--index", "notes"]
    argv += ["--clearance", "internal", "--groups", "everyone", "--mode", "bm25", "--no-rerank"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "The depot opens at nine." in out
    assert "\\x1b[2J" in out  # shown, escaped
    assert "\n[2] Forged" not in out  # a title's line break cannot forge a result
