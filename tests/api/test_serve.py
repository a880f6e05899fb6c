"""``citewell serve`` end to end: a real uvicorn process, before any index is published."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from citewell.api.errors import STORE_UNAVAILABLE_MESSAGE
from tests.api.conftest import KEYS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_probes_and_refuses_search_without_an_index(tmp_path, principals_file):
    port = _free_port()
    env = {**os.environ, "CITEWELL_PRINCIPALS_FILE": str(principals_file)}
    cmd = [sys.executable, "-m", "citewell.cli.main", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert httpx.post(f"{base}/v1/search", json={"query": "x"}).status_code == 401
        response = httpx.post(
            f"{base}/v1/search", json={"query": "x"}, headers={"X-API-Key": KEYS["alice"]}
        )
        assert response.status_code == 503
        assert response.json() == {"detail": STORE_UNAVAILABLE_MESSAGE}
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert (tmp_path / "data" / "audit.jsonl").exists()
