"""Input safety checks run before a document reaches a parser.

Office Open XML (docx/pptx/xlsx), OpenDocument and EPUB files are zip archives, so a small file
can expand into gigabytes when a parser unpacks it (a "zip bomb"). :func:`check_zip_container`
refuses such files before parsing: too many entries, too many uncompressed bytes, an
implausible compression ratio, or archives nested inside archives ("42.zip").

The central directory's declared sizes are checked first (cheap), then the entries are actually
inflated in bounded pieces and counted, because declared sizes can lie: Python's ``zipfile``
stops at the declared size, but pandoc (ODT, EPUB) inflates whatever the data holds.
"""

from __future__ import annotations

import io
import logging
import struct
import zipfile
import zlib
from typing import BinaryIO

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
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # the 30-byte local file header
_READ_BYTES = 64 * 1024
_STORED, _DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED


class ZipLimits(Frozen):
    """Limits for zip-based documents; one ``max_uncompressed_bytes`` budget covers every
    nesting level together."""

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
    if doc_type not in ZIP_CONTAINER_TYPES or not data.startswith(_ZIP_MAGIC):
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
        if kept is not None:
            kept.append(piece)
    if inflater is not None:
        tail = inflater.flush()
        produced += len(tail)
        budget.spend(len(tail))
        if kept is not None:
            kept.append(tail)
    is_archive = head == _ZIP_MAGIC
    content = b"".join(kept) if is_archive and keep_if_archive and kept is not None else None
    return _Inflated(produced, is_archive, content)
