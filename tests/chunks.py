"""One way to make a chunk by hand, for tests and benchmarks that need chunks without parsing
documents: what a caller does not name gets a plain default (a public, whole-text chunk)."""

from __future__ import annotations

from datetime import datetime

from citewell.core.models import Chunk

LEVELS = ("public", "internal", "confidential", "restricted")


def make_test_chunk(
    chunk_id: str,
    text: str,
    *,
    doc_id: str | None = None,
    index: int = 0,
    title: str = "",
    section: str | None = None,
    source: str = "test",
    source_uri: str | None = None,
    doc_type: str = "txt",
    page: int | None = None,
    char_start: int = 0,
    rank: int = 0,
    groups: tuple[str, ...] = ("everyone",),
    modified_at: datetime | None = None,
) -> Chunk:
    """A chunk of ``text`` spanning ``char_start`` onwards, classified at level ``rank``; its
    document is ``doc_id`` (default: the chunk id) at ``source_uri`` (default:
    ``<source>:<chunk_id>``)."""
    return Chunk(
        chunk_id=chunk_id,
        doc_id=doc_id or chunk_id,
        chunk_index=index,
        text=text,
        title=title,
        section=section,
        source=source,
        source_uri=source_uri or f"{source}:{chunk_id}",
        doc_type=doc_type,
        page=page,
        char_start=char_start,
        char_end=char_start + len(text),
        classification=LEVELS[rank],
        classification_rank=rank,
        groups=groups,
        modified_at=modified_at,
    )
