"""Document titles: unusable metadata titles give way to a first-page heading or the file name."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.ingestion.models import Element
from citewell.ingestion.parsing import choose_title, parse_document, stem_title, usable_title


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
