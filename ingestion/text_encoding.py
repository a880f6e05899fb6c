"""Decoding text files of unknown encoding, the one way parsing and banner reading share."""

from __future__ import annotations

from citewell.core.errors import ParseError


def decode_text(data: bytes) -> str:
    """Decode text of unknown encoding: BOMs first, then UTF-8, then cp1252, then Latin-1."""
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise ParseError(f"invalid {codec} text") from exc
    for codec in ("utf-8", "cp1252"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")  # maps every byte; the last resort never fails
