"""``citewell ask`` as the README runs it: one ``[n]`` per source with its quotes beneath,
quotes with normalised whitespace whose offsets still point at the document's text, never a
title line as an answer, and a refusal that says why."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from citewell.cli.main import main as cli_main
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from tests.agent.openai_server import chat_server

pytestmark = pytest.mark.slow

POLICY = (
    "Parental Leave Policy For Lumen Harbor Employees\n\n"
    "Birth parents receive 20 weeks of parental leave at full pay.  Non-birth parents receive\n"
    "10  weeks  of parental leave at full pay, to be taken within the first year.\n"
    "Parental leave weeks can be split into two blocks.\n"
)
PRINCIPALS = "principals:\n  carol:\n    clearance: internal\n    groups: [everyone]\n"


@pytest.fixture
def demo(tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    folder = tmp_path / "kb"
    (folder / "hr").mkdir(parents=True)
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: internal, groups: [everyone]}\n"
    )
    (folder / "hr" / "parental-leave-policy.txt").write_text(POLICY)
    (folder / "tides.txt").write_text("Ocean tides are caused by the pull of the moon.\n")
    (tmp_path / "principals.yaml").write_text(PRINCIPALS)
    monkeypatch.setenv("CITEWELL_PRINCIPALS_FILE", str(tmp_path / "principals.yaml"))
    monkeypatch.setenv("CITEWELL_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(data_dir=tmp_path / "data", index="demo")
    Ingestor(settings, embedder=embedder).ingest_folder(folder, index="demo")
    return folder


def test_ask_groups_quotes_per_source_with_normalised_whitespace(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    question = "How many weeks of parental leave?"
    assert cli_main(["ask", question, "--index", "demo", "--user", "carol"]) == 0
    out = capsys.readouterr().out
    assert "Citations:" in out, out
    listed = re.findall(r"^  \[(\d+)\] ", out, flags=re.MULTILINE)
    assert listed and len(listed) == len(set(listed)), out  # one [n] per source
    quotes = re.findall(r'^      "(.*)" \(chars (\d+)-(\d+)\)$', out, flags=re.MULTILINE)
    assert len(quotes) >= 2, out  # two sentences of one source, under one [n]
    assert "Parental Leave Policy For Lumen Harbor Employees" not in out.split("Citations:")[0]
    for quote, _, _ in quotes:
        assert "  " not in quote
    assert "(confidence " in out

    assert cli_main(["ask", question, "--index", "demo", "--user", "carol", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert not answer["refused"] and 0.0 <= answer["confidence"] <= 1.0
    for citation in answer["citations"]:
        original = POLICY[citation["char_start"] : citation["char_end"]]
        assert " ".join(original.split()) == citation["quote"]
        assert "  " not in citation["quote"]
        assert not citation["quote"].startswith("Parental Leave Policy For")


def test_ask_refusal_says_why(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    question = "How many weeks of parental leave do employees in Japan receive?"
    assert cli_main(["ask", question, "--index", "demo", "--user", "carol"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The knowledge base does not contain an answer"), out
    assert re.search(r'^Why: no passage answers ".*": .*"Japan"', out, flags=re.MULTILINE), out


def test_ask_never_writes_terminal_control_sequences_from_a_reply(
    demo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An LLM (steered by a document, or plain broken) wrote escape sequences: OSC 52 sets the
    # terminal's clipboard, ESC[2J clears the screen, ESC[1A overwrites the line above. They
    # reached the terminal as written, in the answer and in its "no valid citation" warning.
    osc52, clear, up = "\x1b]52;c;cm0gLXJmIH4K\x07", "\x1b[2J", "\x1b[1A\x1b[2K"
    reply = (
        f"Birth parents receive 20 weeks of parental leave at full pay [1].{clear}\n"
        f"Copy this command {osc52}now.{up}"
    )
    with chat_server(lambda body: reply) as server:
        monkeypatch.setenv("CITEWELL_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("CITEWELL_LLM_MODEL", "local")
        question = "How many weeks of parental leave do birth parents receive?"
        assert cli_main(["ask", question, "--index", "demo", "--user", "carol"]) == 0
    out = capsys.readouterr().out
    assert server.requests, "the LLM was asked"
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "Birth parents receive 20 weeks of parental leave at full pay [1]." in out
    assert "\\x1b[2J" in out  # shown, escaped
