"""A file rewritten while a run reads it: the run hashes a file's bytes when it plans, and a parse
worker reads the file again later. What is indexed must be the content that was hashed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from citewell.ingestion.models import SourceItem
from citewell.ingestion.pipeline import Ingestor
from citewell.ingestion.sources import LocalFolderSource
from citewell.retrieval.index import open_version

pytestmark = pytest.mark.slow

LABELS = 'rules:\n  - {match: "**", classification: public, groups: [everyone]}\n'
OLD = "# Lift plan\n\nThe gondola crane lifts the reactor vessel on Monday.\n"
NEW = "# Lift plan\n\nThe zeppelin hangar crane lifts the boiler on Friday.\n"


def _indexed_texts(settings: Any) -> dict[str, str]:
    """Each indexed document's text, from the vector store's chunks, by relative path."""
    opened = open_version(settings)
    try:
        return {
            doc.relative_path: " ".join(
                chunk.text for chunk in opened.vectors.get_chunks(list(doc.chunk_ids))
            )
            for doc in opened.manifest.iter_documents()
        }
    finally:
        opened.close()


def test_a_file_rewritten_between_hashing_and_parsing_is_not_indexed_under_the_old_hash(
    tmp_path: Path, make_settings: Any, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run hashed OLD, the worker parsed NEW: NEW's text was indexed under OLD's hash (and
    # cached under it). When the file went back to OLD, the next refresh found the hash
    # unchanged and kept serving NEW's text for a file that no longer said it.
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (kb / "other.md").write_text("# Berths\n\nCranes load vessels at berth four.\n", "utf-8")
    plan = kb / "plan.md"
    plan.write_text(OLD, encoding="utf-8")
    read_bytes = LocalFolderSource.read_bytes

    def read_then_rewrite(self: LocalFolderSource, item: SourceItem) -> bytes:
        data = read_bytes(self, item)
        if item.relative_path == "plan.md":
            plan.write_text(NEW, encoding="utf-8")  # saved by someone else, just after the read
        return data

    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder, parse_cache_dir=tmp_path / "cache")
    with monkeypatch.context() as patch:
        patch.setattr(LocalFolderSource, "read_bytes", read_then_rewrite)
        first = ingestor.ingest_folder(kb, source_name="kb")
    assert first.index_version is not None and "other.md" in first.added
    failed = {Path(f.source_uri).name: f.reason for f in first.failed}
    assert "changed while" in failed.get("plan.md", ""), first

    plan.write_text(OLD, encoding="utf-8")  # the change is undone
    second = ingestor.ingest_folder(kb, source_name="kb")

    assert second.added == ("plan.md",) and not second.failed
    texts = _indexed_texts(settings)
    assert sorted(texts) == ["other.md", "plan.md"]
    assert "gondola" in texts["plan.md"] and "zeppelin" not in texts["plan.md"]
