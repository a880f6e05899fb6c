"""The parse cache and the cache of objects' sensitivity readings are only speed-ups: a cache
that cannot be written must not fail the documents whose parse it was to keep."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from citewell.ingestion.pipeline import Ingestor
from tests.ingestion.mip_files import write_docx
from tests.s3_server import bucket_with, s3_source

pytestmark = pytest.mark.slow

LABELS = 'rules:\n  - {match: "**", classification: public, groups: [everyone]}\n'
NOTE = "# Tide tables\n\nThe harbour master posts the tide tables at dawn each day.\n"
WARNING_EVENT = "ingest.cache_unwritable"


def _unwritable_cache(tmp_path: Path, how: str) -> Path:
    cache = tmp_path / "cache"
    if how == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        cache.mkdir()
        cache.chmod(0o500)
    else:  # works for root too: the folder cannot be made, so nothing can be written there
        cache.write_text("not a folder", encoding="utf-8")
    return cache


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == WARNING_EVENT]


@pytest.mark.parametrize("how", ["read-only folder", "a file where the folder should be"])
def test_a_parse_cache_that_cannot_be_written_fails_no_document(
    tmp_path: Path,
    make_settings: Any,
    embedder: Any,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    for number in range(3):
        (kb / f"note{number}.md").write_text(NOTE + f"\nBerth {number}.\n", encoding="utf-8")
    cache = _unwritable_cache(tmp_path, how)
    caplog.set_level(logging.WARNING, logger="citewell.ingestion.pipeline")
    try:
        report = Ingestor(make_settings(), embedder=embedder, parse_cache_dir=cache).ingest_folder(
            kb, source_name="kb"
        )
    finally:
        if cache.is_dir():
            cache.chmod(0o700)
    assert not report.failed, report.failed
    assert sorted(report.added) == ["note0.md", "note1.md", "note2.md"]
    warnings = _warnings(caplog)
    assert len(warnings) == 1, "one warning per run, not one per document"
    fields = warnings[0].fields  # type: ignore[attr-defined]
    assert "harbour" not in str(fields) and fields["folder"] == str(cache)


def test_an_object_reading_cache_that_cannot_be_written_fails_no_object(
    tmp_path: Path,
    s3_env: Any,
    make_settings: Any,
    embedder: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A DOCX can carry sensitivity labels: its reading is cached beside its parse.
    objects: dict[str, str | bytes] = {
        "kb/citewell.labels.yaml": LABELS,
        "kb/memo.docx": write_docx(tmp_path / "memo.docx", NOTE).read_bytes(),
        "kb/note.md": NOTE,
    }
    bucket = bucket_with(s3_env, objects, "cache")
    cache = _unwritable_cache(tmp_path, "a file where the folder should be")
    caplog.set_level(logging.WARNING, logger="citewell.ingestion.pipeline")
    settings = make_settings()
    with s3_source(bucket, "kb", name="kb", max_file_bytes=2**20) as source:
        report = Ingestor(settings, embedder=embedder, parse_cache_dir=cache).ingest_objects(source)
    assert not report.failed, report.failed
    assert sorted(report.added) == ["memo.docx", "note.md"]
    assert len(_warnings(caplog)) == 1


def _kb_with_note(tmp_path: Path) -> Path:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (kb / "note.md").write_text(NOTE, encoding="utf-8")
    return kb


def test_a_cache_write_never_takes_another_writers_temporary(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    # Pods of other hosts share the cache folder and may run under the same pid: a temporary
    # named after the pid alone was truncated, written over and renamed from under its writer.
    kb = _kb_with_note(tmp_path)
    cache = tmp_path / "cache"
    ingestor = Ingestor(make_settings(), embedder=embedder, parse_cache_dir=cache)
    ingestor.ingest_folder(kb, source_name="kb")
    (entry,) = cache.glob("*.json")
    entry.unlink()
    theirs = entry.with_suffix(f".{os.getpid()}.tmp")  # another host's write, under way
    theirs.write_text('{"half": ', encoding="utf-8")

    report = ingestor.ingest_folder(kb, source_name="kb", fresh=True)

    assert report.added == ("note.md",) and not report.failed
    assert theirs.exists(), "another writer's temporary was renamed into the cache"
    assert theirs.read_text(encoding="utf-8") == '{"half": '
    assert "harbour master" in entry.read_text(encoding="utf-8")


def test_stale_cache_temporaries_are_removed_and_recent_ones_kept(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    # A writer killed between writing its temporary and renaming it left the file for good.
    kb = _kb_with_note(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / "0123abcd.md.p8.4242.tmp"  # a killed writer's, two days ago
    stale.write_text("{", encoding="utf-8")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    hidden = cache / ".0123abcd.md.p8.json.5f2e.tmp"
    hidden.write_text("{", encoding="utf-8")
    os.utime(hidden, (two_days_ago, two_days_ago))
    recent = cache / ".4567cdef.md.p8.json.9a1b.tmp"  # being written right now
    recent.write_text("{", encoding="utf-8")

    report = Ingestor(make_settings(), embedder=embedder, parse_cache_dir=cache).ingest_folder(
        kb, source_name="kb"
    )

    assert report.added == ("note.md",)
    assert not stale.exists() and not hidden.exists()
    assert recent.exists()
    assert len(list(cache.glob("*.json"))) == 1
