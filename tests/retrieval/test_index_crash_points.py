"""An index write dying at a bad moment: the published version and the operator's commands
must survive it (garbage collection killed half-way, a disk that fills while staging)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import pytest

import citewell.retrieval.index as index_module
from citewell.cli.main import main as cli_main
from citewell.core.errors import IndexLockedError, IndexNotFoundError, StoreUnavailableError
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import IndexLayout
from tests.agent.fakes import HashingEmbedder


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def _folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    (root / "a.md").write_text("# A\n\nHarbor cranes lift containers.\n", encoding="utf-8")
    return root


def _refresh(settings: Settings, folder: Path, text: str) -> None:
    (folder / "a.md").write_text(f"# A\n\n{text}\n", encoding="utf-8")
    Ingestor(settings, embedder=HashingEmbedder()).ingest_folder(
        folder, index="kb", source_name="kb"
    )


def test_kill_during_garbage_collection_leaves_only_whole_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", keep_versions=2)
    folder = _folder(tmp_path / "kb")
    for n in range(2):
        _refresh(settings, folder, f"Revision {n}.")
    layout = IndexLayout(settings, "kb")
    assert layout.versions() == ["v000001", "v000002"]

    real_rmtree = shutil.rmtree

    def die_half_way(path: Any, *args: Any, **kwargs: Any) -> None:
        if "v000001" not in Path(path).name:  # not the version being collected
            return real_rmtree(path, *args, **kwargs)
        # rmtree removes entries in directory order: meta.json may go first, and the process
        # may be killed before the rest.
        (Path(path) / "meta.json").unlink(missing_ok=True)
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(index_module.shutil, "rmtree", die_half_way)
        with pytest.raises(_Killed):
            _refresh(settings, folder, "Revision 2.")

    assert layout.current_version() == "v000003"
    for version in layout.versions():  # every version listed is whole
        assert layout.read_meta(version).version == version
    capsys.readouterr()
    code = cli_main(["index", "versions", "--index", "kb", "--data-dir", str(settings.data_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "* v000003" in out
    _refresh(settings, folder, "Revision 3.")  # the next run works and cleans up
    assert layout.versions() == ["v000003", "v000004"]
    assert not any(layout.staging_dir.iterdir())


def test_disk_full_while_staging_is_one_clear_error_and_keeps_the_published_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    folder = _folder(tmp_path / "kb")
    _refresh(settings, folder, "Revision 0.")
    layout = IndexLayout(settings, "kb")
    real_copytree = shutil.copytree

    def disk_full(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        if str(dst).endswith("manifest.sqlite"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return shutil.copy2(src, dst, *args, **kwargs)

    def copytree_on_a_full_disk(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        if "staging" in Path(dst).parts and not args:
            kwargs["copy_function"] = disk_full
        return real_copytree(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(index_module.shutil, "copytree", copytree_on_a_full_disk)
        with pytest.raises(StoreUnavailableError, match="No space left on device") as raised:
            _refresh(settings, folder, "Revision 1.")
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 300
    assert layout.current_version() == "v000001"
    assert not any(layout.staging_dir.iterdir())
    _refresh(settings, folder, "Revision 1.")
    assert layout.current_version() == "v000002"


def test_read_only_data_dir_is_one_clear_error_not_an_unexpected_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    folder = _folder(tmp_path / "kb")
    _refresh(settings, folder, "Revision 0.")
    real_open = index_module.os.open

    def read_only(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".write.lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(index_module.os, "open", read_only)
        with pytest.raises(StoreUnavailableError, match="Read-only file system"):
            _refresh(settings, folder, "Revision 1.")
    assert IndexLayout(settings, "kb").current_version() == "v000001"


def _kill_between_rename_and_switch(
    settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """A refresh killed after its version is renamed into place, before CURRENT names it."""

    def killed(self: IndexLayout, version: str) -> None:
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(IndexLayout, "set_current", killed)
        with pytest.raises(_Killed):
            _refresh(settings, folder, text)


def test_a_version_whose_publish_was_killed_is_never_rolled_back_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", keep_versions=2)
    folder = _folder(tmp_path / "kb")
    _refresh(settings, folder, "Revision 1.")
    _kill_between_rename_and_switch(settings, folder, monkeypatch, "Never published.")
    layout = IndexLayout(settings, "kb")
    assert layout.versions() == ["v000001", "v000002"]
    assert layout.current_version() == "v000001"
    with pytest.raises(IndexNotFoundError, match="never published"):
        index_module.rollback(settings, "kb", "v000002")
    code = cli_main(["index", "versions", "--index", "kb", "--data-dir", str(settings.data_dir)])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "v000002" in out.splitlines()[1] and "never published" in out.splitlines()[1]
    _refresh(settings, folder, "Revision 3.")
    assert layout.current_version() == "v000003"
    # The version before the current one is the last one that served, not the orphan.
    assert index_module.rollback(settings, "kb") == "v000001"


def test_garbage_collection_keeps_published_versions_before_an_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", keep_versions=2)
    folder = _folder(tmp_path / "kb")
    _refresh(settings, folder, "Revision 1.")
    _kill_between_rename_and_switch(settings, folder, monkeypatch, "Never published.")
    _refresh(settings, folder, "Revision 3.")
    layout = IndexLayout(settings, "kb")
    # The orphan took no place among the versions kept; it is gone.
    assert layout.versions() == ["v000001", "v000003"]


def test_a_version_whose_record_was_killed_after_the_switch_stays_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after CURRENT named v2 but before PUBLISHED recorded it: v2 served, yet the next
    refresh recorded only v3, collected v2 as never published and left v1 to roll back to."""
    settings = Settings(data_dir=tmp_path / "data", keep_versions=2)
    folder = _folder(tmp_path / "kb")
    _refresh(settings, folder, "Revision 1.")

    def killed(self: IndexLayout, versions: set[str]) -> None:
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(IndexLayout, "record_published", killed)
        with pytest.raises(_Killed):
            _refresh(settings, folder, "Revision 2.")
    layout = IndexLayout(settings, "kb")
    assert layout.current_version() == "v000002"
    _refresh(settings, folder, "Revision 3.")
    assert layout.versions() == ["v000002", "v000003"]
    assert index_module.rollback(settings, "kb") == "v000002"


def test_a_version_rolled_back_from_can_be_rolled_forward_to(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", keep_versions=3)
    folder = _folder(tmp_path / "kb")
    for n in range(2):
        _refresh(settings, folder, f"Revision {n}.")
    assert index_module.rollback(settings, "kb") == "v000001"
    # A refresh now builds on v000001; v000002, newer than CURRENT, was published and stays.
    _refresh(settings, folder, "Revision 2.")
    layout = IndexLayout(settings, "kb")
    assert layout.versions() == ["v000001", "v000002", "v000003"]
    assert index_module.rollback(settings, "kb", "v000002") == "v000002"


def test_an_index_written_before_the_publication_record_keeps_its_versions(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", keep_versions=3)
    folder = _folder(tmp_path / "kb")
    for n in range(2):
        _refresh(settings, folder, f"Revision {n}.")
    layout = IndexLayout(settings, "kb")
    for stray in layout.root.glob("PUBLISHED*"):
        stray.unlink()  # as an index from a release without the record
    assert index_module.rollback(settings, "kb") == "v000001"
    assert index_module.rollback(settings, "kb", "v000002") == "v000002"


def test_temporary_files_of_killed_pointer_writes_are_swept_by_the_next_writer(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    folder = _folder(tmp_path / "kb")
    _refresh(settings, folder, "Revision 1.")
    layout = IndexLayout(settings, "kb")
    stray = layout.root / ".CURRENT.4242.deadbeef.tmp"  # write_atomic's name, killed mid-write
    stray.write_text("v0000", encoding="utf-8")
    _refresh(settings, folder, "Revision 2.")
    assert not stray.exists()


def test_rollback_waits_for_no_writer_and_names_a_missing_version(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    folder = _folder(tmp_path / "kb")
    for n in range(2):
        _refresh(settings, folder, f"Revision {n}.")
    layout = IndexLayout(settings, "kb")
    with pytest.raises(IndexNotFoundError, match="no version v000009"):
        index_module.rollback(settings, "kb", "v000009")
    # A refresh is publishing: rollback must not switch CURRENT under it.
    with index_module._write_lock(layout), pytest.raises(IndexLockedError):
        index_module.rollback(settings, "kb")
    assert layout.current_version() == "v000002"
