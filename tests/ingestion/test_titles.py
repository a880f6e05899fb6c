"""Document titles: unusable metadata titles give way to a first-page heading or the file name."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.ingestion.models import Element
from citewell.ingestion.parsing import (
    name_title,
    own_title,
    parse_document,
    stem_title,
    usable_title,
)


@pytest.mark.parametrize(
    "title",
    [
        "Form 10-Q for Microsoft Corp filed 10/24/2022",
        "04.01.2023 10Q Document",
        "Annual report",
        "Über die Lage",
    ],
)
def test_usable_titles(title):
    assert usable_title(title)


@pytest.mark.parametrize(
    "title",
    [
        None,
        "",
        "   ",
        "0000320193-23-000077",  # SEC accession number
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # UUID
        "d41d8cd98f00b204e9800998ecf8427e",  # MD5
        "10-Q",  # no word of three letters
        "$",
        "Untitled",
        "Document1",
        "Slide 3",
        "Microsoft Word - report.docx",
        "final_v2.pdf",
        "x" * 201,
    ],
)
def test_unusable_titles(title):
    assert not usable_title(title)


def test_stem_title_turns_separators_into_spaces():
    assert stem_title("2023 Q3 AAPL") == "2023 Q3 AAPL"
    assert stem_title("q3_report-final.v2") == "q3 report final v2"
    assert stem_title("___") == "___"  # nothing else to show


def _title(text: str, page: int | None) -> Element:
    return Element(kind="title", text=text, page=page, char_start=0, char_end=len(text))


def choose_title(metadata_title: str | None, elements: list[Element], stem: str) -> str:
    return own_title(metadata_title, elements) or name_title(stem)  # as parsing titles


def test_choose_title_prefers_usable_metadata_then_first_page_heading_then_stem():
    headings = [_title("$", 1), _title("Quarterly Report", 1), _title("Risk Factors", 3)]
    assert choose_title("Form 10-Q for Acme", headings, "acme") == "Form 10-Q for Acme"
    assert choose_title("0000320193-23-000077", headings, "acme") == "Quarterly Report"
    # A heading deep in the document names a section, not the document.
    assert choose_title("Untitled", headings[2:], "2023_Q3-ACME") == "2023 Q3 ACME"
    assert choose_title(None, [], "notes") == "notes"


def test_pdf_with_accession_number_title_is_named_by_its_largest_cover_heading(
    shared_data: Path,
):
    # The Info title is "0000320193-23-000077"; the cover's banner ("UNITED STATES SECURITIES
    # AND EXCHANGE COMMISSION") comes first, the company's name is set largest.
    path = shared_data / "qa" / "docugami_sec10q" / "docs" / "2023 Q3 AAPL.pdf"
    assert parse_document(path, "pdf").title == "Apple Inc."
    amazon = shared_data / "qa" / "docugami_sec10q" / "docs" / "2023 Q3 AMZN.pdf"
    assert parse_document(amazon, "pdf").title == "AMAZON.COM, INC."


# --- titles named after the file, through the pipeline ---------------------------------------
_NO_HEADING = b"Plain words about the travel policy and nothing that reads as a heading.\n"
_LABELS = b"default: {classification: internal, groups: [everyone]}\n"


def _titles(settings, index: str) -> dict[str, str]:
    from citewell.retrieval.index import IndexLayout
    from citewell.retrieval.manifest import Manifest

    layout = IndexLayout(settings, index)
    version = layout.current_version()
    assert version is not None
    manifest = Manifest(layout.version_dir(version) / "manifest.sqlite", read_only=True)
    try:
        return {doc.relative_path: doc.title for doc in manifest.documents().values()}
    finally:
        manifest.close()


def test_a_parse_reused_from_the_cache_is_titled_by_the_file_it_is_reused_for(
    tmp_path, make_settings, embedder
):
    # The parse cache is keyed by content, but a document with no title of its own is named
    # after its file: a second file with the same bytes was titled with the first one's name.
    from citewell.ingestion.pipeline import Ingestor

    root = tmp_path / "kb"
    root.mkdir()
    (root / "citewell.labels.yaml").write_bytes(_LABELS)
    (root / "alpha_notes.md").write_bytes(_NO_HEADING)
    settings = make_settings()
    cache = tmp_path / "parsed"
    Ingestor(settings, embedder=embedder, parse_cache_dir=cache).ingest_folder(root, index="kb")
    (root / "zulu_minutes.md").write_bytes(_NO_HEADING)
    Ingestor(settings, embedder=embedder, parse_cache_dir=cache).ingest_folder(root, index="kb")
    assert _titles(settings, "kb") == {
        "alpha_notes.md": "alpha notes",
        "zulu_minutes.md": "zulu minutes",
    }


@pytest.mark.slow
def test_an_object_without_a_title_of_its_own_is_titled_by_its_key_not_its_download(
    s3_env, make_settings, embedder
):
    # Objects are downloaded to "<doc id>.<type>" for the parse workers: the title was the
    # document id ("831654fb 531b 5bdb ..."), in citations and in every chunk's header.
    from citewell.ingestion.pipeline import Ingestor
    from tests.s3_server import bucket_with, s3_source

    bucket = bucket_with(
        s3_env, {"citewell.labels.yaml": _LABELS, "notes/quarterly_plan.md": _NO_HEADING}
    )
    settings = make_settings()
    with s3_source(bucket, name="kb") as s3:
        Ingestor(settings, embedder=embedder).ingest_objects(s3, index="kb")
    assert _titles(settings, "kb") == {"notes/quarterly_plan.md": "quarterly plan"}
