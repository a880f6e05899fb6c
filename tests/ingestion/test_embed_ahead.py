"""Embedding overlaps chunking: while one batch embeds, the next documents are labelled and
chunked (issue 21); the batches are still written whole and in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from citewell.core.errors import IndexNotFoundError
from citewell.core.models import AccessLabel
from citewell.ingestion.pipeline import _EMBED_BATCH_CHUNKS, Ingestor, TextDocument
from citewell.retrieval.index import open_version
from tests.ingestion.test_chunk_recipe import RecordingEmbedder

LABEL = AccessLabel(classification="public", groups=frozenset({"everyone"}))
DOCUMENTS = _EMBED_BATCH_CHUNKS + 40  # one short chunk each: a full batch and part of another


def notes() -> list[TextDocument]:
    return [
        TextDocument(
            doc_id=f"d{i}", title=f"Note {i}", text=f"Berth {i} opens at dawn.", label=LABEL
        )
        for i in range(DOCUMENTS)
    ]


class CountingIngestor(Ingestor):
    chunked = 0

    def chunk(self, parsed, file_name):
        self.chunked += 1
        return super().chunk(parsed, file_name)


class GatedEmbedder(RecordingEmbedder):
    """Its first batch waits (up to 10 s) until a document past that batch has been chunked."""

    def __init__(self) -> None:
        super().__init__()
        self.ingestor: CountingIngestor | None = None
        self.calls = 0
        self.chunked_while_embedding = False

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == 1 and self.ingestor is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.ingestor.chunked <= len(texts):
                time.sleep(0.01)
            self.chunked_while_embedding = self.ingestor.chunked > len(texts)
        return super().embed_documents(texts)


def test_the_next_documents_are_chunked_while_a_batch_embeds(make_settings):
    settings = make_settings()
    embedder = GatedEmbedder()
    ingestor = CountingIngestor(settings, embedder=embedder)
    embedder.ingestor = ingestor
    docs = notes()

    report = ingestor.ingest_texts(docs, settings.index, "notes")

    assert embedder.chunked_while_embedding
    assert embedder.calls == 2 and len(embedder.texts) == DOCUMENTS
    assert len(report.added) == DOCUMENTS and not report.failed
    opened = open_version(settings)
    try:
        ids = [d.doc_id for d in opened.manifest.iter_documents()]
        by_doc = opened.vectors.chunk_ids_by_document(ids)
        assert sorted(ids) == sorted(d.doc_id for d in docs)
        assert all(len(chunks) == 1 for chunks in by_doc.values())
    finally:
        opened.close()


class FailingEmbedder(RecordingEmbedder):
    """Fails on its second batch, as a model runtime running out of memory would."""

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if self.texts:
            raise RuntimeError("embedding runtime failed")
        return super().embed_documents(texts)


def test_a_batch_that_fails_to_embed_fails_the_run_and_publishes_nothing(make_settings):
    settings = make_settings()
    docs = notes()
    ingestor = Ingestor(settings, embedder=FailingEmbedder())

    with pytest.raises(RuntimeError, match="embedding runtime failed"):
        ingestor.ingest_texts(docs, settings.index, "notes")

    with pytest.raises(IndexNotFoundError):
        open_version(settings)
    assert not [t for t in threading.enumerate() if t.name.startswith("citewell-embed")]
