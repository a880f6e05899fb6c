"""Damaged files of every supported type: truncated at several offsets, bit-flipped, scrambled.

Property: parsing one either succeeds or raises :class:`ParseError` with a reason, never any
other exception (a truncated PDF raised pdfminer's ``PSEOF`` and aborted the whole run); a run
over a folder of them completes, reports each failure with its reason and publishes the rest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citewell.core.errors import ParseError
from citewell.ingestion.parsing import SUPPORTED_TYPES, parse_document
from citewell.ingestion.pipeline import Ingestor
from tests.security.hostile_files import damaged_copies

LABELS = 'rules:\n  - {match: "**", classification: public, groups: [everyone]}\n'
TEXT = "Cranes load vessels at berth four. The harbour master signs the manifest.\n" * 20

# One valid original per supported type: a real sample where the shared data has a small one,
# otherwise generated text in that format.
SAMPLE_FILES = {
    "pdf": "fake-memo.pdf",
    "docx": "handbook-1p.docx",
    "pptx": "fake-power-point-table.pptx",
    "xlsx": "more-than-1k-cells.xlsx",
    "xls": "tests-example.xls",
    "html": "fake-html-cp1252.html",
    "md": "README.md",
    "rst": "README.rst",
    "eml": "family-day.eml",
    "msg": "fake-email-attachment.msg",
    "doc": "fake.doc",
    "ppt": "fake.doc",  # no legacy PowerPoint sample: another OLE compound file stands in
    "odt": "fake.odt",
    "rtf": "fake-doc.rtf",
}
GENERATED = {
    "htm": f"<html><body><h1>Berths</h1><p>{TEXT}</p></body></html>",
    "markdown": f"# Berths\n\n{TEXT}",
    "csv": "berth,crane,note\n" + "four,north,loads vessels\n" * 40,
    "tsv": "berth\tcrane\n" + "four\tnorth\n" * 40,
    "txt": TEXT,
    "text": TEXT,
    "log": "2024-01-01 berth four crane started\n" * 40,
    "json": json.dumps({"berths": [{"id": n, "note": TEXT[:60]} for n in range(20)]}),
    "jsonl": "\n".join(json.dumps({"id": n, "note": TEXT[:60]}) for n in range(20)),
    "ndjson": "\n".join(json.dumps({"id": n, "note": TEXT[:60]}) for n in range(20)),
    "xml": "<berths>" + "<berth><crane>north</crane></berth>" * 30 + "</berths>",
    "yaml": "berths:\n" + "  - crane: north\n    note: loads vessels\n" * 20,
    "yml": "berths:\n" + "  - crane: south\n    note: loads barges\n" * 20,
}


def _epub() -> bytes:
    from tests.security.hostile_files import make_zip

    opf = (
        b'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0" '
        b'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        b'<dc:title>Berths</dc:title><dc:identifier id="id">x</dc:identifier></metadata>'
        b'<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/>'
        b'</manifest><spine><itemref idref="c1"/></spine></package>'
    )
    container = (
        b'<?xml version="1.0"?><container version="1.0" '
        b'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        b'<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        b"</rootfiles></container>"
    )
    chapter = (
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><h1>Berths</h1>'
        b"<p>" + TEXT.encode() + b"</p></body></html>"
    )
    return make_zip(
        {
            "mimetype": b"application/epub+zip",
            "META-INF/container.xml": container,
            "OEBPS/content.opf": opf,
            "OEBPS/c1.xhtml": chapter,
        }
    )


def originals(sample_docs: Path) -> dict[str, bytes]:
    found = {t: (sample_docs / name).read_bytes() for t, name in SAMPLE_FILES.items()}
    found |= {t: text.encode("utf-8") for t, text in GENERATED.items()}
    found["epub"] = _epub()
    return found


@pytest.fixture(scope="module")
def valid(sample_docs: Path) -> dict[str, bytes]:
    return originals(sample_docs)


def test_every_supported_type_has_an_original():
    assert set(SAMPLE_FILES) | set(GENERATED) | {"epub"} == SUPPORTED_TYPES


# Types whose parsers run in this process quickly; LibreOffice and pandoc types are covered by
# the end-to-end run below.
FAST_TYPES = sorted(SUPPORTED_TYPES - {"doc", "ppt", "rtf", "odt", "epub", "rst", "xls"})


@pytest.mark.parametrize("doc_type", FAST_TYPES)
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_damaged_file_parses_or_fails_with_a_reason(
    doc_type: str, data: st.DataObject, valid: dict[str, bytes], tmp_path: Path
):
    original = valid[doc_type]
    cut = data.draw(st.integers(1, len(original)), label="cut")
    flips = data.draw(st.lists(st.integers(0, len(original) - 1), max_size=8), label="flips")
    damaged = bytearray(original[:cut])
    for at in flips:
        if at < len(damaged):
            damaged[at] ^= 0x5A
    path = tmp_path / f"damaged.{doc_type}"
    path.write_bytes(bytes(damaged))
    try:
        parse_document(path, doc_type, ocr=False)
    except ParseError as exc:
        assert exc.reason.strip()


@pytest.mark.slow
def test_a_run_over_damaged_files_of_every_type_reports_each_and_publishes_the_rest(
    tmp_path: Path, valid: dict[str, bytes], sample_docs: Path, make_settings, embedder
):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (kb / "good.md").write_text("# Berths\n\nCranes load vessels at berth four.", "utf-8")
    shutil.copy(sample_docs / "fake-memo.pdf", kb / "memo.pdf")
    damaged: set[str] = set()
    for doc_type, original in sorted(valid.items()):
        for how, data in damaged_copies(original, seed=len(original)):
            name = f"{how}-{doc_type}.{doc_type}"
            (kb / name).write_bytes(data)
            damaged.add(name)
    settings = make_settings(parse_time_limit_s=120)

    report = Ingestor(settings, embedder=embedder).ingest_folder(kb, source_name="kb")

    assert report.index_version is not None
    assert {"good.md", "memo.pdf"} <= set(report.added)
    failed = {Path(f.source_uri).name: f.reason for f in report.failed}
    # Every damaged file is accounted for: indexed (its parser read what was left) or failed
    # with a reason; none was lost and none stopped the run.
    assert damaged <= set(report.added) | set(failed)
    assert all(reason.strip() for reason in failed.values())
    # The damage the old code died on is now a reported failure.
    assert failed["cut50-pdf.pdf"].startswith("corrupt PDF")
    for how in ("cut10", "cut50"):
        for doc_type in ("docx", "pptx", "xlsx", "odt", "epub", "pdf"):
            assert f"{how}-{doc_type}.{doc_type}" in failed
