"""Classification banners in every format and every place they are printed (issue 16, item 3):
headers, footers, every page of a PDF, every slide, every sheet, in any case. A banner only ever
raises a label, and prose that mentions a marking word is not a banner."""

from __future__ import annotations

import copy
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citewell.core.models import ClassificationScheme, Principal, SearchMode, SearchRequest
from citewell.ingestion.labels import BannerReader, detect_banner
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import open_version
from citewell.retrieval.service import ServingIndex

SCHEME = ClassificationScheme()
PROSE = [
    "The pump station at the north quay handles ballast water for the dry dock.",
    "Crews rotate every twelve hours and log each valve inspection in the register.",
    "Spare seals are kept in the blue cabinet next to the compressor room.",
    "The harbour master signs off on every change to the mooring plan.",
]
NOT_BANNERS = [
    "Confidential information is defined as any data the parties exchange in writing.",
    "The restricted stock units vest over four years.",
    "Please keep this internal until Friday, then share it with the suppliers.",
    "Internal Audit Department",
]


# --- builders: one real file per (format, place), with ``marking`` printed there --------------
def _txt(path: Path, marking: str, place: str) -> None:
    lines = [PROSE[i % 4] for i in range(40)]
    if marking:
        lines.insert({"middle": 20, "last": 40}[place], marking)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _docx(path: Path, marking: str, place: str) -> None:
    from docx import Document
    from docx.shared import Inches

    document = Document()
    section = document.sections[0]
    for paragraph in PROSE * 3:
        document.add_paragraph(paragraph)
    if place == "header":
        section.header.paragraphs[0].text = f"Acme Harbour Ltd | {marking}"
    elif place == "footer":
        section.footer.paragraphs[0].text = marking
    elif place == "first-page header":
        section.different_first_page_header_footer = True
        section.first_page_header.paragraphs[0].text = marking
    elif place == "body":
        document.paragraphs[5].insert_paragraph_before(marking)
    elif place == "header table cell":
        # A letterhead: logo text, title and marking in cells of a header table.
        table = section.header.add_table(1, 3, Inches(6))
        for cell, text in zip(
            table.row_cells(0), ("Acme Harbour Ltd", "Quay plan", marking), strict=True
        ):
            cell.text = text
    elif place in _WORD_WRAPPERS:
        part = section.header if place.startswith("header") else document
        part.paragraphs[0].insert_paragraph_before(_PLACEHOLDER)
    document.save(str(path))
    if place in _WORD_WRAPPERS:
        _rewrite_docx(path, _PLACEHOLDER_RUN, _WORD_WRAPPERS[place].format(escape(marking)))


# Where Word keeps text that is printed but not a plain run of a body paragraph: a text box
# (labelling tools put header markings there), a content control (a template's classification
# field), a tracked insertion. Each replaces the placeholder run.
_PLACEHOLDER = "PLACEHOLDER"
_PLACEHOLDER_RUN = f"<w:r><w:t>{_PLACEHOLDER}</w:t></w:r>"
_TEXT_BOX = (
    '<w:r><mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/'
    '2006"><mc:Choice Requires="wps"><w:drawing><wp:anchor xmlns:wp="http://schemas.openxmlformats'
    '.org/drawingml/2006/wordprocessingDrawing" distT="0" distB="0" distL="0" distR="0" '
    'simplePos="0" relativeHeight="1" behindDoc="0" locked="0" layoutInCell="1" '
    'allowOverlap="1"><wp:simplePos x="0" y="0"/><wp:positionH relativeFrom="page">'
    '<wp:posOffset>0</wp:posOffset></wp:positionH><wp:positionV relativeFrom="page">'
    '<wp:posOffset>0</wp:posOffset></wp:positionV><wp:extent cx="914400" cy="228600"/>'
    '<wp:wrapNone/><wp:docPr id="90" name="Marking"/><a:graphic xmlns:a="http://schemas.'
    'openxmlformats.org/drawingml/2006/main"><a:graphicData uri="http://schemas.microsoft.com/'
    'office/word/2010/wordprocessingShape"><wps:wsp xmlns:wps="http://schemas.microsoft.com/'
    'office/word/2010/wordprocessingShape"><wps:cNvSpPr txBox="1"/><wps:spPr/><wps:txbx>'
    "<w:txbxContent><w:p><w:r><w:t>{0}</w:t></w:r></w:p></w:txbxContent></wps:txbx>"
    "<wps:bodyPr/></wps:wsp></a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice>"
    '<mc:Fallback><w:pict><v:shape xmlns:v="urn:schemas-microsoft-com:vml"><v:textbox>'
    "<w:txbxContent><w:p><w:r><w:t>{0}</w:t></w:r></w:p></w:txbxContent></v:textbox>"
    "</v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r>"
)
_CONTENT_CONTROL = "<w:sdt><w:sdtContent><w:r><w:t>{0}</w:t></w:r></w:sdtContent></w:sdt>"
_WORD_WRAPPERS = {
    "header text box": _TEXT_BOX,
    "header content control": _CONTENT_CONTROL,
    "body content control": _CONTENT_CONTROL,
    "body tracked insertion": (
        '<w:ins w:id="7" w:author="A" w:date="2024-01-01T00:00:00Z"><w:r><w:t>{0}</w:t></w:r>'
        "</w:ins>"
    ),
}


def _rewrite_docx(path: Path, old: str, new: str) -> None:
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    for name in parts:
        if name.startswith(("word/document", "word/header")) and old.encode() in parts[name]:
            parts[name] = parts[name].replace(old.encode(), new.encode())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)


def _pptx(path: Path, marking: str, place: str) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    for number in range(3):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = f"Quay operations {number + 1}"
        slide.placeholders[1].text = PROSE[number]
    last = presentation.slides[2]
    box = last.shapes.add_textbox(Inches(1), Inches(6.5), Inches(6), Inches(0.5))
    box.text_frame.text = marking
    if place == "layout":
        # Text on the layout shows on every slide that uses it; unstructured does not return it.
        element = copy.deepcopy(box._element)
        last.shapes._spTree.remove(box._element)
        presentation.slide_layouts[1].shapes._spTree.append(element)
    elif place in ("master group", "master table"):
        # A marking grouped with a logo, or in a letterhead table, on the slide master.
        if place == "master group":
            group = last.shapes.add_group_shape()
            group.shapes.add_textbox(Inches(1), Inches(7), Inches(2), Inches(0.5)).text = "Acme"
            group.shapes.add_textbox(Inches(4), Inches(7), Inches(3), Inches(0.5)).text = marking
            moved = group._element
        else:
            frame = last.shapes.add_table(1, 2, Inches(1), Inches(7), Inches(6), Inches(0.5))
            frame.table.cell(0, 0).text, frame.table.cell(0, 1).text = "Acme Harbour", marking
            moved = frame._element
        last.shapes._spTree.remove(box._element)
        last.shapes._spTree.remove(moved)
        presentation.slide_masters[0].shapes._spTree.append(moved)
    presentation.save(str(path))


def _xlsx(path: Path, marking: str, place: str) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    first = workbook.active
    first.title = "Quays"
    for row, text in enumerate(PROSE, start=1):
        first.cell(row=row, column=1, value=text)
        first.cell(row=row, column=2, value=row * 10)
    second = workbook.create_sheet("Cranes")
    for row in range(1, 6):
        second.cell(row=row + 2, column=1, value=f"Crane {row}")
        second.cell(row=row + 2, column=2, value=row * 3)
    if place == "sheet 2 cell":
        second["A1"] = marking
    elif place == "sheet header":
        second.oddHeader.center.text = marking
    elif place == "sheet footer":
        first.evenFooter.right.text = marking
    workbook.save(str(path))


def _pdf(path: Path, marking: str, place: str) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for page in range(1, 4):
        pdf.add_page()
        if page == 2 and place == "top of page 2":
            pdf.multi_cell(0, 6, marking, new_x="LMARGIN", new_y="NEXT")
        for index, paragraph in enumerate(PROSE * 2):
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            if page == 2 and index == 3 and place == "middle of page 2":
                pdf.multi_cell(0, 6, marking, new_x="LMARGIN", new_y="NEXT")
        if page == 3 and place == "bottom of page 3":
            pdf.set_y(-20)
            pdf.multi_cell(0, 6, marking, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def _html(path: Path, marking: str, place: str) -> None:
    body = "".join(f"<p>{p}</p>" for p in PROSE * 3)
    path.write_text(
        f"<html><body><main>{body}</main><footer><p>{marking}</p></footer></body></html>",
        encoding="utf-8",
    )


BUILDERS: dict[str, tuple[str, Callable[[Path, str, str], None], tuple[str, ...]]] = {
    "txt": ("txt", _txt, ("middle", "last")),
    "md": ("md", _txt, ("middle",)),
    "docx": (
        "docx",
        _docx,
        ("header", "footer", "first-page header", "body", "header table cell", *_WORD_WRAPPERS),
    ),
    "pptx": ("pptx", _pptx, ("slide 3", "layout", "master group", "master table")),
    "xlsx": ("xlsx", _xlsx, ("sheet 2 cell", "sheet header", "sheet footer")),
    "pdf": ("pdf", _pdf, ("top of page 2", "middle of page 2", "bottom of page 3")),
    "html": ("html", _html, ("footer",)),
}
# (printed marking, level it means); cycled over the cases so each format sees several.
MARKINGS = [
    ("Confidential", "confidential"),
    ("strictly confidential", "restricted"),
    ("Internal Use Only", "internal"),
    ("Classification: Restricted", "restricted"),
    ("CONFIDENTIAL - do not distribute", "confidential"),
    ("restricted", "restricted"),
]
CASES = [
    (fmt, place, *MARKINGS[i % len(MARKINGS)])
    for i, (fmt, place) in enumerate(
        (fmt, place) for fmt, (_, _, places) in BUILDERS.items() for place in places
    )
]


def _name(fmt: str, place: str) -> str:
    return f"{fmt}-{place.replace(' ', '-')}"


@pytest.fixture(scope="module")
def banner_index(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    """One folder with every case (plus prose-only negatives and a "most restrictive wins"
    document), labelled public for everyone, ingested once through the real pipeline."""
    from citewell.core.settings import Settings

    root = tmp_path_factory.mktemp("banners")
    folder = root / "docs"
    folder.mkdir()
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    for fmt, place, marking, _ in CASES:
        extension, build, _ = BUILDERS[fmt]
        build(folder / f"{_name(fmt, place)}.{extension}", marking, place)
    for number, sentence in enumerate(NOT_BANNERS):
        _txt(folder / f"prose-{number}.txt", sentence, "middle")
        _docx(folder / f"prose-{number}.docx", sentence, "footer")
    _docx(folder / "mixed.docx", "Internal", "header")  # plus a stricter marking below
    mixed = folder / "mixed.docx"
    from docx import Document

    document = Document(str(mixed))
    document.sections[0].footer.paragraphs[0].text = "Highly Confidential"
    document.save(str(mixed))
    settings = Settings(data_dir=root / "data")
    report = Ingestor(settings, embedder=embedder).ingest_folder(folder, source_name="docs")
    assert not report.failed, report.failed
    opened = open_version(settings)
    try:
        levels = {d.relative_path: d.classification for d in opened.manifest.iter_documents()}
    finally:
        opened.close()
    return settings, levels


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "place", "marking", "level"), CASES)
def test_banner_raises_the_label(
    banner_index: Any, fmt: str, place: str, marking: str, level: str
) -> None:
    _, levels = banner_index
    extension = BUILDERS[fmt][0]
    assert levels[f"{_name(fmt, place)}.{extension}"] == level


@pytest.mark.slow
def test_prose_is_not_a_banner_and_the_strictest_marking_wins(banner_index: Any) -> None:
    _, levels = banner_index
    for number in range(len(NOT_BANNERS)):
        assert levels[f"prose-{number}.txt"] == "public"
        assert levels[f"prose-{number}.docx"] == "public"
    assert levels["mixed.docx"] == "restricted"


@pytest.mark.slow
def test_a_public_reader_never_gets_a_bannered_document(banner_index: Any, embedder: Any) -> None:
    settings, levels = banner_index
    reader = Principal(name="visitor", clearance="public", groups=frozenset({"everyone"}))
    service = ServingIndex(settings, embedder=embedder)
    try:
        for mode in SearchMode:
            request = SearchRequest(query="crane quay valve", k=50, mode=mode, rerank=False)
            for hit in service.search(reader, request).results:
                path = hit.chunk.source_uri.rsplit("/docs/", 1)[-1]
                assert levels[path] == "public", (mode, path)
    finally:
        service.close()


# --- the line rule, property-based ------------------------------------------------------------
_MARKING_LINES = st.sampled_from(
    [
        ("confidential", "confidential"),
        ("strictly confidential", "restricted"),
        ("internal use only", "internal"),
        ("for internal use only", "internal"),
        ("top secret", "restricted"),
        ("restricted", "restricted"),
        ("highly confidential", "restricted"),
    ]
)
_DECORATIONS = st.sampled_from([("", ""), ("*** ", " ***"), ("[", "]"), ("-- ", " --"), ("", ".")])
_CAVEATS = st.sampled_from(["", " - do not distribute", ": not for external distribution"])


def _recase(text: str, pattern: list[bool]) -> str:
    return "".join(
        c.upper() if pattern[i % len(pattern)] else c.lower() for i, c in enumerate(text)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _MARKING_LINES,
    _DECORATIONS,
    _CAVEATS,
    st.lists(st.booleans(), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=40),
)
def test_a_marking_line_is_a_banner_in_any_case_anywhere(
    marking: tuple[str, str],
    decoration: tuple[str, str],
    caveat: str,
    case: list[bool],
    position: int,
) -> None:
    phrase, level = marking
    line = f"{decoration[0]}{_recase(phrase, case)}{caveat}{decoration[1]}"
    lines = [PROSE[i % 4] for i in range(40)]
    lines.insert(position, line)
    assert detect_banner("\n".join(lines), SCHEME) == level


_PROSE_WORDS = (
    "the parties agree that any data shared under this agreement is kept for two years by "
    "each supplier and may be used for planning"
)
_WORDS = st.sampled_from(_PROSE_WORDS.split())


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["confidential", "restricted", "internal", "secret", "internal use only"]),
    st.lists(_WORDS, min_size=2, max_size=12),
    st.lists(_WORDS, min_size=0, max_size=6),
    st.booleans(),
)
def test_prose_mentioning_a_marking_word_is_not_a_banner(
    word: str, after: list[str], before: list[str], upper: bool
) -> None:
    sentence = " ".join([*before, word, *after]).capitalize() + "."
    if upper and not before:
        sentence = sentence.upper()  # all caps is a loose form: only at edges, tested below
    lines = [PROSE[i % 4] for i in range(30)]
    lines.insert(15, sentence)
    reader = BannerReader(SCHEME)
    found = reader.in_text("\n".join(lines))
    assert found is None, (sentence, found)


def test_a_banner_only_raises() -> None:
    from citewell.core.models import AccessLabel
    from citewell.ingestion.labels import LabelRules

    rules = LabelRules(SCHEME, default=AccessLabel(classification="restricted", groups={"a"}))
    resolved = rules.resolve("x.txt", None, "Internal use only\n\nBody text.")
    assert resolved.label.classification == "restricted" and resolved.banner is None
