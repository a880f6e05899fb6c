"""Builders for hostile input files: decompression bombs of every container Citewell reads, a
PDF that keeps the layout analysis busy, and damaged copies of valid files."""

from __future__ import annotations

import base64
import io
import random
import zipfile
import zlib
from collections.abc import Iterator

MIB = 1024 * 1024
JUNK = b"MZ\x90\x00" + b"prepended, e.g. a self-extractor stub " * 64  # bytes before the zip


def zlib_of_repeated(unit: bytes, total: int, *, raw: bool = False) -> bytes:
    """``unit`` repeated to ``total`` bytes, compressed without holding the expansion."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    block = unit * max(1, MIB // len(unit))
    parts, written = [], 0
    while written < total:
        piece = block[: total - written]
        parts.append(compressor.compress(piece))
        written += len(piece)
    parts.append(compressor.flush())
    return b"".join(parts)


def make_zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


# Just enough of each format for its parser to open it; ``body`` is the main content part.
def container_entries(doc_type: str, body: bytes) -> dict[str, bytes]:
    if doc_type == "docx":
        return {"[Content_Types].xml": b"<Types/>", "word/document.xml": body}
    if doc_type == "xlsx":
        return {"[Content_Types].xml": b"<Types/>", "xl/worksheets/sheet1.xml": body}
    if doc_type == "pptx":
        return {"[Content_Types].xml": b"<Types/>", "ppt/slides/slide1.xml": body}
    if doc_type == "odt":
        return {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": body}
    if doc_type == "epub":
        return {"mimetype": b"application/epub+zip", "OEBPS/chapter1.xhtml": body}
    raise ValueError(doc_type)


ZIP_CONTAINERS = ("docx", "xlsx", "pptx", "odt", "epub")


def zip_bomb(doc_type: str, expanded: int) -> bytes:
    """A container whose main part is ``expanded`` bytes of highly compressible XML."""
    return make_zip(container_entries(doc_type, b"<p>" + b"a" * expanded + b"</p>"))


def prepended(data: bytes) -> bytes:
    """``data`` behind junk bytes: still a zip to every reader (they find the end record)."""
    return JUNK + data


def minimal_pdf(stream_data: bytes, filters: str = "/FlateDecode", text: str = "Hello") -> bytes:
    """A one-page PDF whose page content is ``stream_data`` (already encoded with ``filters``),
    followed by a second, plain content stream that shows ``text``."""
    plain = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents [4 0 R 6 0 R] "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter %s >>\nstream\n" % (len(stream_data), filters.encode())
        + stream_data
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(plain) + plain + b"\nendstream",
    ]
    return _pdf(objects)


def _pdf(objects: list[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def pdf_flate_bomb(expanded: int) -> bytes:
    """A page whose content stream inflates to ``expanded`` bytes of spaces."""
    return minimal_pdf(zlib_of_repeated(b" ", expanded))


def pdf_hex_flate_bomb(expanded: int) -> bytes:
    """The same bomb behind an ASCIIHex filter, which hides the zlib data from a byte scan."""
    return minimal_pdf(
        zlib_of_repeated(b" ", expanded).hex().encode() + b">",
        filters="[/ASCIIHexDecode /FlateDecode]",
    )


def pdf_nested_forms(depth: int = 6, fanout: int = 10) -> bytes:
    """A page that draws a form XObject which draws the next one ``fanout`` times, ``depth``
    levels deep: a few hundred bytes that cost a PDF reader ``fanout ** depth`` form draws
    (PDFium: about 50 s of CPU at 10 ** 5)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R "
        b"/Resources << /Font << /F1 4 0 R >> /XObject << /X 6 0 R >> >> >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    page = b"BT /F1 12 Tf 72 720 Td (Hello) Tj ET /X Do"
    objects.append(b"<< /Length %d >>\nstream\n" % len(page) + page + b"\nendstream")
    for level in range(depth):
        if level < depth - 1:
            body = b" ".join(b"q 1 0 0 1 %d 0 cm /X Do Q" % i for i in range(fanout))
            names = b"/XObject << /X %d 0 R >>" % (7 + level)
        else:
            body, names = b"BT /F1 3 Tf 10 10 Td (w) Tj ET", b""
        objects.append(
            b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] "
            b"/Resources << /Font << /F1 4 0 R >> %s >> /Length %d >>\nstream\n"
            % (names, len(body))
            + body
            + b"\nendstream"
        )
    return _pdf(objects)


def eml_with_attachment(attachment_bytes: int) -> bytes:
    """An e-mail with a base64 attachment that decodes to ``attachment_bytes`` bytes."""
    payload = base64.encodebytes(b"\0" * attachment_bytes)
    return (
        b"From: ops@example.com\r\nTo: all@example.com\r\nSubject: Quarterly figures\r\n"
        b"Date: Tue, 3 Oct 2023 07:15:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nThe figures are attached.\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="figures.bin"\r\n\r\n'
        + payload
        + b"\r\n--b1--\r\n"
    )


def damaged_copies(data: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    """Truncations at several offsets and byte flips of ``data``, named by what was done."""
    rng = random.Random(seed)
    size = len(data)
    for fraction in (0.1, 0.5, 0.9):
        cut = max(1, int(size * fraction))
        yield f"cut{int(fraction * 100)}", data[:cut]
    flipped = bytearray(data)
    for _ in range(max(4, size // 200)):
        at = rng.randrange(size)
        flipped[at] ^= 1 << rng.randrange(8)
    yield "flip", bytes(flipped)
    middle = bytearray(data)
    start = size // 3
    middle[start : start + max(1, size // 10)] = rng.randbytes(max(1, size // 10))
    yield "scramble", bytes(middle)
