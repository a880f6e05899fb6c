"""Publishing a few small notes through the real ingestor (hashing embedder), for tests that
need versions on disk rather than particular content."""

from __future__ import annotations

from citewell.core.models import AccessLabel
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from tests.agent.fakes import HashingEmbedder

PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))


def publish_notes(settings: Settings, revision: int, count: int) -> str | None:
    """``count`` public notes at ``revision`` into ``settings.index``; the version published."""
    docs = [
        TextDocument(
            doc_id=f"doc-{i}",
            title=f"Note {i}",
            text=f"Revision {revision} of note {i} about harbor cranes.",
            label=PUBLIC,
        )
        for i in range(count)
    ]
    report = Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        docs, index=settings.index, source_name="notes"
    )
    return report.index_version
