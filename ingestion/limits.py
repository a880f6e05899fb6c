"""Input safety checks run before a document reaches a parser: decompression bombs.

Office Open XML (docx/pptx/xlsx), OpenDocument and EPUB files are zip archives, so a small file
can expand into gigabytes when a parser unpacks it (a "zip bomb"). :func:`check_zip_container`
refuses such files before parsing: too many entries, too many uncompressed bytes, an
implausible compression ratio, or archives nested inside archives ("42.zip"). Bytes prepended
to the archive do not hide it: the archive is found by its central directory, as every zip
reader (python-docx, pandoc) finds it.

The central directory's declared sizes are checked first (cheap), then the entries are actually
inflated in bounded pieces and counted, because declared sizes can lie: Python's ``zipfile``
stops at the declared size, but pandoc (ODT, EPUB) inflates whatever the data holds.

PDF streams (:func:`check_pdf_streams`) and e-mail parts (:func:`check_email_parts`) are
decoded the same way, in bounded pieces that are counted and thrown away, against the same
``max_uncompressed_bytes`` budget, before pdfminer or unstructured decodes them whole.
"""

from __future__ import annotations

import email
import email.policy
import functools
import hashlib
import io
import logging
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from pydantic import Field

from citewell.core.errors import InputRejectedError
from citewell.core.logging import log_event
from citewell.core.models import Frozen

logger = logging.getLogger(__name__)

ZIP_CONTAINER_TYPES = frozenset({"docx", "pptx", "xlsx", "odt", "epub"})

DEFAULT_MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_COMPRESSION_RATIO = 100.0
DEFAULT_MAX_ZIP_ENTRIES = 10_000
# Ratios of tiny entries say nothing (a 2 kB run of spaces compresses 500:1 and is harmless).
RATIO_FLOOR_BYTES = 1024 * 1024

_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"  # end of central directory record
_ZIP_END_MAX = 22 + 65535  # the record plus the longest archive comment
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # the 30-byte local file header
_READ_BYTES = 64 * 1024
_STORED, _DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED


class ZipLimits(Frozen):
    """Limits for compressed containers; one ``max_uncompressed_bytes`` budget covers every
    nesting level of a zip together, and also bounds what a PDF's streams and an e-mail's parts
    decode to."""

    max_uncompressed_bytes: int = Field(default=DEFAULT_MAX_UNCOMPRESSED_BYTES, ge=1)
    max_compression_ratio: float = Field(default=DEFAULT_MAX_COMPRESSION_RATIO, gt=1)
    max_entries: int = Field(default=DEFAULT_MAX_ZIP_ENTRIES, ge=1)
    # 1 allows an archive inside the document (a docx embedding an xlsx) but nothing deeper.
    max_nesting: int = Field(default=1, ge=0)


class _Budget:
    def __init__(self, limits: ZipLimits) -> None:
        self.limits = limits
        self.total = 0

    def spend(self, count: int) -> None:
        self.total += count
        if self.total > self.limits.max_uncompressed_bytes:
            raise InputRejectedError(
                f"zip bomb: uncompressed content exceeds {self.limits.max_uncompressed_bytes} bytes"
            )


def check_zip_container(data: bytes, doc_type: str, limits: ZipLimits | None = None) -> None:
    """Raise :class:`InputRejectedError` if the zip-based document ``data`` is unsafe to unpack.

    Does nothing for types that are not zip containers or data that is not a zip at all (the
    parser then reports the file as corrupt)."""
    if doc_type not in ZIP_CONTAINER_TYPES:
        return
    limits = limits or ZipLimits()
    try:
        _check_archive(io.BytesIO(data), len(data), _Budget(limits), depth=0)
    except InputRejectedError as exc:
        log_event(
            logger, logging.WARNING, "ingest.input_rejected", doc_type=doc_type, reason=str(exc)
        )
        raise


def _check_archive(stream: BinaryIO, size: int, budget: _Budget, depth: int) -> None:
    limits = budget.limits
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not readable as a zip: the parser reports it as corrupt
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise InputRejectedError(
                f"zip bomb: {len(infos)} archive entries (limit {limits.max_entries})"
            )
        declared = sum(info.file_size for info in infos)
        if declared > limits.max_uncompressed_bytes - budget.total:
            raise InputRejectedError(
                f"zip bomb: declared uncompressed size {declared} bytes exceeds "
                f"{limits.max_uncompressed_bytes}"
            )
        _check_ratio(declared, size, limits, "archive")
        actual = 0
        for info in infos:
            inner = _inflate_entry(stream, info, budget, keep_if_archive=depth < limits.max_nesting)
            actual += inner.size
            if inner.is_archive:
                if depth >= limits.max_nesting:
                    raise InputRejectedError(
                        f"nested archive deeper than {limits.max_nesting} level(s): "
                        f"{info.filename[:120]!r}"
                    )
                if inner.content is not None:
                    _check_archive(io.BytesIO(inner.content), inner.size, budget, depth + 1)
        _check_ratio(actual, size, limits, "archive")


def _ends_with_zip_directory(tail: bytes) -> bool:
    """Whether ``tail`` ends with a zip end-of-central-directory record (the comment length
    must reach the end exactly, so a stray signature in other data does not count)."""
    at = tail.rfind(_ZIP_END)
    while at != -1:
        if at + 22 <= len(tail):
            (comment_length,) = struct.unpack_from("<H", tail, at + 20)
            if at + 22 + comment_length == len(tail):
                return True
        at = tail.rfind(_ZIP_END, 0, at)
    return False


def _check_ratio(uncompressed: int, compressed: int, limits: ZipLimits, what: str) -> None:
    if uncompressed < RATIO_FLOOR_BYTES:
        return
    ratio = uncompressed / max(compressed, 1)
    if ratio > limits.max_compression_ratio:
        raise InputRejectedError(
            f"zip bomb: {what} compression ratio {ratio:.0f}:1 exceeds "
            f"{limits.max_compression_ratio:.0f}:1"
        )


class _Inflated:
    def __init__(self, size: int, is_archive: bool, content: bytes | None) -> None:
        self.size = size
        self.is_archive = is_archive
        self.content = content


def _inflate_entry(
    stream: BinaryIO, info: zipfile.ZipInfo, budget: _Budget, *, keep_if_archive: bool
) -> _Inflated:
    """Inflate one entry from its raw bytes, counting real output against the budget.

    Done by hand rather than with ``ZipFile.open`` because that stops at the declared size,
    which is exactly the number a crafted archive lies about."""
    limits = budget.limits
    if info.flag_bits & 0x1:
        raise InputRejectedError("encrypted zip entries are not accepted")
    if info.compress_type not in (_STORED, _DEFLATED):
        raise InputRejectedError(f"unsupported zip compression method {info.compress_type}")
    stream.seek(info.header_offset)
    header = stream.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != _ZIP_MAGIC:
        raise InputRejectedError("corrupt zip: bad local file header")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[9:11]
    stream.seek(name_len + extra_len, io.SEEK_CUR)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == _DEFLATED else None
    remaining = info.compress_size
    produced = 0
    head = b""
    tail = b""  # the last bytes seen, to find an archive that does not start with its magic
    kept: list[bytes] | None = []
    while remaining > 0 or (inflater is not None and inflater.unconsumed_tail):
        if inflater is not None and inflater.unconsumed_tail:
            piece = inflater.decompress(inflater.unconsumed_tail, _READ_BYTES)
        else:
            raw = stream.read(min(_READ_BYTES, remaining))
            if not raw:
                break  # truncated archive; the parser reports it
            remaining -= len(raw)
            try:
                piece = inflater.decompress(raw, _READ_BYTES) if inflater is not None else raw
            except zlib.error as exc:
                raise InputRejectedError(f"corrupt zip entry: {exc}") from exc
        produced += len(piece)
        budget.spend(len(piece))
        if produced >= RATIO_FLOOR_BYTES and produced > limits.max_compression_ratio * max(
            info.compress_size, 1
        ):
            raise InputRejectedError(
                f"zip bomb: entry {info.filename[:120]!r} expands more than "
                f"{limits.max_compression_ratio:.0f}:1"
            )
        if len(head) < 4:
            head = (head + piece)[:4]
            if len(head) >= 4 and head != _ZIP_MAGIC:
                kept = None
        tail = (tail + piece)[-_ZIP_END_MAX:]
        if kept is not None:
            kept.append(piece)
    if inflater is not None:
        rest = inflater.flush()
        produced += len(rest)
        budget.spend(len(rest))
        tail = (tail + rest)[-_ZIP_END_MAX:]
        if kept is not None:
            kept.append(rest)
    is_archive = head == _ZIP_MAGIC
    if not is_archive and _ends_with_zip_directory(tail):
        # An archive behind prepended bytes: not kept for inspection, so refused outright.
        raise InputRejectedError(f"nested archive with prepended data: {info.filename[:120]!r}")
    content = b"".join(kept) if is_archive and keep_if_archive and kept is not None else None
    return _Inflated(produced, is_archive, content)


# --- PDF streams ----------------------------------------------------------------------------

# A stream's data starts after the "stream" keyword and its end of line ("endstream" excluded).
_PDF_STREAM = re.compile(rb"(?<![A-Za-z])stream(?:\r\n|\n|\r)")
_PDF_IMAGE = re.compile(rb"/Subtype\s*/Image\b")
# What the raw scan cannot see: encrypted streams, and filters it does not decode (a Flate
# stream behind ASCIIHex, or LZW): then every stream object is decoded through pdfminer.
_PDF_NEEDS_OBJECT_SCAN = re.compile(
    rb"/(?:Encrypt|LZWDecode|LZW|ASCII85Decode|A85|ASCIIHexDecode|AHx|RunLengthDecode|RL)\b"
    rb"|/Filter\s*\d+\s+\d+\s+R"
)
_PDF_DICT_LOOKBACK = 4096


def check_pdf_streams(data: bytes, limits: ZipLimits | None = None) -> None:
    """Raise :class:`InputRejectedError` if the PDF's streams decode to more than
    ``max_uncompressed_bytes`` together (pdfminer keeps every decoded stream it reads).

    Image streams are counted one by one, not together: text extraction never decodes them, and
    a scanned document of many pages must not add its pages up. Malformed data is left to the
    parser to report."""
    limits = limits or ZipLimits()
    cap = limits.max_uncompressed_bytes
    try:
        total = 0
        for match in _PDF_STREAM.finditer(data):
            before = data[max(0, match.start() - _PDF_DICT_LOOKBACK) : match.start()]
            header = before[before.rfind(b"obj") + 1 :]  # this object's dictionary
            if _PDF_IMAGE.search(header):
                _count(_inflate(data, match.end()), cap, "PDF image stream")
            else:
                total += _count(_inflate(data, match.end()), cap - total, "PDF streams")
        if _PDF_NEEDS_OBJECT_SCAN.search(data):
            _check_pdf_objects(data, cap)
    except InputRejectedError as exc:
        log_event(logger, logging.WARNING, "ingest.input_rejected", doc_type="pdf", reason=str(exc))
        raise


def _check_pdf_objects(data: bytes, cap: int) -> None:
    """Decode every stream object as pdfminer would (decrypted, filter by filter), counting."""
    from pdfminer.pdfparser import PDFParser
    from pdfminer.pdftypes import PDFStream
    from pdfminer.psparser import LIT

    try:
        document = _fast_rc4_document()(PDFParser(io.BytesIO(data)))
    except Exception:  # unreadable or locked: the parser reports it
        return
    total = 0
    for xref in document.xrefs:
        for objid in xref.get_objids():
            try:
                if xref.get_pos(objid)[0] is not None:
                    continue  # inside an object stream: never a stream itself
                obj = document.getobj(objid)
            except Exception as exc:  # a broken object fails the parse, not this check
                log_event(logger, logging.DEBUG, "ingest.pdf_object_unreadable", error=str(exc))
                continue
            if not isinstance(obj, PDFStream):
                continue
            image = obj.get("Subtype") is LIT("Image")
            if image and _raster_bytes(obj) <= cap:
                # Never decoded by text extraction; decrypting it would cost more than parsing.
                continue
            budget = cap if image else cap - total
            size = _count(_decode_pdf_stream(obj, budget), budget, "PDF streams")
            if not image:
                total += size


@functools.cache
def _fast_rc4_document() -> type[Any]:
    """pdfminer's ``PDFDocument`` with RC4 decryption by ``cryptography``. pdfminer's own RC4 is
    pure Python: 5.9 of the 19 CPU-seconds that parsing the 20 SEC filings took (12 of them are
    RC4-encrypted with an empty user password, as many corporate PDFs are). The key per object
    is pdfminer's (PDF 1.7, 7.6.2, algorithm 1); only the cipher changes."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    from cryptography.hazmat.primitives.ciphers import Cipher
    from pdfminer.pdfdocument import (
        PDFDocument,
        PDFStandardSecurityHandler,
        PDFStandardSecurityHandlerV4,
    )

    class FastRc4:
        key: bytes | None

        def decrypt_rc4(self, objid: int, genno: int, data: bytes) -> bytes:
            if self.key is None:
                raise InputRejectedError("encrypted PDF without a key")
            salted = self.key + struct.pack("<L", objid)[:3] + struct.pack("<L", genno)[:2]
            key = hashlib.md5(salted, usedforsecurity=False).digest()[: min(len(salted), 16)]
            return Cipher(ARC4(key), mode=None).decryptor().update(data)

    class Handler(FastRc4, PDFStandardSecurityHandler):
        pass

    class HandlerV4(FastRc4, PDFStandardSecurityHandlerV4):
        pass

    class Document(PDFDocument):
        security_handler_registry = {
            **PDFDocument.security_handler_registry,
            1: Handler,
            2: Handler,
            4: HandlerV4,
        }

    return Document


def _raster_bytes(image: Any) -> int:
    """The decoded size an image stream declares (width x height x 4 bytes at most)."""
    try:
        return int(image.get("Width", 0)) * int(image.get("Height", 0)) * 4
    except (TypeError, ValueError):
        return 1 << 62  # undeclared or unreadable: decode and count it


def _decode_pdf_stream(stream: Any, budget: int) -> Iterator[bytes]:
    """The stream's decoded data in pieces: every filter but the last is applied in full (at
    most ``budget`` bytes), the last one yields as it goes."""
    from pdfminer.ascii85 import ascii85decode, asciihexdecode
    from pdfminer.lzw import LZWDecoder
    from pdfminer.psparser import LIT

    data = stream.rawdata or b""
    if stream.decipher:
        data = stream.decipher(stream.objid, stream.genno, data, stream.attrs)
    try:
        filters = [name for name, _ in stream.get_filters()]
    except Exception:  # an unreadable filter list: pdfminer fails on it too
        return iter([data])
    pieces: Iterable[bytes] = [data]
    for number, name in enumerate(filters):
        if number:
            pieces = [b"".join(_bounded(pieces, budget))]
        raw = b"".join(pieces)
        if name in (LIT("FlateDecode"), LIT("Fl")):
            pieces = _inflate(raw, 0)
        elif name in (LIT("LZWDecode"), LIT("LZW")):
            pieces = LZWDecoder(io.BytesIO(raw)).run()
        elif name in (LIT("ASCII85Decode"), LIT("A85")):
            pieces = [ascii85decode(raw)]
        elif name in (LIT("ASCIIHexDecode"), LIT("AHx")):
            pieces = [asciihexdecode(raw)]
        elif name in (LIT("RunLengthDecode"), LIT("RL")):
            pieces = _run_length(raw)
        else:
            return iter([raw])  # image codecs: pdfminer hands them on undecoded
    return iter(pieces)


def _inflate(data: bytes, start: int) -> Iterator[bytes]:
    """Inflate the zlib stream at ``data[start:]`` in pieces, stopping at its end or at the
    first error (pdfminer keeps what decoded before a corrupt tail, so this counts it too)."""
    inflater = zlib.decompressobj()
    view = memoryview(data)
    position = start
    while not inflater.eof:
        if inflater.unconsumed_tail:
            raw: bytes | memoryview = inflater.unconsumed_tail
        elif position < len(view):
            raw = view[position : position + _READ_BYTES]
            position += len(raw)
        else:
            return
        try:
            yield inflater.decompress(raw, _READ_BYTES)
        except zlib.error:
            return


def _run_length(data: bytes) -> Iterator[bytes]:
    """PDF RunLengthDecode in pieces."""
    position = 0
    while position < len(data):
        length = data[position]
        if length == 128:
            return
        if length < 128:
            yield data[position + 1 : position + 2 + length]
            position += length + 2
        else:
            yield data[position + 1 : position + 2] * (257 - length)
            position += 2


def _bounded(pieces: Iterable[bytes], budget: int) -> Iterator[bytes]:
    produced = 0
    for piece in pieces:
        produced += len(piece)
        if produced > budget:
            raise InputRejectedError(f"decompression bomb: PDF streams exceed {budget} bytes")
        yield piece


def _count(pieces: Iterable[bytes], budget: int, what: str) -> int:
    produced = 0
    for piece in pieces:
        produced += len(piece)
        if produced > budget:
            raise InputRejectedError(
                f"decompression bomb: {what} expand to more than {max(budget, 0)} bytes"
            )
    return produced


# --- e-mail ---------------------------------------------------------------------------------


def check_email_parts(data: bytes, limits: ZipLimits | None = None) -> None:
    """Raise :class:`InputRejectedError` if the e-mail's parts (attachments and nested messages
    included) decode to more than ``max_uncompressed_bytes`` together.

    MIME has no compression: base64 and quoted-printable decode to less than they take, so an
    e-mail no larger than the cap passes unread, and a larger one is measured without decoding.
    """
    limits = limits or ZipLimits()
    if len(data) <= limits.max_uncompressed_bytes:
        return
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    total = 0
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload()
        size = len(payload) if isinstance(payload, str) else 0
        if part.get("Content-Transfer-Encoding", "").strip().lower() == "base64":
            size = size * 3 // 4
        total += size
        if total > limits.max_uncompressed_bytes:
            reason = (
                f"decompression bomb: e-mail parts decode to more than "
                f"{limits.max_uncompressed_bytes} bytes"
            )
            log_event(
                logger, logging.WARNING, "ingest.input_rejected", doc_type="eml", reason=reason
            )
            raise InputRejectedError(reason)
