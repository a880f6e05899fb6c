"""Model exports: what a killed export leaves behind does not pile up."""

from __future__ import annotations

import os
import time
from pathlib import Path

from citewell.retrieval.onnx_export import sweep_stale_exports


def test_work_folders_of_killed_exports_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    killed = tmp_path / ".export-killed"
    live = tmp_path / ".export-live"
    finished = tmp_path / "all-MiniLM-L6-v2-0123456789abcdef-embedding"
    for folder in (killed, live, finished):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"\0" * 16)
    an_hour_and_more_ago = time.time() - 3700
    os.utime(killed, (an_hour_and_more_ago, an_hour_and_more_ago))
    os.utime(finished, (an_hour_and_more_ago, an_hour_and_more_ago))
    sweep_stale_exports(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export-live", finished.name]
