"""Odd file names in a source folder: a name that is not UTF-8, a newline in a name. Each file is
indexed under its rule's label or reported with a reason; the run completes either way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import open_version

pytestmark = pytest.mark.slow

LABELS = (
    "default: {classification: public, groups: [everyone]}\n"
    "rules:\n"
    "  - {match: 'board/**', classification: restricted, groups: [board]}\n"
)


def _folder(root: Path) -> Path:
    (root / "board").mkdir(parents=True)
    (root / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (root / "good.md").write_text("# Berths\n\nCranes load vessels at berth four.\n", "utf-8")
    return root


@pytest.mark.parametrize("chunk_context", [True, False])
def test_a_file_name_that_is_not_utf8_is_reported_and_the_rest_published(
    tmp_path: Path, make_settings: Any, embedder: Any, chunk_context: bool
) -> None:
    # A Latin-1 name from an old share ("café.md" as b"caf\xe9.md"): its chunk header failed in
    # the tokenizer ("TypeError: TextInputSequence must be str"), and without chunk headers the
    # manifest write raised UnicodeEncodeError and aborted the whole run, nothing published.
    kb = _folder(tmp_path / "kb")
    with open(os.path.join(os.fsencode(kb), b"caf\xe9 menu.md"), "wb") as handle:
        handle.write(b"# Galley\n\nEspresso machines are serviced every Tuesday by the crew.\n")
    settings = make_settings(chunk_context=chunk_context)

    report = Ingestor(settings, embedder=embedder).ingest_folder(kb, source_name="kb")

    assert report.index_version is not None
    assert report.added == ("good.md",)
    [failure] = report.failed
    assert failure.source_uri.endswith("/caf%E9%20menu.md")
    assert "not valid UTF-8" in failure.reason and "\n" not in failure.reason
    opened = open_version(settings)
    try:
        assert [d.relative_path for d in opened.manifest.iter_documents()] == ["good.md"]
        assert [f.source_uri for f in opened.manifest.failures()] == [failure.source_uri]
    finally:
        opened.close()


def test_a_newline_in_a_file_name_does_not_lower_its_label(
    tmp_path: Path, make_settings: Any, embedder: Any
) -> None:
    # "board/**" did not match "board/min\nutes.md" (the glob's ".*" stopped at the newline), so
    # the board's minutes fell to the public default.
    kb = _folder(tmp_path / "kb")
    (kb / "board" / "min\nutes.md").write_text(
        "# Board minutes\n\nThe board approved the sale of the Gdansk terminal.\n", "utf-8"
    )
    settings = make_settings()

    report = Ingestor(settings, embedder=embedder).ingest_folder(kb, source_name="kb")

    assert sorted(report.added) == ["board/min\nutes.md", "good.md"]
    assert not report.failed and not report.unlabelled
    opened = open_version(settings)
    try:
        labels = {
            d.relative_path: (d.classification, d.groups) for d in opened.manifest.iter_documents()
        }
    finally:
        opened.close()
    assert labels["board/min\nutes.md"] == ("restricted", ("board",))
