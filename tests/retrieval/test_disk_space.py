"""A data dir short of disk space: the write is refused with a clear error before it starts
(or before the vectors are rebuilt), never a SIGBUS from a memory-mapped write into a full file
system, and the published version keeps serving."""

from __future__ import annotations

import os
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


# Run in a subprocess: publish revision 1, then revision 2 with a real file-size limit
# (RLIMIT_FSIZE: every write past it fails with EFBIG, as a full disk fails with ENOSPC) set
# once CURRENT names the new version, before its publication is recorded (PUBLISHED, the
# larger file). Prints what the caller was told and what CURRENT names.
_LIMIT_AFTER_THE_SWITCH = """
import json, resource, sys
from pathlib import Path
from citewell.core.settings import Settings
from citewell.retrieval.index import IndexLayout
from tests.retrieval.publishing import publish_notes

settings = Settings(data_dir=Path(sys.argv[1]))
publish_notes(settings, 1, count=2)
switch = IndexLayout.set_current

def set_current_then_fill(self, version):
    switch(self, version)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(version) + 1, resource.RLIM_INFINITY))

IndexLayout.set_current = set_current_then_fill
try:
    told = {"published": publish_notes(settings, 2, count=2)}
except Exception as exc:
    told = {"error": f"{type(exc).__name__}: {exc}"}
told["current"] = IndexLayout(settings).current_version()
print(json.dumps(told))
"""


def test_a_write_that_fails_after_the_switch_does_not_report_the_published_version_failed(
    tmp_path: Path,
) -> None:
    """CURRENT already names the new version: the run published, and the next writer records
    it; telling the caller 'cannot publish' made an Airflow finalize fail (and alert) and a
    user re-run or roll back a version that was serving."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _LIMIT_AFTER_THE_SWITCH, str(tmp_path / "data")],
        cwd=repo,
        # tests/ by name, not through the working directory (the session sets PYTHONSAFEPATH).
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    told = json.loads(done.stdout.strip().splitlines()[-1])
    assert told == {"published": "v000002", "current": "v000002"}
    settings = Settings(data_dir=tmp_path / "data")
    assert _ingest(settings, 3) == "v000003"  # the next writer records v000002 and goes on
    assert index_module.rollback(settings) == "v000002"
