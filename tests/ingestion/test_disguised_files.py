"""Files whose extension names another format than their bytes: a labelled Office Open XML
package saved as legacy ``.xls``/``.doc``/``.ppt``, a PDF saved as ``.xls``. The label the bytes
carry applies, whatever the name says; a file no reader of its extension can read is reported."""

from __future__ import annotations

import shutil

import pytest

from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import open_version
from citewell.retrieval.service import ServingIndex
from tests.ingestion.mip_files import (
    CONFIDENTIAL,
    POLICY_YAML,
    add_label_parts,
    msip_properties,
    write_docx,
    write_pdf,
    write_xlsx,
)

pytestmark = pytest.mark.slow

LABELS = 'rules:\n  - {match: "**", classification: public, groups: [everyone]}\n' + POLICY_YAML
EVERYONE = Principal(name="eve", clearance="restricted", groups=frozenset({"everyone"}))


def _manifest(settings):
    opened = open_version(settings)
    try:
        return {d.relative_path: d for d in opened.manifest.iter_documents()}
    finally:
        opened.close()


def _visible(settings, embedder, query):
    service = ServingIndex(settings, embedder=embedder)
    try:
        request = SearchRequest(query=query, k=20, mode=SearchMode.DENSE)
        result = service.search(EVERYONE, request)
        return {item.chunk.source_uri.rsplit("/", 1)[-1] for item in result.results}
    finally:
        service.close()


def test_a_labelled_office_package_named_as_a_legacy_format_keeps_its_label(
    tmp_path, make_settings, embedder
):
    # An .xlsx saved as "budget.xls" was parsed (pandas reads the bytes as what they are) but its
    # sensitivity label never read (.xls carries none by name): indexed public for everyone.
    settings = make_settings()
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "citewell.labels.yaml").write_text(LABELS)
    write_xlsx(
        kb / "budget.xls",
        "Budget plan. The zebra budget grows by four percent.",
        msip_properties(CONFIDENTIAL),
    )
    memo = write_docx(tmp_path / "memo.docx", "Merger memo. Project walrus acquires a supplier.")
    add_label_parts(memo, custom=msip_properties(CONFIDENTIAL))
    shutil.copy(memo, kb / "memo.doc")
    write_pdf(kb / "canteen.xls", "Canteen menu. Pelican soup is served on Fridays.")
    (kb / "notes.md").write_text("# Notes\n\nThe heron parking rules changed.")

    report = Ingestor(settings, embedder=embedder).ingest_folder(kb, source_name="kb")

    docs = _manifest(settings)
    for name in ("budget.xls", "memo.doc"):
        assert name in docs, (name, report.failed)
        assert (docs[name].classification, docs[name].groups) == ("confidential", ("finance",))
    failed = {f.source_uri.rsplit("/", 1)[-1]: f.reason for f in report.failed}
    assert failed["canteen.xls"] == "the file is a PDF, not .xls; not read"
    assert _visible(settings, embedder, "zebra budget walrus merger pelican heron") == {"notes.md"}
