"""Version copies keep sparse files sparse: qdrant-edge preallocates segment files that are
mostly holes, and a copy that wrote the holes out took 2-3 times the disk of its source."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from citewell.core.settings import Settings
from citewell.retrieval.durable import copy_tree
from citewell.retrieval.index import IndexLayout
from tests.retrieval.publishing import publish_notes


def _allocated(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def _apparent(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_copied_tree_holds_the_same_bytes_on_no_more_disk(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "segment").mkdir(parents=True)
    sparse = source / "segment" / "vectors.dat"
    with open(sparse, "wb") as handle:
        handle.truncate(64 << 20)  # preallocated, all hole
        handle.seek(1 << 20)
        handle.write(b"vector data" * 400)
        handle.seek((48 << 20) + 3)
        handle.write(b"more")
    (source / "meta.json").write_text('{"ok": true}', encoding="utf-8")
    os.chmod(source / "meta.json", 0o640)
    copy_tree(source, tmp_path / "copy")
    copied = tmp_path / "copy" / "segment" / "vectors.dat"
    assert copied.read_bytes() == sparse.read_bytes()
    assert copied.stat().st_size == 64 << 20
    assert _allocated(tmp_path / "copy") <= _allocated(source) + (64 << 10)
    assert (tmp_path / "copy" / "meta.json").stat().st_mode & 0o777 == 0o640


def test_a_copy_across_file_systems_stays_sparse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private copy into /tmp crosses file systems, where copy_file_range may give EXDEV."""
    source = tmp_path / "source"
    source.mkdir()
    sparse = source / "wal"
    with open(sparse, "wb") as handle:
        handle.truncate(32 << 20)
        handle.seek(5 << 20)
        handle.write(b"entry" * 1000)

    def cross_device(*_args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cross_device)
    copy_tree(source, tmp_path / "copy")
    assert (tmp_path / "copy" / "wal").read_bytes() == sparse.read_bytes()
    assert _allocated(tmp_path / "copy") <= _allocated(source) + (64 << 10)


def test_a_fifo_in_a_copied_tree_is_refused_not_waited_on(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "meta.json").write_text("{}", encoding="utf-8")
    os.mkfifo(source / "pipe")
    with pytest.raises(shutil.Error, match="not a regular file"):
        copy_tree(source, tmp_path / "copy")
    assert (tmp_path / "copy" / "meta.json").read_text(encoding="utf-8") == "{}"


def test_a_refresh_stages_its_copy_sparse(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    versions = [publish_notes(settings, revision, count=3) for revision in (1, 2)]
    layout = IndexLayout(settings)
    first, second = (layout.version_dir(v or "") for v in versions)
    assert _allocated(first) < _apparent(first) / 2  # what qdrant-edge writes: mostly holes
    assert _allocated(second) < 1.5 * _allocated(first)
