"""``citewell serve`` says where it listens once it is up (issue 18.5): URL, index, version and
the docs URL, and the URLs it prints answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from tests.agent.fakes import HashingEmbedder

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _banner(proc: subprocess.Popen[str], timeout_s: float = 180) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "Ctrl-C" in line:
            return lines
    raise AssertionError(f"no banner: {lines}; stderr: {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("published", [False, True])
def test_serve_prints_where_it_listens(tmp_path: Path, published: bool) -> None:
    data = tmp_path / "data"
    if published:
        folder = tmp_path / "kb"
        folder.mkdir()
        (folder / "citewell.labels.yaml").write_text(
            "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
        )
        (folder / "a.md").write_text("# A\n\nHello.\n", encoding="utf-8")
        Ingestor(Settings(data_dir=data), embedder=HashingEmbedder()).ingest_folder(
            folder, index="kb"
        )
    cmd = [sys.executable, "-m", "citewell.cli.main", "serve", "--port", "0", "--index", "kb"]
    cmd += ["--data-dir", str(data)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("CITEWELL_PRINCIPALS_FILE", None)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        banner = _banner(proc)
        text = "\n".join(banner)
        expected = "index kb version v000001" if published else "index kb (no published version"
        assert expected in banner[0], text
        assert banner[0].startswith("citewell "), text
        docs = re.search(r"docs +(http://127\.0\.0\.1:(\d+)/docs)", text)
        assert docs is not None and docs.group(2) != "0", text  # the port actually bound
        assert httpx.get(docs.group(1), timeout=10).status_code == 200
        health = re.search(r"health +(\S+)", text)
        assert health is not None and httpx.get(health.group(1), timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    import socket

    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    cmd = [sys.executable, "-m", "citewell.cli.main", "serve", "--port", str(port)]
    cmd += ["--index", "kb", "--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("CITEWELL_PRINCIPALS_FILE", None)
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    finally:
        busy.close()
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("citewell: error: cannot listen on 127.0.0.1:"), lines[0]
    assert "in use" in lines[0], lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("llm", "named"),
    [
        ({"CITEWELL_LLM_BASE_URL": "http://127.0.0.1:9/v1"}, "CITEWELL_LLM_MODEL is required"),
        (
            {"CITEWELL_LLM_BASE_URL": "127.0.0.1:9/v1", "CITEWELL_LLM_MODEL": "m"},
            "llm_base_url must be an http(s) URL",
        ),
    ],
    ids=["no-model", "not-a-url"],
)
def test_serve_with_a_broken_llm_setting_fails_at_start(
    tmp_path: Path, llm: dict[str, str], named: str
) -> None:
    """The answer backend was built on the first answer: the server started, /readyz said
    ready, and every /v1/answer and chat completion was a 500 'the server is misconfigured'."""
    cmd = [sys.executable, "-m", "citewell.cli.main", "serve", "--port", "0", "--index", "kb"]
    cmd += ["--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **llm}
    env.pop("CITEWELL_PRINCIPALS_FILE", None)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"serve started with a broken LLM setting: {out!r}")
    assert proc.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("citewell: error: "), err
    assert named in lines[0], lines[0]
    assert out == ""
