"""The entry points' logging: JSON lines on stderr, libraries' notes kept out of them."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import pytest

from citewell.core.logging import configure_logging
from citewell.ingestion.sensitivity import read_sensitivity


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pypdf = logging.getLogger("pypdf")
    pypdf_level = pypdf.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    pypdf.setLevel(pypdf_level)


def test_a_damaged_pdfs_repairs_are_not_logged(tmp_path: Path, shared_data, restored_logging):
    # Reading labels from a PDF with a broken xref printed pypdf's "Ignoring wrong pointing
    # object 17 0 (offset 0)" lines, naming no file, among the run's own log lines.
    damaged = shared_data / "sample_docs" / "pypdf-issue-297-broken-xref.pdf"
    copy = tmp_path / "damaged.pdf"
    shutil.copyfile(damaged, copy)
    stream = io.StringIO()
    configure_logging("INFO")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    read_sensitivity(copy, "pdf")
    logging.getLogger("citewell.test").warning("still logged")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "still logged" in lines[0]
