"""Document dates: what a document states about itself, read from PDF Info, Office core properties
and e-mail headers; malformed dates are dropped, never an error; the file mtime stays apart."""

from __future__ import annotations

import os
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.ingestion.dates import parse_pdf_date, pdf_date, plausible
from citewell.ingestion.parsing import parse_document
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder
from tests.ingestion.mip_files import write_pdf

MEMO = "fake-memo.pdf"  # of the samples; Info: CreationDate and ModDate D:20230516172840Z00'00'
MEMO_DATE = datetime(2023, 5, 16, 17, 28, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"D:20230804060223-04'00'", datetime(2023, 8, 4, 10, 2, 23, tzinfo=UTC)),
        (b"D:20221025201815Z", datetime(2022, 10, 25, 20, 18, 15, tzinfo=UTC)),
        ("D:20231027110316+00'00'", datetime(2023, 10, 27, 11, 3, 16, tzinfo=UTC)),
        (b"D:20230516172840Z00'00'", MEMO_DATE),
        ("D:2021", datetime(2021, 1, 1, tzinfo=UTC)),
        ("20200102", datetime(2020, 1, 2, tzinfo=UTC)),
    ],
)
def test_pdf_date_strings(raw: object, expected: datetime):
    assert parse_pdf_date(raw) == expected


@pytest.mark.parametrize("raw", [b"yesterday", "D:2023-01-01", b"D:20231399000000Z", 20230101])
def test_malformed_pdf_dates_raise_for_the_reader(raw: object):
    with pytest.raises((ValueError, TypeError)):
        parse_pdf_date(raw)


def test_pdf_date_prefers_moddate_and_skips_malformed_or_implausible():
    created = b"D:20200101000000Z"
    assert pdf_date([{"ModDate": b"D:20230101000000Z", "CreationDate": created}]) == datetime(
        2023, 1, 1, tzinfo=UTC
    )
    assert pdf_date([{"ModDate": b"garbage", "CreationDate": created}]) == datetime(
        2020, 1, 1, tzinfo=UTC
    )
    assert pdf_date([{"ModDate": b"D:16010101000000Z"}]) is None  # an editor's zero date
    assert pdf_date([{"ModDate": None, "CreationDate": None}]) is None
    assert pdf_date([]) is None


def test_plausible_bounds_and_naive_as_utc():
    assert plausible(datetime(2022, 5, 1, 12), "x") == datetime(2022, 5, 1, 12, tzinfo=UTC)
    assert plausible(datetime(1899, 12, 30), "x") is None
    assert plausible(datetime.now(UTC) + timedelta(days=30), "x") is None


def test_real_pdf_states_its_info_date(sample_docs: Path):
    parsed = parse_document(sample_docs / MEMO, "pdf")
    assert parsed.document_date == MEMO_DATE


def _docx(path: Path, modified: datetime, created: datetime | None) -> Path:
    import docx

    document = docx.Document()
    document.add_paragraph("Travel policy: economy class for flights under six hours.")
    properties = document.core_properties
    properties.modified = modified
    if created is not None:
        properties.created = created
    document.save(str(path))
    return path


def _replace_core_xml(path: Path, old: str, new: str) -> None:
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    assert old.encode() in parts["docProps/core.xml"]
    parts["docProps/core.xml"] = parts["docProps/core.xml"].replace(old.encode(), new.encode())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def test_docx_core_properties(tmp_path: Path):
    modified = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    created = datetime(2019, 1, 2, 3, 4, 5, tzinfo=UTC)
    path = _docx(tmp_path / "policy.docx", modified, created)
    assert parse_document(path, "docx").document_date == modified
    # A malformed modified date is skipped for the created one; the document still parses.
    _replace_core_xml(path, "2021-03-04T05:06:07Z", "not-a-date")
    parsed = parse_document(path, "docx")
    assert parsed.document_date == created
    assert "Travel policy" in parsed.text


def test_docx_without_core_dates(tmp_path: Path):
    path = _docx(tmp_path / "bare.docx", datetime(2021, 3, 4, tzinfo=UTC), None)
    with zipfile.ZipFile(path) as archive:
        core = archive.read("docProps/core.xml").decode()
    # Keep the part, drop its date elements.
    start, end = core.index("<dcterms:"), core.rindex("</dcterms:")
    _replace_core_xml(path, core[start : core.index(">", end) + 1], "")
    assert parse_document(path, "docx").document_date is None


def test_email_date_header(tmp_path: Path):
    message = (
        "From: a@example.com\nTo: b@example.com\nSubject: Quarterly close\n"
        "Date: {date}\n\nThe close is on Friday.\n"
    )
    good = tmp_path / "good.eml"
    good.write_text(message.format(date="Tue, 03 Oct 2023 09:15:00 +0200"), encoding="utf-8")
    assert parse_document(good, "eml").document_date == datetime(2023, 10, 3, 7, 15, tzinfo=UTC)
    bad = tmp_path / "bad.eml"
    bad.write_text(message.format(date="sometime next week"), encoding="utf-8")
    parsed = parse_document(bad, "eml")
    assert parsed.document_date is None
    assert "close is on Friday" in parsed.text


def test_pipeline_keeps_document_date_apart_from_mtime(tmp_path: Path, make_settings):
    folder = tmp_path / "docs"
    folder.mkdir()
    memo_date = "D:20230516172840Z00'00'"  # as the sample memo's Info states it
    write_pdf(
        folder / "memo.pdf",
        "Memo: the travel desk moves to the second floor.",
        info={"CreationDate": memo_date, "ModDate": memo_date},
    )
    _docx(folder / "policy.docx", datetime(2021, 3, 4, tzinfo=UTC), None)
    (folder / "notes.txt").write_text("Travel notes without any stated date.", encoding="utf-8")
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    mtime = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
    for path in folder.iterdir():
        os.utime(path, (mtime, mtime))
    settings = make_settings(index="dated")
    embedder = HashingEmbedder()
    report = Ingestor(settings, embedder=embedder).ingest_folder(folder, source_name="docs")
    assert not report.failed
    service = ServingIndex(settings, embedder=embedder)
    try:
        reader = Principal(name="r", clearance="public")
        got = service.search(
            reader, SearchRequest(query="memo travel policy", k=50, mode=SearchMode.DENSE)
        )
    finally:
        service.close()
    by_file = {Path(r.chunk.source_uri).name: r.chunk for r in got.results}
    assert by_file["memo.pdf"].document_date == MEMO_DATE
    assert by_file["policy.docx"].document_date == datetime(2021, 3, 4, tzinfo=UTC)
    assert by_file["notes.txt"].document_date is None
    assert {c.modified_at for c in by_file.values()} == {datetime(2024, 6, 1, tzinfo=UTC)}
