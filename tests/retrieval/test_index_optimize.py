"""IndexWriter.commit builds HNSW for large writes (a broad filter otherwise scans every point)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as edge

from citewell.core.models import Chunk
from citewell.core.settings import Settings
from citewell.retrieval.index import IndexLayout, IndexWriter
from citewell.retrieval.manifest import DocumentEntry
from tests.chunks import make_test_chunk

DIM = 384


def _chunks(n: int, offset: int = 0) -> list[Chunk]:
    return [
        make_test_chunk(
            str(uuid.UUID(int=offset + i + 1)),
            f"chunk {offset + i}",
            doc_id=f"doc-{offset + i}",
            title="t",
            source_uri=f"test:{offset + i}",
        )
        for i in range(n)
    ]


def _write(settings: Settings, n: int, offset: int, fresh: bool) -> None:
    rng = np.random.default_rng(offset)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = _chunks(n, offset)
    with IndexWriter(
        settings, "opt", embedding_model="m", embedding_key="k", dimension=DIM, fresh=fresh
    ) as writer:
        writer.vectors.upsert(chunks, vectors)
        # The manifest lists every chunk: publishing refuses a vector count it does not match.
        for chunk in chunks:
            writer.manifest.put(_entry(chunk))
        writer.commit()


def _entry(chunk: Chunk) -> DocumentEntry:
    return DocumentEntry(
        doc_id=chunk.doc_id,
        source=chunk.source,
        source_uri=chunk.source_uri,
        relative_path=chunk.doc_id,
        title=chunk.title,
        doc_type=chunk.doc_type,
        content_hash="0" * 64,
        label_fingerprint="public",
        classification=chunk.classification,
        classification_rank=chunk.classification_rank,
        groups=chunk.groups,
        labelled=True,
        chunk_ids=(chunk.chunk_id,),
        refreshed_at=datetime.now(UTC),
    )


def _indexed(settings: Settings) -> tuple[int, int]:
    layout = IndexLayout(settings, "opt")
    version = layout.current_version()
    assert version is not None
    shard = edge.EdgeShard.load(str(layout.version_dir(version) / "vectors"))
    try:
        info = shard.info()
        return int(info.points_count), int(info.indexed_vectors_count)
    finally:
        shard.close()


@pytest.mark.slow
def test_commit_builds_hnsw_for_a_large_write_and_skips_small_ones(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    _write(settings, 12_000, 0, fresh=True)
    points, indexed = _indexed(settings)
    assert points == 12_000
    assert indexed == 12_000
    # A small refresh on top stays in an unindexed segment: commit does no HNSW work for it.
    _write(settings, 100, 12_000, fresh=False)
    points, indexed = _indexed(settings)
    assert (points, indexed) == (12_100, 12_000)
