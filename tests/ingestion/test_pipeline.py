"""End-to-end refresh cases on real files with the real embedder and stores."""

from __future__ import annotations

from typing import Any

import pytest

from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import IndexLayout, open_version
from citewell.retrieval.service import ServingIndex
from tests.ingestion.kb_fixture import LABELS, write_kb

pytestmark = pytest.mark.slow

ALL_SEEING = Principal(
    name="auditor", clearance="restricted", groups=frozenset({"hr", "engineering", "finance"})
)


def index_state(settings: Any) -> dict[str, Any]:
    """Everything that defines the index contents, without timestamps."""
    opened = open_version(settings)
    try:
        docs = {
            d.relative_path: (d.content_hash, d.classification, d.groups, d.labelled, d.chunk_ids)
            for d in opened.manifest.iter_documents()
        }
        doc_ids = [d.doc_id for d in opened.manifest.iter_documents()]
        stored = opened.vectors.chunk_ids_by_document(doc_ids)
        vector_chunks = sorted(cid for ids in stored.values() for cid in ids)
        return {
            "docs": docs,
            "vector_chunks": vector_chunks,
            "vector_count": opened.vectors.count(),
            "bm25_count": len(opened.lexical),
        }
    finally:
        opened.close()


def search_texts(settings, embedder, principal, query, mode=SearchMode.HYBRID):
    service = ServingIndex(settings, embedder=embedder)
    try:
        result = service.search(principal, SearchRequest(query=query, k=10, mode=mode))
        return [item.chunk for item in result.results]
    finally:
        service.close()


def test_first_ingest_reports_failures_unlabelled_and_banners(tmp_path, make_settings, embedder):
    settings = make_settings()
    kb = write_kb(tmp_path / "kb")
    report = Ingestor(settings, embedder=embedder).ingest_folder(kb, source_name="kb")
    assert sorted(report.added) == sorted(
        ["public/press.md", "hr/leave.md", "eng/runbook.txt", "notice.txt", "orphan.txt"]
    )
    assert [f.source_uri.rsplit("/", 1)[-1] for f in report.failed] == ["broken.pdf"]
    assert report.failed[0].reason
    assert report.unlabelled == ("orphan.txt",)
    state = index_state(settings)
    # The banner raised the labelled level (internal → confidential), groups unchanged.
    assert state["docs"]["notice.txt"][1:3] == ("confidential", ("everyone",))
    # Unlabelled: most restrictive level, no groups → visible to nobody.
    assert state["docs"]["orphan.txt"][1:4] == ("restricted", (), False)
    assert state["vector_count"] == state["bm25_count"] == len(state["vector_chunks"])

    everyone = Principal(name="eve", clearance="restricted", groups=frozenset({"all-staff"}))
    for mode in SearchMode:
        found = search_texts(settings, embedder, everyone, "badge audit key cards", mode)
        assert all("badge" not in c.text for c in found), mode


def test_refresh_cases_unchanged_changed_deleted_relabeled(tmp_path, make_settings, embedder):
    settings = make_settings()
    kb = write_kb(tmp_path / "kb")
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_folder(kb, source_name="kb")
    first = index_state(settings)

    again = ingestor.ingest_folder(kb, source_name="kb")
    assert again.embeddings_computed == 0 and again.chunks_written == 0
    assert len(again.unchanged) == 5 and not (again.added or again.updated or again.deleted)
    assert index_state(settings)["docs"] == first["docs"]

    (kb / "eng/runbook.txt").write_text(
        "Deployment runbook\n\nDeploy with the canary procedure: five percent of traffic first.",
        encoding="utf-8",
    )
    (kb / "public/press.md").unlink()
    (kb / "citewell.labels.yaml").write_text(
        LABELS.replace("groups: [hr]", "groups: [hr, finance]"), encoding="utf-8"
    )
    report = ingestor.ingest_folder(kb, source_name="kb")
    assert report.updated == ("eng/runbook.txt",)
    assert report.deleted == ("public/press.md",)
    assert report.relabeled == ("hr/leave.md",)
    state = index_state(settings)
    assert "public/press.md" not in state["docs"]
    assert state["docs"]["hr/leave.md"][2] == ("finance", "hr")
    assert state["vector_count"] == state["bm25_count"] == len(state["vector_chunks"])

    finance = Principal(name="fin", clearance="confidential", groups=frozenset({"finance"}))
    # Hybrid: BM25 statistics over the two chunks this scope sees give "parental" an idf of 0.
    found = search_texts(settings, embedder, finance, "parental leave weeks", SearchMode.HYBRID)
    assert any("parental" in c.text for c in found)
    engineer = Principal(name="eng", clearance="internal", groups=frozenset({"engineering"}))
    texts = [c.text for c in search_texts(settings, embedder, engineer, "deploy procedure")]
    assert any("canary" in t for t in texts)
    assert not any("blue-green" in t for t in texts)
    for chunk in search_texts(settings, embedder, ALL_SEEING, "Route Planner fuel"):
        assert "Route Planner" not in chunk.text


def test_failed_run_leaves_published_version(tmp_path, make_settings, embedder, monkeypatch):
    settings = make_settings()
    kb = write_kb(tmp_path / "kb")
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_folder(kb, source_name="kb")
    before = index_state(settings)
    layout = IndexLayout(settings)
    version = layout.current_version()

    (kb / "eng/runbook.txt").write_text("A new runbook text about ferries.", encoding="utf-8")

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(type(embedder), "embed_documents", explode)
    with pytest.raises(RuntimeError):
        ingestor.ingest_folder(kb, source_name="kb")
    monkeypatch.undo()
    assert layout.current_version() == version
    assert index_state(settings) == before
    assert not any(layout.staging_dir.iterdir())
