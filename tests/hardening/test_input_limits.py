"""Bad input in the ingestion folder: zip bombs, nested archives, crafted zip headers, real office
files under the limits, and paths that try to leave the source folder."""

from __future__ import annotations

import io
import os
import struct
import unicodedata
import zipfile
from pathlib import Path

import pytest

from citewell.core.errors import InputRejectedError, ParseError
from citewell.core.models import ClassificationScheme
from citewell.ingestion.labels import LabelRules
from citewell.ingestion.limits import ZIP_CONTAINER_TYPES, ZipLimits, check_zip_container
from citewell.ingestion.parsing import parse_document
from citewell.ingestion.sources import LocalFolderSource
from tests.security.hostile_files import make_zip

MIB = 1024 * 1024


def docx_like(body: bytes) -> dict[str, bytes]:
    return {"[Content_Types].xml": b"<Types/>", "word/document.xml": body}


def lie_about_sizes(data: bytes, declared: int) -> bytes:
    """Patch every uncompressed-size field (local header and central directory) to ``declared``."""
    raw = bytearray(data)
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        struct.pack_into("<I", raw, info.header_offset + 22, declared)
    start = 0
    while (at := raw.find(b"PK\x01\x02", start)) != -1:
        struct.pack_into("<I", raw, at + 24, declared)
        start = at + 4
    return bytes(raw)


# --- zip containers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "handbook-1p.docx",
        "sample-presentation.pptx",
        "more-than-1k-cells.xlsx",
        "fake.odt",
        "winter-sports.epub",
    ],
)
def test_real_office_files_pass_the_default_limits(shared_data: Path, name: str):
    data = (shared_data / "sample_docs" / name).read_bytes()
    check_zip_container(data, name.rsplit(".", 1)[1])


def test_high_compression_ratio_is_rejected_under_default_limits():
    bomb = make_zip(docx_like(b"\0" * (8 * MIB)))
    assert len(bomb) < 64 * 1024
    with pytest.raises(InputRejectedError, match=r"zip bomb: .*compression ratio|expands more"):
        check_zip_container(bomb, "docx")


def test_total_uncompressed_size_limit_is_configurable():
    data = make_zip({f"word/part{i}.xml": os.urandom(MIB // 2) for i in range(4)})
    check_zip_container(data, "docx", ZipLimits(max_uncompressed_bytes=3 * MIB))
    with pytest.raises(InputRejectedError, match="declared uncompressed size"):
        check_zip_container(data, "docx", ZipLimits(max_uncompressed_bytes=MIB))


def test_lying_central_directory_is_caught_by_counting_real_bytes():
    honest = make_zip(docx_like(b"<w:t>a</w:t>" * (3 * MIB // 12)))
    liar = lie_about_sizes(honest, declared=100)
    limits = ZipLimits(max_uncompressed_bytes=2 * MIB, max_compression_ratio=10_000)
    with pytest.raises(InputRejectedError, match="exceeds 2097152 bytes"):
        check_zip_container(liar, "odt", limits)


def test_too_many_entries():
    data = make_zip({f"word/media/{i}.xml": b"x" for i in range(60)})
    with pytest.raises(InputRejectedError, match="60 archive entries"):
        check_zip_container(data, "pptx", ZipLimits(max_entries=50))


def test_42_zip_style_nesting_is_rejected_but_one_embedded_archive_is_fine():
    leaf = make_zip({"sheet.xml": b"<row/>" * 100})
    embedded = make_zip(docx_like(b"<w:document/>") | {"word/embeddings/sheet.xlsx": leaf})
    check_zip_container(embedded, "docx")

    level = leaf
    for depth in range(4):
        level = make_zip({f"layer{depth}-{i}.zip": level for i in range(4)})
    with pytest.raises(InputRejectedError, match="nested archive deeper than 1 level"):
        check_zip_container(level, "epub")


def test_nested_bytes_count_against_one_budget():
    inner = make_zip({f"part{i}.xml": os.urandom(MIB // 2) for i in range(3)})
    outer = make_zip(
        docx_like(b"<w:document/>") | {"word/embeddings/a.xlsx": inner}, method=zipfile.ZIP_STORED
    )
    limits = ZipLimits(max_uncompressed_bytes=2 * MIB)
    with pytest.raises(InputRejectedError, match="zip bomb"):
        check_zip_container(outer, "docx", limits)


def test_non_zip_types_and_non_zip_data_are_left_to_the_parser():
    check_zip_container(b"\0" * MIB, "txt")
    check_zip_container(b"not a zip at all", "docx")
    assert {"docx", "pptx", "xlsx", "odt", "epub"} == ZIP_CONTAINER_TYPES


def test_parse_document_reports_a_bomb_as_a_parse_failure(tmp_path: Path):
    path = tmp_path / "bomb.docx"
    path.write_bytes(make_zip(docx_like(b"\0" * (8 * MIB))))
    with pytest.raises(ParseError) as caught:
        parse_document(path, "docx")
    assert caught.value.reason.startswith("rejected: zip bomb")
    assert isinstance(caught.value.__cause__, InputRejectedError)


# --- paths -----------------------------------------------------------------------------------


def _source(root: Path, max_file_bytes: int = MIB) -> LocalFolderSource:
    rules = LabelRules.load(root, ClassificationScheme())
    return LocalFolderSource(root, labels=rules, max_file_bytes=max_file_bytes, name="kb")


def test_paths_that_leave_the_root_are_refused(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("payroll", encoding="utf-8")
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("fine", encoding="utf-8")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "up.txt").symlink_to(Path("..") / ".." / "outside" / "secret.txt")

    found = _source(root).discover()
    assert [i.relative_path for i in found.items] == ["ok.txt"]
    reasons = {Path(f.source_uri[len("file://") :]).name: f.reason for f in found.rejected}
    assert reasons == {
        "link.txt": "symlink not followed",
        "dirlink": "symlink not followed",
        "up.txt": "symlink not followed",
    }


def test_file_swapped_for_a_symlink_after_discovery_is_refused(tmp_path: Path):
    root = tmp_path / "kb"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("payroll", encoding="utf-8")
    doc = root / "doc.txt"
    doc.write_text("fine", encoding="utf-8")
    source = _source(root)
    (item,) = source.discover().items
    doc.unlink()
    doc.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(InputRejectedError, match="symlink"):
        source.read_bytes(item)


def test_odd_names_stay_inside_the_root_with_stable_uris(tmp_path: Path):
    root = tmp_path / "kb"
    root.mkdir()
    names = [
        "a..b.txt",  # dots, but no traversal
        "..txt",  # hidden (leading dot): skipped like every dotfile
        unicodedata.normalize("NFC", "café.txt"),
        unicodedata.normalize("NFD", "café.txt"),  # a different file on Linux
        "\u202eexe.txt",  # right-to-left override
        "📄 notes.txt",
        "x" * 251 + ".txt",  # 255 bytes: the longest name the filesystem allows
    ]
    for name in names:
        (root / name).write_text("content", encoding="utf-8")
    deep = root.joinpath(*["d" * 200] * 15)  # a 3 kB path, close to PATH_MAX
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("content", encoding="utf-8")

    found = _source(root).discover()
    relative = [i.relative_path for i in found.items]
    assert "..txt" not in relative
    assert len(relative) == len(names)  # 6 visible names + the deep file
    assert len({i.source_uri for i in found.items}) == len(relative)
    for item in found.items:
        assert item.path.resolve().is_relative_to(root.resolve())
        assert ".." not in Path(item.relative_path).parts
        assert "\x00" not in item.source_uri
    with pytest.raises(ValueError, match="null"):
        (root / "nul\x00.txt").write_text("x", encoding="utf-8")


def test_huge_file_is_refused_without_reading_it(tmp_path: Path):
    root = tmp_path / "kb"
    root.mkdir()
    with open(root / "huge.txt", "wb") as handle:
        handle.truncate(5 * 1024**3)  # sparse: 5 GB on paper, nothing on disk
    found = _source(root, max_file_bytes=MIB).discover()
    assert found.items == ()
    assert found.rejected[0].reason == f"file too large ({5 * 1024**3} bytes > {MIB})"
