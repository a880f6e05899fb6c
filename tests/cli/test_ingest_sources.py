"""``citewell ingest``: one folder is one source however it is ingested (issue 18.3), an empty
folder is refused (18.5), progress per stage and Ctrl-C (18.6)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from citewell.cli.main import main
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import IndexLayout
from tests.agent.fakes import HashingEmbedder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fast_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = HashingEmbedder()
    monkeypatch.setattr("citewell.ingestion.pipeline.build_embedder", lambda settings: embedder)
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)


def _folder(root: Path, files: int = 3) -> Path:
    root.mkdir(parents=True)
    (root / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    for n in range(files):
        (root / f"doc{n}.md").write_text(f"# Doc {n}\n\nPolicy number {n} says hello.\n")
    return root


def _ingest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ingest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_then_ingest_is_one_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    kb = _folder(tmp_path / "kb")
    # What the demo did before: the same folder under another name.
    settings = Settings(data_dir=data, index="demo")
    Ingestor(settings).ingest_folder(kb, index="demo", source_name="lumen-harbor")
    code, out, err = _ingest(capsys, str(kb), "--index", "demo", "--data-dir", str(data), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["added"], report["updated"], len(report["unchanged"])) == ([], [], 3)
    assert err == ""  # --json: no progress line

    # Naming it differently is refused: it would re-add every document under a second source.
    code, _, err = _ingest(
        capsys, str(kb), "--index", "demo", "--data-dir", str(data), "--source-name", "other"
    )
    assert code == 2
    assert "already indexed in index 'demo' as source 'lumen-harbor'" in err


def test_cli_and_demo_name_a_new_folder_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from citewell.ingestion.sources_config import resolve_folder_source

    data = tmp_path / "data"
    kb = _folder(tmp_path / "kb")
    settings = Settings(data_dir=data, index="demo")
    assert resolve_folder_source(settings, "demo", kb) == "kb"
    code, _, err = _ingest(capsys, str(kb), "--index", "demo", "--data-dir", str(data))
    assert code == 0, err
    assert err.startswith(f"reading 3 files from {kb.resolve()} (source kb)\n")
    # Another folder of the same name, or one inside it, would delete or steal its documents.
    other = _folder(tmp_path / "elsewhere" / "kb")
    code, _, err = _ingest(capsys, str(other), "--index", "demo", "--data-dir", str(data))
    assert code == 2 and "source 'kb' of index 'demo' is the folder" in err
    (kb / "sub").mkdir()
    (kb / "sub" / "x.md").write_text("# X\n\nx\n")
    code, _, err = _ingest(capsys, str(kb / "sub"), "--index", "demo", "--data-dir", str(data))
    assert code == 2 and "overlaps the folder" in err


def test_empty_folder_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    kb = _folder(tmp_path / "kb")
    assert _ingest(capsys, str(kb), "--index", "t", "--data-dir", str(data))[0] == 0
    layout = IndexLayout(Settings(data_dir=data), "t")
    published = layout.current_version()
    for doc in kb.glob("*.md"):
        doc.unlink()  # e.g. an unmounted share: the folder is there, its files are not
    code, out, err = _ingest(capsys, str(kb), "--index", "t", "--data-dir", str(data))
    assert code == 2
    assert err.strip().splitlines() == [
        f"citewell: error: no document to ingest in {kb.resolve()}; nothing was published "
        "(pass --allow-empty to publish the source as empty)"
    ]
    assert layout.current_version() == published
    code, out, err = _ingest(
        capsys, str(kb), "--index", "t", "--data-dir", str(data), "--allow-empty"
    )
    assert code == 0 and "deleted                    3" in out, out
    assert layout.current_version() != published


def _run_in_pty(argv: list[str], env: dict[str, str], interrupt_on: bytes) -> tuple[int, str]:
    """Run with stderr (and stdout) on a terminal; send SIGINT once ``interrupt_on`` shows."""
    controller, terminal = pty.openpty()
    # A terminal has a size; tqdm draws nothing on a 0-column one.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env, cwd=REPO
    )
    os.close(terminal)
    seen = b""
    interrupted = False
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if not interrupted and interrupt_on in seen:
            proc.send_signal(signal.SIGINT)
            interrupted = True
        if proc.poll() is not None and not ready:
            break
    code = proc.wait(timeout=60)
    os.close(controller)
    return code, seen.decode("utf-8", errors="replace")


@pytest.mark.slow
def test_progress_bars_on_a_terminal_and_ctrl_c(
    tmp_path: Path, sigint_reaches_children: None
) -> None:
    folder = _folder(tmp_path / "many", files=400)
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "citewell.cli.main", "ingest", str(folder), "--index", "big"]
    argv += ["--data-dir", str(data)]
    code, output = _run_in_pty(argv, env, interrupt_on=b"/400 [")
    assert output.startswith(f"reading 400 files from {folder.resolve()} (source many)")
    # A tqdm bar: stage, count of total, rate and ETA.
    bar = re.compile(r"parse *: +\d+%.*\| *\d+/400 \[[0-9:]+<[0-9:?]+, +[0-9.?]+ *(doc/s|s/doc)")
    assert bar.search(output), output[-3000:]
    assert code == 130, output[-2000:]
    assert "Traceback" not in output
    assert output.rstrip().endswith("citewell: interrupted; the published version is unchanged")
    assert IndexLayout(Settings(data_dir=data), "big").current_version() is None
