"""Text-based formats in the encodings real files come in: a CSV exported by Excel in cp1252, a
CSV, TSV or reStructuredText file saved as UTF-16 with a byte-order mark. Each parses to its
text (as Markdown, HTML and plain text already did), never fails on, or indexes, the raw bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.ingestion.parsing import parse_document

ROWS = "name,city,note\nJosé,München,loads vessels at berth four\nZoë,Zürich,signs the manifest\n"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("excel-export.csv", ROWS.encode("cp1252")),
        ("utf16.csv", ROWS.encode("utf-16")),
        ("utf16.tsv", ROWS.replace(",", "\t").encode("utf-16")),
    ],
)
def test_a_table_in_a_legacy_or_utf16_encoding_parses_to_its_text(
    tmp_path: Path, name: str, data: bytes
) -> None:
    # Failed with "corrupt or unreadable .csv: UnicodeDecodeError": unstructured reads CSV and
    # TSV as UTF-8 only.
    path = tmp_path / name
    path.write_bytes(data)
    parsed = parse_document(path, path.suffix[1:], ocr=False)
    assert "José | München | loads vessels at berth four" in parsed.text
    assert "Zoë | Zürich" in parsed.text


def test_utf16_restructured_text_parses_to_its_text(tmp_path: Path) -> None:
    # Indexed as mojibake ("ÿþT\x00i\x00t\x00l\x00e..."): unstructured fell back to Latin-1.
    path = tmp_path / "runbook.rst"
    path.write_bytes(
        "Runbook\n=======\n\nRoll back by switching the load balancer.\n".encode("utf-16")
    )
    parsed = parse_document(path, "rst", ocr=False)
    assert "Roll back by switching the load balancer." in parsed.text
    assert "\x00" not in parsed.text and "ÿþ" not in parsed.text


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        # RFC 1428's label for 8-bit text of unknown charset, written by mail gateways.
        ("unknown-8bit", "Café opens at berth four.".encode("cp1252"), "Café opens at berth four."),
        # Outlook's label for visual/implicit Hebrew: ISO-8859-8 text.
        ("iso-8859-8-i", "שלום berth four".encode("iso-8859-8"), "שלום berth four"),
        ("x-bogus", b"Plain words about berth four.", "Plain words about berth four."),
    ],
)
def test_an_email_with_a_charset_python_does_not_know_parses_to_its_text(
    tmp_path: Path, charset: str, body: bytes, expected: str
) -> None:
    # The whole message failed: "corrupt or unreadable .eml: LookupError: unknown encoding".
    path = tmp_path / "notice.eml"
    path.write_bytes(
        b"From: ops@example.com\r\nTo: all@example.com\r\nSubject: Berth notice\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b1\r\n\r\n"
        b"--b1\r\nContent-Type: text/plain; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n--b1--\r\n"
    )
    parsed = parse_document(path, "eml", ocr=False)
    assert parsed.title == "Berth notice"
    assert expected in parsed.text
