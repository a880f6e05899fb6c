"""SIGKILL the ingestion process at random points; re-running must converge to a clean run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.ingestion.kb_fixture import write_kb
from tests.ingestion.test_pipeline import index_state

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _ingest_command(kb: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "citewell.cli.main",
        "ingest",
        str(kb),
        "--data-dir",
        str(data_dir),
        "--source-name",
        "kb",
        "--json",
    ]


def _ingest_to_end(kb: Path, data_dir: Path, env: dict[str, str]) -> None:
    subprocess.run(
        _ingest_command(kb, data_dir),
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )


def _start_ingest(kb: Path, data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _ingest_command(kb, data_dir),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DO_NOT_TRACK="true", PYTHONPATH=str(REPO))
    env.pop("CITEWELL_QDRANT_URL", None)
    return env


def _write_many(kb: Path, count: int) -> None:
    rng = random.Random(7)
    words = [
        "harbor",
        "freight",
        "route",
        "depot",
        "crane",
        "vessel",
        "berth",
        "manifest",
        "customs",
        "tariff",
    ]
    for n in range(count):
        body = " ".join(rng.choice(words) for _ in range(120))
        (kb / "public" / f"note-{n:03d}.md").write_text(f"# Note {n}\n\n{body}\n", "utf-8")


def test_sigkill_at_random_points_then_rerun_equals_clean_run(tmp_path, make_settings, embedder):
    kb = write_kb(tmp_path / "kb")
    _write_many(kb, 30)
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crashy"
    env = _env(tmp_path)

    # Timed on a warm model cache (the subprocesses share the session's exports): a run that
    # also exports the model made every later kill land after the run had finished.
    assert embedder.cache_key
    started = time.monotonic()
    _ingest_to_end(kb, clean_dir, env)
    clean_seconds = time.monotonic() - started

    rng = random.Random(1234)
    kills = 0
    for _ in range(3):
        proc = _start_ingest(kb, crash_dir, env)
        time.sleep(rng.uniform(0.3, 1.0) * clean_seconds)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 1, "ingestion always finished before the kill; the test proved nothing"

    _ingest_to_end(kb, crash_dir, env)
    clean = index_state(make_settings(data_dir=clean_dir))
    recovered = index_state(make_settings(data_dir=crash_dir))
    assert recovered == clean


def test_ctrl_c_while_parsing_keeps_the_published_version_and_ends_the_workers(
    tmp_path, make_settings, sigint_reaches_children
):
    from tests.security.hostile_files import pdf_nested_forms

    kb = write_kb(tmp_path / "kb")
    data_dir = tmp_path / "data"
    env = _env(tmp_path)
    _ingest_to_end(kb, data_dir, env)
    before = index_state(make_settings(data_dir=data_dir))
    (kb / "public" / "press.md").write_text("# Changed\n\nA new press release.", "utf-8")
    (kb / "public" / "boxes.pdf").write_bytes(pdf_nested_forms())  # a minute of parsing

    proc = _start_ingest(kb, data_dir, env)
    parent = psutil.Process(proc.pid)
    descendants: list[psutil.Process] = []
    deadline = time.monotonic() + 300
    # A parse worker is a grandchild (forked by multiprocessing's forkserver, our child).
    while time.monotonic() < deadline and proc.poll() is None:
        descendants = parent.children(recursive=True)
        if any(p.ppid() != proc.pid for p in descendants):
            break
        time.sleep(0.2)
    assert any(p.ppid() != proc.pid for p in descendants), "no parse worker ever started"
    time.sleep(2)
    descendants = parent.children(recursive=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0

    _, alive = psutil.wait_procs(descendants, timeout=15)
    assert not alive, f"processes outlived the run: {[p.pid for p in alive]}"
    assert index_state(make_settings(data_dir=data_dir)) == before
