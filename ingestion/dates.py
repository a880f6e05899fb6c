"""The date a document states about itself: PDF Info ``ModDate``/``CreationDate``, Office core
properties ``modified``/``created``, the e-mail ``Date`` header.

This is not the file's mtime (``Chunk.modified_at``, which copies, checkouts and syncs rewrite):
it is what "the latest version of a recurring document" is judged by. Every reader returns None
for a missing, malformed or implausible date and logs it at debug; a bad date never fails a
document.
"""

from __future__ import annotations

import email.utils
import logging
import re
import zipfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from citewell.core.logging import log_event

logger = logging.getLogger(__name__)

# Earlier dates are editor defaults or zeroed fields (Office writes 1601 or 1899, some PDF tools
# 1970), not statements; none of the formats read here existed before then.
_EARLIEST = datetime(1980, 1, 1, tzinfo=UTC)
# A date in the future would rank as "newest" forever; a day of slack covers time zones.
_FUTURE_SLACK = timedelta(days=1)
_CORE_XML = "docProps/core.xml"
_CORE_XML_MAX_BYTES = 1024 * 1024
_DCTERMS = "{http://purl.org/dc/terms/}"
_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_CORE_REL = "http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties"

# PDF 1.7 §7.9.4: D:YYYYMMDDHHmmSSOHH'mm' with everything after the year optional.
_PDF_DATE = re.compile(
    r"^(?:D:)?(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?P<tz>[Zz+-])?(?:(?P<tzh>\d{2})'?(?:(?P<tzm>\d{2})'?)?)?$"
)


def plausible(value: datetime | None, what: str) -> datetime | None:
    """``value`` in UTC (naive read as UTC), or None when it is missing or implausible."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value < _EARLIEST or value > datetime.now(UTC) + _FUTURE_SLACK:
        log_event(logger, logging.DEBUG, "parse.date_implausible", field=what, value=str(value))
        return None
    return value


def first_date(
    candidates: Iterable[tuple[str, object]], parse: Callable[[Any], datetime | None]
) -> datetime | None:
    """The first of ``(field, raw value)`` that ``parse`` reads as a plausible date."""
    for field, raw in candidates:
        if raw is None:
            continue
        try:
            parsed = parse(raw)
        except (ValueError, TypeError, OverflowError) as exc:
            log_event(logger, logging.DEBUG, "parse.date_malformed", field=field, error=str(exc))
            continue
        found = plausible(parsed, field)
        if found is not None:
            return found
    return None


def parse_pdf_date(raw: object) -> datetime | None:
    """A PDF date string (bytes or str, e.g. ``D:20230804060223-04'00'``) as a datetime.
    Raises ValueError when it is not one."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    if not isinstance(raw, str):
        raise TypeError(f"PDF date is a {type(raw).__name__}, not a string")
    match = _PDF_DATE.match(raw.strip())
    if match is None:
        raise ValueError(f"not a PDF date: {raw[:40]!r}")
    parts = match.groupdict()
    tz = UTC
    if parts["tz"] in ("+", "-"):
        offset = timedelta(hours=int(parts["tzh"] or 0), minutes=int(parts["tzm"] or 0))
        tz = timezone(offset if parts["tz"] == "+" else -offset)
    return datetime(
        int(parts["year"]),
        int(parts["month"] or 1),
        int(parts["day"] or 1),
        int(parts["hour"] or 0),
        int(parts["minute"] or 0),
        int(parts["second"] or 0),
        tzinfo=tz,
    )


def pdf_date(info: Iterable[dict[str, object]]) -> datetime | None:
    """``ModDate``, else ``CreationDate``, of a PDF's Info dictionaries (pdfminer's
    ``PDFDocument.info``, values already resolved)."""
    dicts = list(info)
    fields = [(key, d.get(key)) for key in ("ModDate", "CreationDate") for d in dicts]
    return first_date(fields, parse_pdf_date)


def office_date(path: Path) -> datetime | None:
    """``dcterms:modified``, else ``dcterms:created``, of an Office Open XML file's core
    properties (``docProps/core.xml``).

    Read from the zip directly: unstructured's ``last_modified`` metadata for DOCX, PPTX and
    XLSX is the file's mtime, not these properties, and loading the whole document again through
    python-docx/pptx/openpyxl to reach them would parse it twice."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(_core_part(archive))
            if info.file_size > _CORE_XML_MAX_BYTES:
                log_event(logger, logging.DEBUG, "parse.date_malformed", field=_CORE_XML)
                return None
            root = ElementTree.fromstring(archive.read(info))
    except KeyError:
        return None  # no core properties part: the document states no date
    except (zipfile.BadZipFile, OSError, ElementTree.ParseError, DefusedXmlException) as exc:
        log_event(logger, logging.DEBUG, "parse.date_malformed", field=_CORE_XML, error=str(exc))
        return None
    fields: list[tuple[str, object]] = []
    for name in ("modified", "created"):
        element = root.find(f"{_DCTERMS}{name}")
        if element is not None and element.text:
            fields.append((name, element.text.strip()))
    return first_date(fields, _w3c_datetime)


def _core_part(archive: zipfile.ZipFile) -> str:
    """The core properties part named by the package relationships (OPC), usually
    ``docProps/core.xml``."""
    try:
        info = archive.getinfo("_rels/.rels")
        if info.file_size > _CORE_XML_MAX_BYTES:
            return _CORE_XML
        rels = ElementTree.fromstring(archive.read(info))
    except KeyError:
        return _CORE_XML
    for rel in rels.iter(f"{_RELS}Relationship"):
        if rel.get("Type") == _CORE_REL and rel.get("Target"):
            return str(rel.get("Target")).lstrip("/")
    return _CORE_XML


def email_date(header: object) -> datetime | None:
    """An e-mail ``Date`` header value (RFC 5322) as a datetime, or None."""
    if header is None:
        return None
    return first_date([("Date", str(header))], email.utils.parsedate_to_datetime)


def _w3c_datetime(text: str) -> datetime:
    # W3CDTF as Office writes it ("2023-08-04T06:02:23Z"); fromisoformat reads "Z" since 3.11.
    return datetime.fromisoformat(text)
