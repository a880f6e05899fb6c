"""Sensitivity labels through a real refresh: labelled Office/PDF/e-mail files in a folder,
searched as several principals, then relabelled, tampered with and refreshed."""

from __future__ import annotations

import pytest

from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import open_version
from citewell.retrieval.service import ServingIndex
from tests.ingestion.mip_files import (
    CONFIDENTIAL,
    HIGHLY,
    OTHER_TENANT,
    POLICY_YAML,
    PUBLIC,
    TENANT,
    UNMAPPED,
    add_label_parts,
    compact_msip_header,
    forbid_label_reads_here,
    msip_header,
    msip_properties,
    remove_label_parts,
    write_docx,
    write_eml,
    write_msg,
    write_pdf,
    write_pptx,
)

pytestmark = pytest.mark.slow

EVERYONE = Principal(name="eve", clearance="internal", groups=frozenset({"everyone"}))
FINANCE = Principal(name="fin", clearance="confidential", groups=frozenset({"finance"}))
LEGAL = Principal(name="lee", clearance="restricted", groups=frozenset({"legal"}))
AUDITOR = Principal(
    name="aud", clearance="restricted", groups=frozenset({"finance", "legal", "hr"})
)

LABELS = "default: {classification: internal, groups: [everyone]}\n" + POLICY_YAML

DOCS = {
    "budget.docx": ("Budget plan. The zebra budget grows by four percent next year.", CONFIDENTIAL),
    "merger.pptx": ("Merger memo. Project walrus acquires a supplier in spring.", HIGHLY),
    "canteen.pdf": ("Canteen menu. Pelican soup is served on Fridays.", PUBLIC),
    "offsite.eml": ("Offsite plan. The flamingo offsite is in Lisbon.", CONFIDENTIAL),
    "unmapped.docx": ("Unmapped label. The narwhal figures are secret.", UNMAPPED),
    "foreign.docx": ("Foreign tenant. The axolotl contract is pending.", "foreign"),
    "plain.docx": ("Plain notes. The heron parking rules changed.", None),
}


def build(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "citewell.labels.yaml").write_text(LABELS)
    for name, (text, label) in DOCS.items():
        path = folder / name
        if name.endswith(".docx"):
            write_docx(path, text)
            if label == "foreign":
                add_label_parts(path, custom=msip_properties(CONFIDENTIAL, site=OTHER_TENANT))
            elif label:
                add_label_parts(path, custom=msip_properties(label))
        elif name.endswith(".pptx"):
            write_pptx(path, text)
            add_label_parts(
                path,
                label_info=[{"id": label, "enabled": "1", "removed": "0", "siteId": TENANT}],
            )
        elif name.endswith(".pdf"):
            write_pdf(path, text, info=msip_properties(label), xmp=msip_properties(label))
        else:
            write_eml(path, text, msip_header(label))
    return folder


def visible(settings, embedder, principal, query):
    service = ServingIndex(settings, embedder=embedder)
    try:
        request = SearchRequest(query=query, k=20, mode=SearchMode.DENSE)
        result = service.search(principal, request)
        return {item.chunk.source_uri.rsplit("/", 1)[-1] for item in result.results}
    finally:
        service.close()


def manifest(settings):
    opened = open_version(settings)
    try:
        return {d.relative_path: d for d in opened.manifest.iter_documents()}
    finally:
        opened.close()


def test_labels_from_documents_are_enforced_and_never_lowered(tmp_path, make_settings, embedder):
    settings = make_settings()
    folder = build(tmp_path / "kb")
    ingestor = Ingestor(settings, embedder=embedder)
    report = ingestor.ingest_folder(folder, source_name="kb")
    assert not report.failed, report.failed
    refused = {f.source_uri.rsplit("/", 1)[-1]: f.reason for f in report.label_refusals}
    assert set(refused) == {"unmapped.docx", "foreign.docx"}
    assert "not mapped" in refused["unmapped.docx"]
    assert "unknown tenant" in refused["foreign.docx"]
    assert {"unmapped.docx", "foreign.docx"} <= set(report.unlabelled)

    docs = manifest(settings)
    assert (docs["budget.docx"].classification, docs["budget.docx"].groups) == (
        "confidential",
        ("finance",),
    )
    assert docs["merger.pptx"].classification == "restricted"
    assert docs["canteen.pdf"].classification == "internal"  # public label never lowers the default
    assert docs["offsite.eml"].classification == "confidential"
    assert docs["plain.docx"].classification == "internal"

    query = "zebra walrus pelican flamingo narwhal axolotl heron"
    assert visible(settings, embedder, EVERYONE, query) == {"canteen.pdf", "plain.docx"}
    everyone = {"canteen.pdf", "plain.docx"}  # every principal holds the group "everyone"
    assert visible(settings, embedder, FINANCE, query) == {"budget.docx", "offsite.eml", *everyone}
    assert visible(settings, embedder, LEGAL, query) == {"merger.pptx", *everyone}
    # Refused labels: visible to nobody, not even the auditor.
    assert "unmapped.docx" not in visible(settings, embedder, AUDITOR, query)
    assert "foreign.docx" not in visible(settings, embedder, AUDITOR, query)

    # Tamper: strip the label from the budget (content changes), and relabel the memo to Public.
    remove_label_parts(folder / "budget.docx")
    add_label_parts(
        folder / "merger.pptx",
        label_info=[{"id": PUBLIC, "enabled": "1", "removed": "0", "siteId": TENANT}],
    )
    report = ingestor.ingest_folder(folder, source_name="kb")
    assert not report.failed, report.failed
    assert {"budget.docx", "merger.pptx"} <= set(report.updated)
    docs = manifest(settings)
    assert docs["budget.docx"].classification == "confidential"  # retained
    assert docs["merger.pptx"].classification == "restricted"  # retained
    assert visible(settings, embedder, EVERYONE, query) == {"canteen.pdf", "plain.docx"}

    # A no-change refresh keeps everything as it is and writes nothing.
    report = ingestor.ingest_folder(folder, source_name="kb")
    assert not (report.added or report.updated or report.relabeled or report.deleted)
    assert manifest(settings)["budget.docx"].classification == "confidential"
    # A rebuild from scratch remembers the labels the published version saw.
    ingestor.ingest_folder(folder, source_name="kb", fresh=True)
    assert manifest(settings)["budget.docx"].classification == "confidential"
    assert manifest(settings)["merger.pptx"].classification == "restricted"

    # Allowing downgrades in the configuration releases them on the next refresh.
    (folder / "citewell.labels.yaml").write_text(LABELS + "  allow_downgrade: true\n")
    report = ingestor.ingest_folder(folder, source_name="kb")
    assert {"budget.docx", "merger.pptx"} <= set(report.relabeled)
    docs = manifest(settings)
    assert docs["budget.docx"].classification == "internal"
    assert "budget.docx" in visible(settings, embedder, EVERYONE, "zebra budget")


def test_mapping_a_label_later_relabels_without_reparsing(tmp_path, make_settings, embedder):
    settings = make_settings()
    folder = build(tmp_path / "kb")
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_folder(folder, source_name="kb")
    (folder / "citewell.labels.yaml").write_text(
        LABELS.replace(
            "sensitivity_labels:\n",
            f'sensitivity_labels:\n  "{UNMAPPED}": {{classification: restricted, groups: [hr]}}\n',
        )
    )
    report = ingestor.ingest_folder(folder, source_name="kb")
    assert report.relabeled == ("unmapped.docx",)
    assert report.embeddings_computed == 0
    assert {f.source_uri.rsplit("/", 1)[-1] for f in report.label_refusals} == {"foreign.docx"}
    docs = manifest(settings)
    assert (docs["unmapped.docx"].classification, docs["unmapped.docx"].labelled) == (
        "restricted",
        True,
    )
    assert "unmapped.docx" in visible(settings, embedder, AUDITOR, "narwhal")


def test_a_label_that_could_not_be_read_is_read_again_at_the_next_refresh(
    tmp_path, make_settings, embedder, monkeypatch
):
    # As the two Microsoft 10-Qs were before pypdf's limit was raised: refused as unreadable,
    # recorded so, and then never read again while the file did not change.
    import citewell.ingestion.pipeline as pipeline
    from citewell.ingestion.sensitivity import SensitivityReading

    settings = make_settings()
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "citewell.labels.yaml").write_text(LABELS)
    write_pdf(folder / "canteen.pdf", DOCS["canteen.pdf"][0], info=msip_properties(PUBLIC))
    ingestor = Ingestor(settings, embedder=embedder)
    failing = SensitivityReading(problems=("sensitivity label metadata unreadable: X",))
    with monkeypatch.context() as patched:
        # The reading as the workers return it (they read a local file's labels).
        patched.setattr(pipeline._Parsing, "labels", lambda parsing, candidate: failing)
        first = ingestor.ingest_folder(folder, source_name="kb")
    assert [f.source_uri.rsplit("/", 1)[-1] for f in first.label_refusals] == ["canteen.pdf"]
    assert visible(settings, embedder, EVERYONE, "pelican") == set()

    forbid_label_reads_here(monkeypatch)  # read again, by a parse worker
    report = ingestor.ingest_folder(folder, source_name="kb")
    assert report.relabeled == ("canteen.pdf",) and not report.label_refusals
    assert report.embeddings_computed == 0
    assert visible(settings, embedder, EVERYONE, "pelican") == {"canteen.pdf"}


def test_labels_of_a_file_parsed_from_the_cache_are_read_by_a_parse_worker(
    tmp_path, make_settings, embedder, monkeypatch
):
    # A cached parse (Airflow's process tasks fill the cache) means no parse job: the labels
    # must still be read under the workers' limits.
    settings = make_settings()
    folder = build(tmp_path / "kb")
    ingestor = Ingestor(settings, embedder=embedder, parse_cache_dir=tmp_path / "parsed")
    ingestor.ingest_folder(folder, source_name="kb")
    forbid_label_reads_here(monkeypatch)
    report = ingestor.ingest_folder(folder, source_name="kb", fresh=True)
    assert not report.failed, report.failed
    assert {f.source_uri.rsplit("/", 1)[-1] for f in report.label_refusals} == {
        "unmapped.docx",
        "foreign.docx",
    }
    docs = manifest(settings)
    assert docs["budget.docx"].classification == "confidential"
    assert docs["merger.pptx"].classification == "restricted"


def test_a_labelled_outlook_message_is_enforced(tmp_path, make_settings, embedder, shared_data):
    """A real .msg whose transport headers carry msip_labels: parsed by unstructured, labelled
    from the header, served only to who the mapped label lets through."""
    settings = make_settings()
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "citewell.labels.yaml").write_text(LABELS)
    write_msg(shared_data, folder / "labelled.msg", compact_msip_header(CONFIDENTIAL))
    write_msg(shared_data, folder / "foreign.msg", compact_msip_header(HIGHLY, site=OTHER_TENANT))
    report = Ingestor(settings, embedder=embedder).ingest_folder(folder, source_name="mail")
    assert not report.failed, report.failed
    assert [f.source_uri.rsplit("/", 1)[-1] for f in report.label_refusals] == ["foreign.msg"]
    docs = manifest(settings)
    assert (docs["labelled.msg"].classification, docs["labelled.msg"].groups) == (
        "confidential",
        ("finance",),
    )
    assert not docs["foreign.msg"].labelled
    query = "fake email with attachment"
    assert visible(settings, embedder, FINANCE, query) == {"labelled.msg"}
    assert visible(settings, embedder, EVERYONE, query) == set()
    assert visible(settings, embedder, AUDITOR, query) == {"labelled.msg"}


def test_a_local_files_labels_are_read_by_the_parse_workers(
    tmp_path, make_settings, embedder, monkeypatch
):
    # Under the workers' time and memory limits, not in the run's own process: a hostile PDF
    # whose catalog holds five arrays of 1.9M numbers took pypdf 19 s there.
    settings = make_settings()
    folder = build(tmp_path / "kb")
    forbid_label_reads_here(monkeypatch)
    report = Ingestor(settings, embedder=embedder).ingest_folder(folder, source_name="kb")
    assert not report.failed, report.failed
    docs = manifest(settings)
    assert (docs["budget.docx"].classification, docs["budget.docx"].groups) == (
        "confidential",
        ("finance",),
    )
    assert docs["merger.pptx"].classification == "restricted"
    assert docs["offsite.eml"].classification == "confidential"
    refused = {f.source_uri.rsplit("/", 1)[-1] for f in report.label_refusals}
    assert refused == {"unmapped.docx", "foreign.docx"}
