import random
import shutil
import sys
from pathlib import Path

import pytest

from citewell.core.errors import MissingDependencyError, ParseError
from citewell.ingestion import parsing
from citewell.ingestion.parsing import decode_text, parse_document, table_text
from tests.conftest import SAMPLE_DOCS

FILES = sorted(SAMPLE_DOCS)
HAS_SOFFICE = bool(shutil.which("soffice") or shutil.which("libreoffice"))
HAS_PANDOC = parsing._has_pandoc()
HAS_OCR = bool(shutil.which("tesseract") and shutil.which("pdftoppm"))

# Known-bad files and the reason each must give (ocr=False for the sweep: OCR is tested below).
EXPECTED_ERRORS: dict[str, str] = {
    "empty.txt": "empty document",
    "password.pdf": "encrypted PDF (password required)",
    "password_protected.xlsx": "password-protected .xlsx",
    "fake-encrypted.eml": "encrypted e-mail",
    "loremipsum-flat.pdf": "no text layer (scanned PDF)",
    "single_table.pdf": "no text layer (scanned PDF)",
}
if not HAS_SOFFICE:
    EXPECTED_ERRORS["fake.doc"] = "needs LibreOffice"
if not HAS_PANDOC:
    for name in ("README.rst", "fake.odt", "fake-doc.rtf", "winter-sports.epub"):
        EXPECTED_ERRORS[name] = "needs pandoc"

# Substrings each parsed file must contain: proof the right content came out, decoded right.
EXPECTED_TEXT: dict[str, str] = {
    "fake-html-cp1252.html": "My First Heading",
    "umlauts-non-utf8.md": "können",
    "fake-text-utf-16.txt": "This is a test document to use for unit tests.",
    "pypdf-issue-297-broken-xref.pdf": "test example",
    "copy-protected.pdf": "LayoutParser",
    "docx-tables.docx": "|",
    "family-day.eml": "Subject: Family Day",
    "email-no-utf8-2014-03-17.111517.eml": "Google Account",
    "fake-email-attachment.msg": "Subject: Fake email with attachment",
    "korean-text-with-tables.pdf": "포인트",
}
SLOW = {"winter-sports.epub", "2023-half-year-analyses-by-segment.xlsx"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in FILES]
)
def test_every_sample_parses_or_fails_with_a_clear_reason(name: str, sample_docs: Path):
    path = sample_docs / name
    doc_type = path.suffix.lstrip(".").lower()
    if name in EXPECTED_ERRORS:
        with pytest.raises(ParseError) as info:
            parse_document(path, doc_type, ocr=False)
        assert EXPECTED_ERRORS[name] in info.value.reason
        return
    doc = parse_document(path, doc_type, ocr=False)
    assert doc.text.strip()
    assert doc.title.strip()
    assert doc.doc_type == doc_type
    assert doc.text == "\n\n".join(e.text for e in doc.elements)
    for element in doc.elements:
        assert doc.text[element.char_start : element.char_end] == element.text
    assert "\ufffd" not in doc.text or name == "norwich-city.txt"
    if name in EXPECTED_TEXT:
        assert EXPECTED_TEXT[name] in doc.text


def test_sample_count_matches_manifest(sample_docs: Path):
    assert len(FILES) == 39
    assert sorted(p.name for p in sample_docs.iterdir() if p.name != "MANIFEST.tsv") == FILES
    manifest = (sample_docs / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert sorted(line.split("\t", 1)[0] for line in manifest) == FILES


def test_pdf_pages_and_titles(sample_docs: Path):
    doc = parse_document(sample_docs / "layout-parser-paper-fast.pdf", "pdf")
    assert doc.pages == 2
    assert {e.page for e in doc.elements} == {1, 2}
    assert doc.title.startswith("LayoutParser")
    assert any(e.kind == "title" for e in doc.elements)


SEC_FILINGS = Path("qa", "docugami_sec10q", "docs")


def test_a_pdf_table_row_keeps_its_label_with_its_figures(shared_data: Path):
    doc = parse_document(shared_data / SEC_FILINGS / "2022 Q3 AAPL.pdf", "pdf")
    statement = next(e.text for e in doc.elements if "Total net sales" in e.text)
    assert "Total net sales 82,959 81,434 304,182 282,457" in statement


def test_pdf_hyphens_pdfium_reports_as_noncharacters_are_hyphens(shared_data: Path):
    doc = parse_document(shared_data / SEC_FILINGS / "2022 Q3 INTC.pdf", "pdf")
    assert "\ufffe" not in doc.text
    assert "non-GAAP" in doc.text and "pre-tax gain" in doc.text


def test_a_pdf_row_broken_at_superscripts_stays_one_paragraph(sample_docs: Path):
    # PDFium ends a line at each affiliation mark ("Zejiang Shen1, Ruochen Zhang2 ...").
    doc = parse_document(sample_docs / "copy-protected.pdf", "pdf")
    authors = next(e.text for e in doc.elements if "Zejiang Shen" in e.text)
    assert "Ruochen Zhang" in authors and "Melissa Dell" in authors
    assert doc.title.startswith("LayoutParser: A Unified Toolkit")


def test_pptx_slides_and_tables(sample_docs: Path):
    doc = parse_document(sample_docs / "fake-power-point-table.pptx", "pptx")
    table = next(e for e in doc.elements if e.kind == "table")
    assert table.text.splitlines()[0] == "Column 1 | Column 2 | Column 3"
    assert table.page == 1
    assert doc.title == "A Slide with a Table"
    assert parse_document(sample_docs / "sample-presentation.pptx", "pptx").pages == 4


def test_email_header_element(sample_docs: Path):
    doc = parse_document(sample_docs / "family-day.eml", "eml")
    assert doc.elements[0].kind == "email_header"
    assert doc.metadata["subject"] == "Family Day"
    assert doc.title == "Family Day"


def test_missing_ocr_tools_give_a_clear_reason(monkeypatch, sample_docs: Path):
    monkeypatch.setattr(parsing.shutil, "which", lambda _name: None)
    with pytest.raises(MissingDependencyError, match="install Tesseract"):
        parse_document(sample_docs / "single_table.pdf", "pdf")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OCR, reason="tesseract and pdftoppm not installed")
def test_scanned_pdf_is_ocrd(sample_docs: Path):
    doc = parse_document(sample_docs / "loremipsum-flat.pdf", "pdf")
    assert "Lorem ipsum" in doc.text
    assert doc.elements[0].page == 1


def test_missing_libreoffice_is_reported(monkeypatch, sample_docs: Path):
    monkeypatch.setattr(parsing.shutil, "which", lambda _name: None)
    with pytest.raises(MissingDependencyError, match="needs LibreOffice"):
        parse_document(sample_docs / "fake.doc", "doc")


def test_missing_pandoc_is_reported(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(parsing, "_has_pandoc", lambda: False)
    readme = tmp_path / "README.rst"
    readme.write_text("Berths\n======\n\nCranes load vessels at berth four.\n", encoding="utf-8")
    with pytest.raises(MissingDependencyError, match="needs pandoc"):
        parse_document(readme, "rst")


def _nested_html(depth: int) -> str:
    return (
        "<html><body><p>Top paragraph.</p>"
        + "<div>" * depth
        + "<p>Deep paragraph.</p>"
        + "</div>" * depth
        + "<p>Bottom paragraph.</p></body></html>"
    )


def _html_email(body: str) -> bytes:
    headers = "From: a@example.com\nSubject: Deep\nContent-Type: text/html; charset=utf-8\n\n"
    return (headers + body).encode()


def _nested_rst(depth: int) -> bytes:
    """Each deeper indentation is a block quote inside the one before."""
    quotes = "".join(f"{'  ' * level}Level {level} quote.\n\n" for level in range(1, depth))
    return f"Title\n=====\n\nTop paragraph.\n\n{quotes}Bottom paragraph.\n".encode()


def _long_text_html(length: int) -> bytes:
    return b"<html><body><p>" + b"word " * (length // 5) + b"</p><p>After.</p></body></html>"


def test_a_document_after_one_past_the_limit_is_not_judged_by_it(tmp_path: Path) -> None:
    """The HTML parser is shared and keeps the last parse's errors."""
    deep = tmp_path / "deep.html"
    deep.write_text(_nested_html(300), encoding="utf-8")
    with pytest.raises(ParseError, match="nested deeper"):
        parse_document(deep, "html")
    plain = tmp_path / "plain.txt"
    plain.write_text("A plain note about harbor cranes.", encoding="utf-8")
    assert "harbor cranes" in parse_document(plain, "txt").text
    email = tmp_path / "family-day.eml"  # its HTML body goes through the same parser
    email.write_bytes(_html_email("<html><body><p>Family Day is on Friday.</p></body></html>"))
    assert "Family Day" in parse_document(email, "eml").text


def test_html_nested_within_the_parser_limit_keeps_every_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "nested.html"
    path.write_text(_nested_html(200), encoding="utf-8")
    text = parse_document(path, "html").text
    assert all(p in text for p in ("Top paragraph", "Deep paragraph", "Bottom paragraph"))


@pytest.mark.parametrize(
    ("name", "content", "doc_type", "reason"),
    [
        ("blank.md", b"  \n\n\t ", "md", "empty document"),
        ("trunc.pdf", b"%PDF-1.4\n1 0 obj <<", "pdf", "corrupt PDF"),
        ("notpdf.pdf", b"hello there", "pdf", "missing %PDF header"),
        ("trunc.docx", b"PK\x03\x04garbage", "docx", "corrupt .docx"),
        ("x.bin", b"\x00\x01", "bin", "unsupported file type"),
        ("noise.eml", random.Random(5).randbytes(4096), "eml", "not an e-mail message"),
        ("letter.eml", b"Dear team,\n\nThe offsite moves to May.\n", "eml", "not an e-mail"),
        # libxml2 stops at depth 256 without raising: the rest of the page was dropped.
        ("deep.html", _nested_html(300).encode(), "html", "nested deeper than 255 elements"),
        ("deep.md", b"# Notes\n\n" + b">" * 300 + b" Quoted.\n\nAfter.\n", "md", "nested deeper"),
        ("deep.eml", _html_email(_nested_html(300)), "eml", "nested deeper than 255 elements"),
        ("long.html", _long_text_html(11 << 20), "html", "past the HTML parser's limits"),
        ("deep.rst", _nested_rst(300), "rst", "nested deeper than 255 elements"),  # via pandoc
    ],
)
def test_broken_inputs(tmp_path: Path, name: str, content: bytes, doc_type: str, reason: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ParseError, match=reason):
        parse_document(path, doc_type)


def test_truncated_docx_zip(tmp_path: Path):
    import docx

    whole = tmp_path / "handbook.docx"
    handbook = docx.Document()
    handbook.add_heading("Handbook", level=1)
    handbook.add_paragraph("Cranes load vessels at berth four. " * 40)
    handbook.save(str(whole))
    data = whole.read_bytes()
    path = tmp_path / "half.docx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match=r"corrupt"):
        parse_document(path, "docx")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ("Grüße".encode("utf-16"), "Grüße"),
        ("Grüße".encode("utf-8-sig"), "Grüße"),
        (
            "Gr\u00fc\u00dfe \u2013 \u201cq\u201d".encode("cp1252"),
            "Gr\u00fc\u00dfe \u2013 \u201cq\u201d",
        ),
        (b"caf\xe9 \x81", "café \x81"),  # not cp1252 (0x81 undefined): Latin-1
    ],
)
def test_decode_text(data: bytes, text: str):
    assert decode_text(data) == text


def test_table_text():
    html = (
        "<table><tr><th>a</th><th> b  c </th></tr><tr><td></td><td></td></tr>"
        "<tr><td>1</td><td>2</td></tr></table>"
    )
    assert table_text(html) == "a | b c\n1 | 2"


def test_offline_spacy_hook_still_exists():
    # unstructured's private attribute; if a new version drops it, first partitions go online.
    import unstructured.nlp.tokenize as tokenize

    parsing._unstructured_ready()
    assert tokenize._SPACY_MODEL_NAME == parsing.OFFLINE_SPACY_MODEL
    assert tokenize._get_nlp.__wrapped__ is not None
    import spacy

    assert spacy.util.is_package(parsing.OFFLINE_SPACY_MODEL)


def test_the_pdf_whitespace_table_is_exactly_what_str_isspace_accepts() -> None:
    expected = [code for code in range(sys.maxunicode + 1) if chr(code).isspace()]
    assert sorted(parsing._WHITESPACE_CODES.tolist()) == expected


@pytest.mark.parametrize("extension", ["md", "txt", "html", "csv", "rst"])
@pytest.mark.parametrize(
    ("made", "kind"),
    [("pdf", "a PDF"), ("docx", "a ZIP archive"), ("ole", "an OLE compound file")],
)
def test_a_binary_file_named_as_text_fails_with_what_it_is(
    tmp_path: Path, extension: str, made: str, kind: str
):
    # A PDF saved as "report.txt" was decoded as cp1252 and its binary streams indexed as text
    # (and, as text, its Purview label was never read: it was served at the folder's label).
    from tests.ingestion.mip_files import write_docx, write_pdf

    source = tmp_path / f"source.{made}"
    if made == "pdf":
        write_pdf(source, "Quay cranes are inspected weekly by the harbour master.")
    elif made == "docx":
        write_docx(source, "Quay cranes are inspected weekly by the harbour master.")
    else:
        source.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504 + b"Word text")
    misnamed = tmp_path / f"report.{extension}"
    misnamed.write_bytes(source.read_bytes())
    with pytest.raises(ParseError) as info:
        parse_document(misnamed, extension)
    assert info.value.reason == f"the file is {kind}, not .{extension} text; not read", (
        info.value.reason
    )
