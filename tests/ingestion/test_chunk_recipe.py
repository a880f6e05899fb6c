"""A changed chunking recipe re-chunks every document on the next refresh; headers reach the
stores; manifests from before the recipe column still open."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence

import numpy as np
import pytest

from citewell.core.models import AccessLabel, SearchFilters
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.access import AccessScope
from citewell.retrieval.index import open_version
from citewell.retrieval.manifest import Manifest

DIM = 8
LABEL = AccessLabel(classification="public", groups=frozenset({"everyone"}))
EVERYONE = AccessScope(principal="p", max_rank=0, groups=frozenset({"everyone"}))


class RecordingEmbedder:
    """Deterministic vectors from a text hash; remembers every text it embedded."""

    cache_key = "recording-8"
    dimension = DIM

    def __init__(self) -> None:
        self.texts: list[str] = []

    @property
    def computed(self) -> int:
        return len(self.texts)

    def warm_up(self) -> None:
        pass

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:DIM], np.uint8) for t in texts]
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(texts), DIM) + 1.0
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def docs() -> list[TextDocument]:
    body = " ".join(f"Revenue line {i} rose by {i} percent in the quarter." for i in range(60))
    return [
        TextDocument(doc_id=f"d{i}", title=f"Acme report {i}", text=body, label=LABEL)
        for i in range(2)
    ]


def contexts(settings) -> dict[str, set[str]]:
    opened = open_version(settings)
    try:
        ids = [d.doc_id for d in opened.manifest.iter_documents()]
        by_doc = opened.vectors.chunk_ids_by_document(ids)
        chunks = opened.vectors.get_chunks([c for cids in by_doc.values() for c in cids])
        return {doc: {c.context for c in chunks if c.doc_id == doc} for doc in ids}
    finally:
        opened.close()


@pytest.mark.slow  # five ingest runs, about 7 s
def test_recipe_change_rechunks_and_unchanged_recipe_does_not(make_settings):
    embedder = RecordingEmbedder()
    settings = make_settings()
    first = Ingestor(settings, embedder=embedder).ingest_texts(docs(), "idx", "src")
    assert sorted(first.added) == ["d0", "d1"]
    assert contexts(settings.model_copy(update={"index": "idx"})) == {
        "d0": {"", "Acme report 0"},  # the first chunk starts with the title itself
        "d1": {"", "Acme report 1"},
    }
    assert any(t.startswith("Acme report 0\nRevenue") for t in embedder.texts)

    again = Ingestor(settings, embedder=embedder).ingest_texts(docs(), "idx", "src")
    assert sorted(again.unchanged) == ["d0", "d1"] and again.chunks_written == 0

    off = make_settings(chunk_context=False)
    rechunked = Ingestor(off, embedder=embedder).ingest_texts(docs(), "idx", "src")
    assert sorted(rechunked.updated) == ["d0", "d1"]
    assert contexts(off.model_copy(update={"index": "idx"})) == {"d0": {""}, "d1": {""}}

    smaller = make_settings(chunk_context=False, chunk_size_tokens=64, chunk_overlap_tokens=8)
    resized = Ingestor(smaller, embedder=embedder).ingest_texts(docs(), "idx", "src")
    assert sorted(resized.updated) == ["d0", "d1"]
    assert resized.chunks_written > rechunked.chunks_written
    settled = Ingestor(smaller, embedder=embedder).ingest_texts(docs(), "idx", "src")
    assert sorted(settled.unchanged) == ["d0", "d1"]


def test_file_name_header_is_embedded_and_bm25_indexed(tmp_path, make_settings):
    folder = tmp_path / "docs"
    folder.mkdir()
    sentences = " ".join(f"Services revenue moved {i} percent this period." for i in range(50))
    (folder / "2023_Q3_ACME.txt").write_text(sentences, encoding="utf-8")
    for topic in ("badge policy", "holiday rota", "server patching", "expense claims"):
        # Other documents, so that "acme" is rare enough for a positive BM25 idf.
        (folder / f"{topic.split()[0]}.txt").write_text(f"Notes on the {topic}.", "utf-8")
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    settings = make_settings()
    embedder = RecordingEmbedder()
    report = Ingestor(settings, embedder=embedder).ingest_folder(folder, source_name="docs")
    assert "2023_Q3_ACME.txt" in report.added
    opened = open_version(settings)
    try:
        (entry,) = [d for d in opened.manifest.iter_documents() if "ACME" in d.relative_path]
        assert entry.title == "2023 Q3 ACME"  # a text file has no title: its file name
        assert entry.chunk_recipe == Ingestor(settings).chunk_recipe
        found = opened.lexical.search("acme", EVERYONE, SearchFilters(), 10)
        assert len(found) == len(entry.chunk_ids) > 1  # every chunk, not just the first
    finally:
        opened.close()
    assert sum("2023 Q3 ACME" in t for t in embedder.texts) == len(entry.chunk_ids)


def test_manifest_from_before_recipes_opens_and_reads_none(tmp_path):
    path = tmp_path / "manifest.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE documents (doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, source_uri TEXT "
        "NOT NULL, relative_path TEXT NOT NULL, title TEXT NOT NULL, doc_type TEXT NOT NULL, "
        "content_hash TEXT NOT NULL, label_fingerprint TEXT NOT NULL, classification TEXT NOT "
        "NULL, classification_rank INTEGER NOT NULL, groups TEXT NOT NULL, labelled INTEGER NOT "
        "NULL, banner_level TEXT, chunk_ids TEXT NOT NULL, modified_at TEXT, refreshed_at TEXT "
        "NOT NULL)"
    )
    db.execute(
        "INSERT INTO documents VALUES ('d', 's', 'u', 'r', 't', 'txt', 'h', 'f', 'public', 0, "
        "'[]', 1, NULL, '[]', NULL, '2026-01-01T00:00:00+00:00')"
    )
    db.commit()
    db.close()
    read_only = Manifest(path, read_only=True)
    assert read_only.get("d").chunk_recipe is None
    read_only.close()
    writable = Manifest(path)  # adds the column
    entry = writable.get("d")
    assert entry.chunk_recipe is None
    writable.put(entry.model_copy(update={"chunk_recipe": "abc"}))
    writable.commit()
    assert writable.get("d").chunk_recipe == "abc"
    writable.close()
