import os
import re
from pathlib import Path

import pytest

from citewell.core.errors import ConfigurationError, InputRejectedError, LabelError
from citewell.core.models import ClassificationScheme
from citewell.ingestion.labels import LabelRules
from citewell.ingestion.sources import LocalFolderSource, Source

SCHEME = ClassificationScheme()


def _source(root: Path, max_file_bytes: int = 1000) -> LocalFolderSource:
    return LocalFolderSource(
        root, labels=LabelRules.load(root, SCHEME), max_file_bytes=max_file_bytes, name="docs"
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "b" / "c").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "B.MD").write_text("# beta")
    (root / "b" / "c" / "deep.pdf").write_bytes(b"%PDF-1.4")
    (root / "b" / "big.txt").write_text("x" * 2000)
    (root / ".hidden.txt").write_text("secret")
    (root / ".git" / "config").write_text("x")
    (root / "citewell.labels.yaml").write_text(
        "default: {classification: internal, groups: [all]}\n"
    )
    (root / "a.txt.labels.yaml").write_text("classification: confidential\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    os.symlink(outside, root / "link.txt")
    os.symlink(tmp_path, root / "linkdir")
    return root


def test_discovery_is_recursive_sorted_and_skips_hidden_and_label_files(tree: Path):
    source = _source(tree)
    assert isinstance(source, Source)
    result = source.discover()
    assert [i.relative_path for i in result.items] == ["B.MD", "a.txt", "b/c/deep.pdf"]
    first = result.items[1]
    assert first.source == "docs"
    assert first.source_uri == (tree / "a.txt").resolve().as_uri()
    assert first.source_uri.startswith("file:///")
    assert first.size == 5
    assert first.modified_at.tzinfo is not None
    assert [i.doc_type for i in result.items] == ["md", "txt", "pdf"]
    assert source.discover() == result


def test_symlinks_and_oversized_files_are_rejected_with_reasons(tree: Path):
    rejected = {Path(f.source_uri).name: f.reason for f in _source(tree).discover().rejected}
    assert set(rejected) == {"big.txt", "link.txt", "linkdir"}
    assert "too large" in rejected["big.txt"]
    assert "symlink" in rejected["link.txt"]
    assert "symlink" in rejected["linkdir"]


def test_read_bytes_and_labels(tree: Path):
    source = _source(tree)
    item = next(i for i in source.discover().items if i.relative_path == "a.txt")
    assert source.read_bytes(item) == b"alpha"
    resolved = source.labels_for(item, "alpha")
    assert resolved.labelled
    assert resolved.label.classification == "confidential"
    assert resolved.label.groups == frozenset({"all"})


def test_read_bytes_refuses_a_file_grown_past_the_limit(tree: Path):
    source = _source(tree, max_file_bytes=10)
    item = next(i for i in source.discover().items if i.relative_path == "a.txt")
    (tree / "a.txt").write_text("x" * 50)
    with pytest.raises(InputRejectedError, match="too large"):
        source.read_bytes(item)


def test_missing_root_and_bad_limit(tmp_path: Path):
    labels = LabelRules(SCHEME)
    with pytest.raises(ConfigurationError):
        LocalFolderSource(tmp_path / "nope", labels=labels, max_file_bytes=10).discover()
    with pytest.raises(ConfigurationError):
        LocalFolderSource(tmp_path, labels=labels, max_file_bytes=0)
    assert LocalFolderSource(tmp_path, labels=labels, max_file_bytes=10).name == tmp_path.name


@pytest.mark.parametrize(
    "path",
    ["board/citewell.labels.yml", "board/CITEWELL.LABELS.YAML", "Citewell.Labels.yaml"],
)
def test_a_misspelt_labels_file_anywhere_stops_discovery(tmp_path: Path, path: str):
    """Like a nested citewell.labels.yaml, a labels file spelt another way (.yml, another case)
    would be silently ignored and its documents labelled by the root's (lower) rules."""
    root = tmp_path / "root"
    (root / "board").mkdir(parents=True)
    (root / "citewell.labels.yaml").write_text("default: {classification: public, groups: [all]}\n")
    (root / path).write_text("default: {classification: restricted, groups: [board]}\n")
    (root / "board" / "minutes.md").write_text("# Minutes\n")
    with pytest.raises(LabelError, match=re.escape(path)):
        _source(root).discover()


def test_a_fifo_or_socket_among_documents_is_reported_not_skipped_silently(tree: Path):
    import socket

    os.mkfifo(tree / "pipe.md")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tree / "agent.sock"))
        rejected = {Path(f.source_uri).name: f.reason for f in _source(tree).discover().rejected}
    finally:
        server.close()
    assert "not a regular file" in rejected["pipe.md"]
    assert "not a regular file" in rejected["agent.sock"]
