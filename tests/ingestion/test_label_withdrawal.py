"""A document whose labels can no longer be determined is withdrawn from serving until they can
(issue 16, item 1): end to end through the pipeline, the published index and search."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import open_version
from citewell.retrieval.service import ServingIndex

pytestmark = pytest.mark.slow

LABELS = "default: {classification: internal, groups: [staff]}\n"
SIDECAR = "classification: confidential\ngroups: [staff]\n"
PLAN = "# Harbour plan\n\nThe Gdansk harbour expansion adds four cranes in spring.\n"
MEMO = "# Canteen memo\n\nThe canteen serves soup on Fridays.\n"
# Sees everything a labelled document in this folder can be: a withdrawn one must still vanish.
READER = Principal(name="reader", clearance="restricted", groups=frozenset({"staff"}))

BROKEN_SIDECARS = {
    "invalid YAML": "classification: [confidential\n",
    "misspelt key": "classification: restricted\ngroups: [staff]\nclasification: x\n",
    "unknown key": "classification: restricted\ngroups: [staff]\nowner: alice\n",
    "wrong type": "classification: restricted\ngroups: [7]\n",
    "duplicate key": "classification: restricted\nclassification: public\ngroups: [staff]\n",
    "unknown level": "classification: topsecret\ngroups: [staff]\n",
    "not a mapping": "- restricted\n",
}


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (root / "plan.md").write_text(PLAN, encoding="utf-8")
    (root / "plan.md.labels.yaml").write_text(SIDECAR, encoding="utf-8")
    (root / "memo.md").write_text(MEMO, encoding="utf-8")
    return root


def _found(settings: Any, embedder: Any, query: str) -> set[str]:
    """Texts of every chunk the reader gets for ``query`` in any mode."""
    service = ServingIndex(settings, embedder=embedder)
    try:
        texts: set[str] = set()
        for mode in SearchMode:
            request = SearchRequest(query=query, k=10, mode=mode, rerank=False)
            texts |= {r.chunk.text for r in service.search(READER, request).results}
        return texts
    finally:
        service.close()


def _indexed(settings: Any) -> dict[str, tuple[str, int]]:
    """relative path → (classification, chunks in vectors); the stores agree with the manifest."""
    opened = open_version(settings)
    try:
        docs = {d.relative_path: d for d in opened.manifest.iter_documents()}
        stored = opened.vectors.chunk_ids_by_document([d.doc_id for d in docs.values()])
        chunks = sum(len(d.chunk_ids) for d in docs.values())
        assert opened.vectors.count() == len(opened.lexical) == chunks
        return {p: (d.classification, len(stored.get(d.doc_id, []))) for p, d in docs.items()}
    finally:
        opened.close()


def _break(sidecar: Path, how: str, tmp_path: Path) -> None:
    sidecar.unlink()
    if how == "symlink":
        target = tmp_path / "elsewhere.labels.yaml"
        target.write_text(SIDECAR, encoding="utf-8")
        os.symlink(target, sidecar)
    else:
        sidecar.write_text(BROKEN_SIDECARS[how], encoding="utf-8")


# End to end for three kinds of breakage; every kind is a LabelError from the same resolution
# (tests/ingestion/test_labels.py, tests/security/test_label_files_fuzz.py), so it takes the same
# path here.
@pytest.mark.parametrize("how", ["misspelt key", "duplicate key", "symlink"])
def test_broken_sidecar_withdraws_until_fixed(
    tmp_path: Path, make_settings: Any, embedder: Any, how: str
) -> None:
    settings = make_settings()
    folder = _folder(tmp_path / "docs")
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_folder(folder, source_name="docs")
    assert _indexed(settings)["plan.md"][0] == "confidential"
    assert any("four cranes" in t for t in _found(settings, embedder, "harbour cranes"))

    _break(folder / "plan.md.labels.yaml", how, tmp_path)
    report = ingestor.ingest_folder(folder, source_name="docs")
    assert not any("cranes" in t for t in _found(settings, embedder, "harbour cranes"))
    indexed = _indexed(settings)
    assert "plan.md" not in indexed and "memo.md" in indexed
    assert report.withdrawn == ("plan.md",)
    [failure] = [f for f in report.failed if f.source_uri.endswith("/plan.md")]
    assert "labels cannot be determined" in failure.reason
    assert "plan.md.labels.yaml" in failure.reason

    # Still broken: still withdrawn, still reported, nothing else disturbed.
    again = ingestor.ingest_folder(folder, source_name="docs")
    assert "plan.md" in [f.source_uri.rsplit("/", 1)[-1] for f in again.failed]
    assert "plan.md" not in _indexed(settings) and again.unchanged == ("memo.md",)
    assert not any("cranes" in t for t in _found(settings, embedder, "harbour cranes"))

    (folder / "plan.md.labels.yaml").unlink()
    (folder / "plan.md.labels.yaml").write_text(SIDECAR, encoding="utf-8")
    fixed = ingestor.ingest_folder(folder, source_name="docs")
    assert fixed.added == ("plan.md",) and not fixed.failed and not fixed.withdrawn
    assert _indexed(settings)["plan.md"][0] == "confidential"
    assert any("four cranes" in t for t in _found(settings, embedder, "harbour cranes"))


def test_a_kept_version_is_served_only_under_the_current_label(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    """A document refused at discovery (here: grown over the size limit) keeps its indexed
    version, but its label follows the current files: raised when the sidecar is raised,
    withdrawn when the sidecar breaks."""
    settings = make_settings(max_file_bytes=200)
    folder = _folder(tmp_path / "docs")
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_folder(folder, source_name="docs")

    (folder / "plan.md").write_text(PLAN + "x" * 300, encoding="utf-8")
    (folder / "plan.md.labels.yaml").write_text("classification: restricted\n", encoding="utf-8")
    report = ingestor.ingest_folder(folder, source_name="docs")
    assert report.relabeled == ("plan.md",) and "too large" in report.failed[0].reason
    assert _indexed(settings)["plan.md"][0] == "restricted"

    (folder / "plan.md.labels.yaml").write_text("classification: [\n", encoding="utf-8")
    report = ingestor.ingest_folder(folder, source_name="docs")
    assert report.withdrawn == ("plan.md",)
    assert "plan.md" not in _indexed(settings)
    assert not any("cranes" in t for t in _found(settings, embedder, "harbour cranes"))


def test_a_version_kept_after_a_parse_failure_takes_the_new_label(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    settings = make_settings()
    folder = _folder(tmp_path / "docs")
    (folder / "report.pdf").write_bytes(_pdf("Quarterly tonnage rose at the Gdansk terminal."))
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_folder(folder, source_name="docs")
    assert _indexed(settings)["report.pdf"][0] == "internal"

    # The new bytes fail to parse and, in the same change, the document is labelled restricted:
    # the old text stays searchable only at the new level.
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\ntruncated")
    (folder / "report.pdf.labels.yaml").write_text("classification: restricted\n", "utf-8")
    report = ingestor.ingest_folder(folder, source_name="docs")
    assert report.relabeled == ("report.pdf",) and report.failed
    assert _indexed(settings)["report.pdf"][0] == "restricted"


def _pdf(text: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
