"""``citewell ingest`` end to end over a folder of hostile files: each is reported as failed with
its reason and the run completes, indexing the good documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardening.test_input_limits import docx_like
from tests.security.hostile_files import make_zip

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LABELS = 'rules:\n  - {match: "**", classification: public, groups: [everyone]}\n'


def test_ingest_reports_hostile_files_and_indexes_the_rest(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("payroll figures", encoding="utf-8")
    (outside / "steal.labels.yaml").write_text("classification: public\n", encoding="utf-8")
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (kb / "good.md").write_text("# Berths\n\nCranes load vessels at berth four.", "utf-8")
    (kb / "café 📄.md").write_text("# Café\n\nThe canteen opens at eight.", "utf-8")
    (kb / "bomb.docx").write_bytes(make_zip(docx_like(b"\0" * (8 * 1024 * 1024))))
    (kb / "huge.txt").write_bytes(b"x" * 100_000)
    (kb / "link.txt").symlink_to(outside / "secret.txt")
    (kb / "labelled.txt").write_text("Shift rota for the depot.", encoding="utf-8")
    (kb / "labelled.txt.labels.yaml").symlink_to(outside / "steal.labels.yaml")

    env = dict(
        os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), CITEWELL_MAX_FILE_BYTES="65536"
    )
    env.pop("CITEWELL_QDRANT_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "citewell.cli.main", "ingest", str(kb), "--data-dir",
         str(tmp_path / "data"), "--source-name", "kb", "--json"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert sorted(report["added"]) == ["café 📄.md", "good.md"]
    reasons = {Path(f["source_uri"]).name: f["reason"] for f in report["failed"]}
    assert reasons["bomb.docx"].startswith("rejected: zip bomb")
    assert reasons["huge.txt"] == "file too large (100000 bytes > 65536)"
    assert reasons["link.txt"] == "symlink not followed"
    assert "sidecar must not be a symlink" in reasons["labelled.txt"]
    assert "payroll" not in done.stdout + done.stderr
