"""Two ``citewell ingest`` runs at once, as real processes: the source name is checked before
the write lock is taken, so a run that checked before the other published must check again
under the lock (one folder is one source, one source is one folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citewell.cli.main import main
from citewell.core.settings import Settings
from citewell.retrieval.index import open_version
from tests.agent.fakes import HashingEmbedder

REPO = Path(__file__).resolve().parents[2]

# ``citewell ingest`` with argv[2:]; once it has checked the source name (before it takes the
# write lock) it writes "checked" into the folder argv[1] and waits there for "go".
_INGEST = """
import json, sys, time
from pathlib import Path
from citewell.cli.main import main
from citewell.ingestion.pipeline import Ingestor
from tests.agent.fakes import HashingEmbedder

signals = Path(sys.argv[1])
embedder = HashingEmbedder()
import citewell.ingestion.pipeline as pipeline
pipeline.build_embedder = lambda settings: embedder
ingest_folder = Ingestor.ingest_folder

def checked_then_wait(self, *args, **kwargs):
    (signals / "checked").write_text("checked")
    while not (signals / "go").exists():
        time.sleep(0.05)
    return ingest_folder(self, *args, **kwargs)

Ingestor.ingest_folder = checked_then_wait
code = main(["ingest", *sys.argv[2:]])
print(json.dumps({"code": code}))
"""


@pytest.fixture(autouse=True)
def _fast_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = HashingEmbedder()
    monkeypatch.setattr("citewell.ingestion.pipeline.build_embedder", lambda settings: embedder)
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    for n in range(3):
        (root / f"doc{n}.md").write_text(f"# Doc {n}\n\nPolicy {root.name} {n} says hello.\n")
    return root


def _sources(data: Path) -> dict[str, str]:
    """Each indexed document's source, by file URI."""
    opened = open_version(Settings(data_dir=data, index="kb"))
    try:
        return {doc.source_uri: doc.source for doc in opened.manifest.iter_documents()}
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("second_folder", "second_name", "refusal"),
    [
        # The same folder under another name: it would move to the second source.
        ("a", "other", "is already indexed in index 'kb' as source 'first'"),
        # Another folder under the same name: the first folder's documents would be deleted.
        ("b", "first", "source 'first' of index 'kb' is the folder"),
    ],
)
def test_a_source_name_checked_before_another_run_published_is_checked_again(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    second_folder: str,
    second_name: str,
    refusal: str,
) -> None:
    data = tmp_path / "data"
    folders = {"a": _folder(tmp_path / "a"), "b": _folder(tmp_path / "b")}
    signals = tmp_path / "signals"
    signals.mkdir()
    common = ["--index", "kb", "--data-dir", str(data)]
    argv = [str(folders[second_folder]), *common, "--source-name", second_name, "--json"]
    second = subprocess.Popen(
        [sys.executable, "-c", _INGEST, str(signals), *argv],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (signals / "checked").exists():  # it checked its name, nothing indexed yet
        assert second.poll() is None, second.communicate()
        assert time.monotonic() < deadline, "the second run never checked its source name"
        time.sleep(0.05)

    assert main(["ingest", str(folders["a"]), *common, "--source-name", "first"]) == 0
    capsys.readouterr()
    first = _sources(data)
    (signals / "go").write_text("go")
    out, err = second.communicate(timeout=120)

    assert json.loads(out.strip().splitlines()[-1]) == {"code": 2}, (out, err)
    assert refusal in err
    assert _sources(data) == first
    assert set(first.values()) == {"first"} and len(first) == 3
