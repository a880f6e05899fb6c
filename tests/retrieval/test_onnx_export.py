"""Model exports: what a killed export leaves behind does not pile up; loaders starting
together export once."""

from __future__ import annotations

import fcntl
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from citewell.core.errors import ModelError
from citewell.retrieval import onnx_export
from citewell.retrieval.onnx_export import exported_model, sweep_stale_exports


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


def test_processes_starting_together_export_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four loaders on a fresh cache (API replicas, an ingest, test workers) each ran the whole
    export, a CPU-minute apiece; the first one exports and the others reuse its files."""
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}", encoding="utf-8")
    exports: list[Path] = []

    def slow_export(source: Path, source_hash: str, target: Path, task: str) -> None:
        exports.append(target)
        time.sleep(0.5)
        target.mkdir(parents=True)
        marker = {"version": onnx_export._EXPORT_VERSION, "source_sha256": source_hash}
        (target / onnx_export._MARKER).write_text(json.dumps(marker), encoding="utf-8")

    monkeypatch.setattr(onnx_export, "_export", slow_export)
    with ThreadPoolExecutor(4) as pool:
        paths = list(
            pool.map(
                lambda _: exported_model(source, tmp_path / "exports", "embedding", "fp32"),
                range(4),
            )
        )
    assert len(exports) == 1 and len(set(paths)) == 1


def test_an_export_folder_that_cannot_be_written_is_a_model_error(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}", encoding="utf-8")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("", encoding="utf-8")
    with pytest.raises(ModelError, match="cannot write model exports"):
        exported_model(source, blocked / "exports", "embedding", "fp32")


def test_a_stuck_exporter_does_not_hang_the_next_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process holding the export lock forever (hung, stopped with SIGSTOP) held every later
    loader with it; past the wait, the loader exports on its own."""
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}", encoding="utf-8")
    exports = tmp_path / "exports"
    exports.mkdir()

    def quick_export(source: Path, source_hash: str, target: Path, task: str) -> None:
        target.mkdir(parents=True)
        marker = {"version": onnx_export._EXPORT_VERSION, "source_sha256": source_hash}
        (target / onnx_export._MARKER).write_text(json.dumps(marker), encoding="utf-8")

    monkeypatch.setattr(onnx_export, "_export", quick_export)
    monkeypatch.setattr(onnx_export, "_EXPORT_WAIT_S", 0.5)
    name = f"model-{onnx_export.hash_model_dir(source)[:16]}-embedding"
    holder = os.open(exports / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another open file: blocks this process's lock too
        started = time.monotonic()
        path = exported_model(source, exports, "embedding", "fp32")
        assert path.parent.name == name and 0.5 <= time.monotonic() - started < 5
    finally:
        os.close(holder)
