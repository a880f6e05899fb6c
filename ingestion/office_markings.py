"""Header and footer text of Office files that ``unstructured`` does not return.

Classification banners (and the visual markings that labelling tools add) are printed in
headers and footers. ``unstructured`` returns DOCX headers and footers, but not an XLSX sheet's
print header and footer, nor text placed on a PPTX slide master or layout (shown on every slide
that uses it; grouped or in a table too). Of a DOCX it drops text boxes, content controls and
tracked insertions (in the body and in headers and footers) and joins a header table's cells
into one line. This module reads those, so banner detection (``ingestion.labels``) sees every
place a marking is printed. The text is returned as header/footer pieces of the document (body
text as text pieces).
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defusedxml import ElementTree

from citewell.core.errors import ParseError

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_HEADER_TAGS = {f"{_MAIN}{side}Header" for side in ("odd", "even", "first")}
_FOOTER_TAGS = {f"{_MAIN}{side}Footer" for side in ("odd", "even", "first")}
# Excel header/footer codes: &L &C &R start a section; &"font,style", &K colour, &<size>,
# toggles (&B bold, &I, &U, &E, &S, &X, &Y) and fields (&P page, &N pages, &D, &T, &F, &A, &Z,
# &G picture) carry no words. "&&" is a literal ampersand.
_SECTION = re.compile(r"&[LCR]")
_CODE = re.compile(r'&"[^"]*"|&K[0-9A-Fa-f]{6}|&K\d{2}[+-]\d{3}|&\d+|&[BIUESXYPNDTFAZG]')
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
# Word containers whose paragraphs and runs unstructured does not return.
_WORD_UNREAD = frozenset({f"{_W}txbxContent", f"{_W}sdtContent", f"{_W}ins"})
_WORD_EDGE_PART = re.compile(r"^word/(header|footer)\d*\.xml$")


@dataclass(frozen=True)
class MarkingText:
    kind: str  # "header", "footer" or "text" (a DOCX body's)
    text: str
    page: int | None  # the sheet (1-based, workbook order); None: every slide


def excel_header_footer_text(raw: str) -> str:
    """Readable text of an Excel header/footer string, one line per section."""
    text = raw.replace("&&", "\x00")
    text = _SECTION.sub("\n", text)
    text = _CODE.sub(" ", text).replace("\x00", "&")
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def office_marking_texts(path: Path, doc_type: str) -> list[MarkingText]:
    """Header/footer text of an XLSX (per sheet) or PPTX (masters and layouts in use), the text
    of a DOCX that unstructured does not return; nothing for other types. A file whose markings
    cannot be read raises :class:`ParseError`: a banner that cannot be checked must not be
    assumed absent."""
    try:
        if doc_type == "xlsx":
            return _xlsx(path)
        if doc_type == "pptx":
            return _pptx(path)
        if doc_type == "docx":
            return _docx(path)
    except ParseError:
        raise
    except Exception as exc:  # zip, XML and python-pptx errors alike: the file is damaged
        raise ParseError(
            f"corrupt .{doc_type}: cannot read headers and footers: {type(exc).__name__}"
        ) from exc
    return []


def _xlsx(path: Path) -> list[MarkingText]:
    found: list[MarkingText] = []
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "xl/workbook.xml" not in names:
            return []
        targets: dict[str, str] = {}
        if "xl/_rels/workbook.xml.rels" in names:
            rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
            for rel in rels.iter(f"{_PKG_REL}Relationship"):
                target = rel.get("Target", "")
                resolved = (
                    target.lstrip("/")
                    if target.startswith("/")
                    else posixpath.normpath(posixpath.join("xl", target))
                )
                targets[rel.get("Id", "")] = resolved
        workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
        for number, sheet in enumerate(workbook.iter(f"{_MAIN}sheet"), start=1):
            part = targets.get(sheet.get(f"{_REL}id", ""))
            if part is None or part not in names:
                continue
            with archive.open(part) as stream:
                # Streamed: a sheet's cells can be large; its header and footer come last.
                for _, element in ElementTree.iterparse(stream):
                    kind = (
                        "header"
                        if element.tag in _HEADER_TAGS
                        else "footer"
                        if element.tag in _FOOTER_TAGS
                        else None
                    )
                    if kind is not None and element.text:
                        text = excel_header_footer_text(element.text)
                        if text:
                            found.append(MarkingText(kind, text, number))
                    if element.tag == f"{_MAIN}row":
                        element.clear()
    return found


def _pptx(path: Path) -> list[MarkingText]:
    from pptx import Presentation

    presentation = Presentation(str(path))
    layouts = {}
    for slide in presentation.slides:
        layout = slide.slide_layout
        layouts[id(layout)] = layout
    sources = [*{id(lay.slide_master): lay.slide_master for lay in layouts.values()}.values()]
    sources += list(layouts.values())
    found: list[MarkingText] = []
    seen: set[str] = set()
    for source in sources:
        for text in _shape_texts(source.shapes):
            if text not in seen:
                seen.add(text)
                found.append(MarkingText("header", text, None))
    return found


def _shape_texts(shapes: Any) -> list[str]:
    """Text of a master's or layout's shapes, inside groups too, a table one cell a line."""
    texts: list[str] = []
    for shape in shapes:
        # Placeholders on masters and layouts hold prompts ("Click to edit Master title
        # style"), not what slides show; other text shapes appear on every slide.
        if shape.is_placeholder:
            continue
        if hasattr(shape, "shapes"):  # a group: a marking grouped with a logo
            texts += _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False):
            texts += [c.text.strip() for row in shape.table.rows for c in row.cells]
        elif shape.has_text_frame:
            texts.append(shape.text_frame.text.strip())
    return [text for text in texts if text]


def _docx(path: Path) -> list[MarkingText]:
    found: list[MarkingText] = []
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        for name in names:
            edge = _WORD_EDGE_PART.match(name)
            if edge is None and name != "word/document.xml":
                continue
            root = ElementTree.fromstring(archive.read(name))
            # Header and footer table cells are one line each: unstructured joins a row's
            # cells with spaces ("Acme Harbour Ltd Quay plan Confidential"), hiding a marking.
            kind = edge.group(1) if edge else "text"
            found += [MarkingText(kind, line, None) for line in _word_lines(root, cells=bool(edge))]
    return found


def _word_lines(root: Any, *, cells: bool) -> list[str]:
    """Paragraphs of a Word part that hold text unstructured drops: inside a text box, content
    control or tracked insertion (or, with ``cells``, a table cell), one line each."""
    lines: list[str] = []
    seen: set[str] = set()  # a list's "in" made 40k paragraphs take 5 s (quadratic)

    def walk(element: Any, unread: bool, text: list[str] | None, own: list[bool]) -> None:
        for child in element:
            if child.tag == _MC_FALLBACK:
                continue  # the same text box again, for older readers
            hidden = unread or child.tag in _WORD_UNREAD or (cells and child.tag == f"{_W}tc")
            if child.tag == f"{_W}p":
                parts: list[str] = []
                flag = [hidden]
                walk(child, hidden, parts, flag)
                line = " ".join("".join(parts).split())
                if flag[0] and line and line not in seen:
                    seen.add(line)
                    lines.append(line)
            elif text is not None and child.tag == f"{_W}t":
                text.append(child.text or "")
                own[0] = own[0] or hidden
            elif text is not None and child.tag == f"{_W}tab":
                text.append(" ")
            else:
                walk(child, hidden, text, own)

    walk(root, False, None, [False])
    return lines
