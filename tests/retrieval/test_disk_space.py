"""A data dir short of disk space: the write is refused with a clear error before it starts
(or before the vectors are rebuilt), never a SIGBUS from a memory-mapped write into a full file
system, and the published version keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import citewell.retrieval.index as index_module
from citewell.core.errors import StoreUnavailableError
from citewell.core.settings import Settings
from citewell.retrieval.index import IndexLayout
from tests.retrieval.publishing import publish_notes


def _ingest(settings: Settings, revision: int) -> str | None:
    return publish_notes(settings, revision, count=4)  # the free-space answers count on 4


def _free_space(monkeypatch: pytest.MonkeyPatch, answers: Iterator[int]) -> None:
    monkeypatch.setattr(index_module, "_free_bytes", lambda _path: next(answers))


def test_a_refresh_on_a_full_disk_is_refused_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = _ingest(settings, 1)
    _free_space(monkeypatch, iter(lambda: 5 << 20, None))  # 5 MB, always
    with pytest.raises(StoreUnavailableError, match="not enough disk space") as refused:
        _ingest(settings, 2)
    assert "5 MB free" in str(refused.value) and "unchanged" in str(refused.value)
    layout = IndexLayout(settings)
    assert layout.current_version() == first and layout.versions() == [first]
    assert not any(layout.staging_dir.iterdir())


def test_a_disk_that_fills_while_staging_is_refused_before_the_vectors_are_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = _ingest(settings, 1)
    # Plenty to stage and to write the 4 documents, then 5 MB.
    _free_space(monkeypatch, iter([*[10 << 30] * 5, 5 << 20]))
    with pytest.raises(StoreUnavailableError, match="to build the vectors"):
        _ingest(settings, 2)
    layout = IndexLayout(settings)
    assert layout.current_version() == first and layout.versions() == [first]


def test_a_first_build_on_a_full_disk_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    _free_space(monkeypatch, iter(lambda: 1 << 20, None))
    with pytest.raises(StoreUnavailableError, match="not enough disk space to stage"):
        _ingest(settings, 1)
    assert IndexLayout(settings).current_version() is None


def test_a_disk_that_fills_while_documents_are_written_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = _ingest(settings, 1)
    # Room to stage, then the disk fills while the documents are written.
    _free_space(monkeypatch, iter([10 << 30, 10 << 30, 5 << 20, 5 << 20, 5 << 20]))
    with pytest.raises(StoreUnavailableError, match="to write more documents"):
        _ingest(settings, 2)
    layout = IndexLayout(settings)
    assert layout.current_version() == first and layout.versions() == [first]
