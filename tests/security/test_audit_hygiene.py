"""Audit hygiene: after a full run (CLI ingest, API search and answer with API keys, JWTs and
act-for, an LLM backend with an API key, CLI search and ask, an answers evaluation) with every
logger at DEBUG, no log line and no audit line holds chunk text, an API key, a JWT, the JWT
secret or the LLM key."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from fastapi.testclient import TestClient

from citewell.api.main import create_app
from citewell.cli.main import main as cli_main
from citewell.core.logging import JsonFormatter
from citewell.core.models import Principal
from citewell.core.settings import Settings
from citewell.evaluation.answers_eval import evaluate_answers
from citewell.evaluation.golden_set import GoldenQuestion
from citewell.retrieval.principals import hash_api_key
from citewell.retrieval.service import ServingIndex
from tests.agent.openai_server import chat_server

pytestmark = pytest.mark.slow

JWT_SECRET = "hygiene-jwt-secret-6f1d2a9c4b7e8f0a1b2c"
LLM_KEY = "sk-hygiene-llm-4c1f9e7a2b"
KEYS = {"alice": "alice-hygiene-key-91ab3", "gateway": "gateway-hygiene-key-77de0"}
WRONG_KEY = "wrong-hygiene-key-00f1e"
# Distinctive sentences: none of them may appear in any log line.
SENTENCES = {
    "public/press.md": "Harbor Logistics cut coastal fuel use by twelve percent.",
    "hr/leave.md": "Employees receive twenty weeks of paid parental leave through the portal.",
    "secret/ledger.md": "The Tilbury Shipping acquisition closes on the ninth of May.",
}
LABELS = """\
rules:
  - {match: "public/**", classification: public, groups: [everyone]}
  - {match: "hr/**", classification: confidential, groups: [hr]}
  - {match: "secret/**", classification: restricted, groups: [security]}
"""
QUESTIONS = (
    "How much fuel did Route Planner save?",
    "How many weeks of parental leave do employees receive?",
    "When does the Tilbury Shipping acquisition close?",
)


def token(sub: str, clearance: str, groups: list[str]) -> str:
    claims = {"sub": sub, "clearance": clearance, "groups": groups, "exp": int(time.time()) + 600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Every record at DEBUG, formatted as in production, into one file."""
    path = tmp_path / "debug.jsonl"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    saved = root.level
    # Entry points quiet some libraries; undo that so their DEBUG output is scanned too.
    quieted = {
        name: logging.getLogger(name).level
        for name in ("httpx", "httpcore", "urllib3", "sentence_transformers", "unstructured")
    }
    for name in quieted:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)
        handler.close()


def test_no_text_or_credentials_in_any_log_line(
    tmp_path: Path,
    debug_log: Path,
    embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "kb"
    (folder).mkdir()
    (folder / "citewell.labels.yaml").write_text(LABELS)
    for relative, sentence in SENTENCES.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {relative}\n\n{sentence} Further detail follows in the appendix.\n")
    principals = {
        "principals": {
            "alice": {
                "clearance": "confidential",
                "groups": ["hr"],
                "api_key_sha256": hash_api_key(KEYS["alice"]),
            },
            "gateway": {
                "clearance": "restricted",
                "groups": ["service"],
                "api_key_sha256": hash_api_key(KEYS["gateway"]),
                "can_act_for": True,
            },
        }
    }
    (tmp_path / "principals.yaml").write_text(yaml.safe_dump(principals))
    data_dir = tmp_path / "data"
    # The CLI reads Settings from the environment, as in production; it must not replace the
    # DEBUG capture handler with its own configuration.
    monkeypatch.setenv("CITEWELL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CITEWELL_INDEX", "hygiene")
    monkeypatch.setenv("CITEWELL_PRINCIPALS_FILE", str(tmp_path / "principals.yaml"))
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    assert cli_main(["-v", "ingest", str(folder), "--json"]) == 0

    with chat_server(lambda body: "Route Planner cut fuel use by twelve percent [1].") as llm:
        settings = Settings(
            data_dir=data_dir,
            index="hygiene",
            principals_file=tmp_path / "principals.yaml",
            jwt_secret=JWT_SECRET,
            llm_base_url=llm.base_url,
            llm_model="tiny",
            llm_api_key=LLM_KEY,
            audit_log_queries=True,
        )
        service = ServingIndex(settings, embedder=embedder)
        user_token = token("bob", "public", ["everyone"])
        act_token = token("carol", "confidential", ["hr"])
        auths = [
            {"X-API-Key": KEYS["alice"]},
            {"Authorization": f"Bearer {user_token}"},
            {"X-API-Key": KEYS["gateway"], "X-Act-For": act_token},
            {"X-API-Key": WRONG_KEY},
            {"Authorization": f"Bearer {user_token}x"},
        ]
        try:
            with TestClient(create_app(settings, service)) as client:
                for headers in auths:
                    for question in QUESTIONS:
                        client.post("/v1/search", json={"query": question}, headers=headers)
                        client.post("/v1/answer", json={"question": question}, headers=headers)
            assert llm.requests, "the LLM backend must have been used"
            report = evaluate_answers(
                settings,
                Principal(name="owner", clearance="restricted", groups=frozenset({"security"})),
                [GoldenQuestion(question=q) for q in QUESTIONS],
                service=service,
                embedder=embedder,
            )
            assert report.n_questions == len(QUESTIONS)
        finally:
            service.close()

    for question in QUESTIONS:
        assert cli_main(["-v", "search", question, "--user", "alice", "--mode", "bm25"]) == 0
    assert (
        cli_main(["-v", "ask", QUESTIONS[1], "--clearance", "confidential", "--groups", "hr"]) == 0
    )
    printed = capsys.readouterr().out
    assert SENTENCES["hr/leave.md"] in printed  # the CLI shows text to the user, on stdout only

    audit = (data_dir / "audit.jsonl").read_text(encoding="utf-8")
    logs = debug_log.read_text(encoding="utf-8")
    assert '"event": "agent.answer"' in logs and "index.loaded" in logs  # the capture worked
    assert ('"event":"answer"' in audit and '"outcome":"denied"' in audit) or "denied" in audit
    secrets = [
        JWT_SECRET,
        LLM_KEY,
        WRONG_KEY,
        user_token,
        act_token,
        *KEYS.values(),
        *SENTENCES.values(),
        # A sentence fragment long enough to be text, short enough to survive truncation.
        *(s[:40] for s in SENTENCES.values()),
    ]
    for name, content in (("debug log", logs), ("audit log", audit)):
        for number, line in enumerate(content.splitlines(), start=1):
            found = [s[:24] for s in secrets if s in line]
            assert not found, f"{name} line {number} holds {found}: {line[:300]}"
