"""``citewell mcp`` fails clearly at start when the index is missing (MCP used to start and then
fail every call) and opens no HTTP listener. The README's own ``citewell mcp`` line, driven by
the mcp package's stdio client on the quick tour's index, runs in
tests/cli/test_documented_commands.py after the tour itself (one ``citewell demo`` for both)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli.docs_commands import shared_model_cache

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> list[str]:
    # `citewell` is `python -m citewell.cli.main` from the working tree (the console script
    # would run whatever copy is installed).
    return [sys.executable, "-m", "citewell.cli.main", *args]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITEWELL_")}
    env.update(shared_model_cache())
    env["CITEWELL_DATA_DIR"] = str(data_dir)
    env["CITEWELL_PRINCIPALS_FILE"] = "examples/principals.yaml"  # as the quick tour exports it
    env["PYTHONPATH"] = str(REPO)
    return env


def _mcp_refused_at_start(data_dir: Path, *args: str) -> str:
    """Start ``citewell mcp --user carol ARGS``; it must exit 2 at once. Returns its stderr."""
    done = subprocess.run(
        _cli("mcp", "--user", "carol", *args),
        cwd=REPO,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    return done.stderr


def test_mcp_fails_at_start_when_the_index_is_missing(tmp_path: Path) -> None:
    (tmp_path / "data" / "indexes" / "demo").mkdir(parents=True)
    stderr = _mcp_refused_at_start(tmp_path / "data")
    assert "index 'default' has no published version" in stderr
    assert "demo" in stderr and "--index" in stderr
    assert "Traceback" not in stderr


def test_mcp_opens_no_http_listener(tmp_path: Path) -> None:
    stderr = _mcp_refused_at_start(tmp_path / "data", "--transport", "http")
    assert "/mcp" in stderr and "citewell serve" in stderr
