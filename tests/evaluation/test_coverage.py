"""Corpus coverage: filtered by the owner's scope, stale and failed documents, never-retrieved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from citewell.core.models import Principal
from citewell.core.settings import Settings
from citewell.evaluation.coverage import build_coverage, evaluate_coverage
from citewell.retrieval.manifest import DocumentEntry, FailureEntry
from tests.evaluation.test_answers_eval import SECRET_TITLE, squad_kb  # noqa: F401

NOW = datetime(2025, 10, 1, tzinfo=UTC)


def _doc(
    doc_id: str,
    level: str,
    rank: int,
    groups: tuple[str, ...],
    age_days: int,
    labelled: bool = True,
) -> DocumentEntry:
    return DocumentEntry(
        doc_id=doc_id,
        source="kb",
        source_uri=f"file:///kb/{doc_id}.md",
        relative_path=f"{doc_id}.md",
        title=f"Title {doc_id}",
        doc_type="md",
        content_hash="h",
        label_fingerprint="f",
        classification=level,
        classification_rank=rank,
        groups=groups,
        labelled=labelled,
        chunk_ids=("c",),
        refreshed_at=NOW - timedelta(days=age_days),
    )


DOCS = [
    _doc("faq", "public", 0, ("everyone",), 5),
    _doc("old-faq", "public", 0, ("everyone",), 400),
    _doc("runbook", "internal", 1, ("engineering",), 10),
    _doc("postmortem", "restricted", 3, ("security",), 10),
    _doc("draft", "public", 0, ("everyone",), 1, labelled=False),
]


def _failure(path: str, reason: str, **label: int | tuple[str, ...]) -> FailureEntry:
    return FailureEntry.model_validate(
        {"source": "kb", "source_uri": f"file:///kb/{path}", "reason": reason, "failed_at": NOW}
        | label
    )


FAILURES = [
    _failure("secret-plan.pdf", "encrypted PDF", classification_rank=3, groups=("security",)),
    _failure(
        "finance/q3-forecast.xlsx", "corrupt workbook", classification_rank=2, groups=("finance",)
    ),
    # Failed before its label was resolved (unreadable): shown to nobody.
    _failure("unknown.bin", "cannot read"),
]


def _coverage(principal: Principal):
    return build_coverage(
        Settings(),
        principal,
        DOCS,
        FAILURES,
        retrieved_doc_ids={"faq", "postmortem"},
        cited_doc_ids={"faq"},
        questions=3,
        index="kb",
        index_version="v1",
        stale_days=90,
        now=NOW,
    )


def test_low_clearance_owner_sees_only_visible_documents_and_no_failures():
    report = _coverage(Principal(name="pr", clearance="public"))
    assert report.documents == 2 and report.failures == ()
    (group,) = report.groups
    assert (group.source, group.classification) == ("kb", "public")
    assert [d.doc_id for d in group.never_retrieved] == ["old-faq"]
    assert [d.doc_id for d in group.never_cited] == ["old-faq"]
    assert [d.doc_id for d in group.stale] == ["old-faq"]
    dumped = report.model_dump_json()
    for hidden in ("postmortem", "runbook", "draft", "secret-plan", "q3-forecast", "unknown"):
        assert hidden not in dumped


def test_failures_are_filtered_by_groups_not_only_clearance():
    """Issue 16.12: a restricted owner outside finance must not see finance's failed file."""
    security = _coverage(
        Principal(name="sec", clearance="restricted", groups=frozenset({"security"}))
    )
    dumped = security.model_dump_json()
    assert [f.source_uri for f in security.failures] == ["file:///kb/secret-plan.pdf"]
    assert "q3-forecast" not in dumped and "corrupt workbook" not in dumped
    assert "unknown.bin" not in dumped
    finance = _coverage(
        Principal(name="fin", clearance="confidential", groups=frozenset({"finance"}))
    )
    assert [f.source_uri for f in finance.failures] == ["file:///kb/finance/q3-forecast.xlsx"]


def test_top_clearance_owner_sees_levels_in_order_and_failures_with_reasons():
    report = _coverage(
        Principal(name="sec", clearance="restricted", groups=frozenset({"security"}))
    )
    assert [(g.classification, g.documents) for g in report.groups] == [
        ("public", 2),
        ("restricted", 1),
    ]
    assert report.groups[1].never_retrieved == () and len(report.groups[1].never_cited) == 1
    assert [(f.source_uri, f.reason) for f in report.failures] == [
        ("file:///kb/secret-plan.pdf", "encrypted PDF")
    ]


@pytest.mark.slow
def test_coverage_of_a_published_index(squad_kb):  # noqa: F811
    settings, _ = squad_kb
    public = evaluate_coverage(settings, Principal(name="p", clearance="public"), None, "squad")
    assert public.documents == 4 and public.questions == 0
    assert SECRET_TITLE not in public.model_dump_json()
    security = Principal(name="s", clearance="restricted", groups=frozenset({"security"}))
    full = evaluate_coverage(settings, security, None, "squad")
    assert full.documents == 6 and SECRET_TITLE in full.model_dump_json()


def test_failed_document_of_an_ingested_folder_is_shown_only_to_its_groups(tmp_path):
    """Issue 16.12 end to end: the pipeline records a failed file's label and coverage shows
    it to the finance owner, not to a restricted owner outside finance."""
    from citewell.ingestion.pipeline import Ingestor
    from tests.agent.fakes import HashingEmbedder

    folder = tmp_path / "kb"
    (folder / "finance").mkdir(parents=True)
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n"
        "rules:\n"
        '  - {match: "finance/**", classification: confidential, groups: [finance]}\n',
        encoding="utf-8",
    )
    (folder / "faq.md").write_text("# FAQ\n\nThe office opens at nine.\n", encoding="utf-8")
    (folder / "finance" / "q3-forecast.pdf").write_bytes(b"%PDF-1.4\n%broken beyond repair")
    settings = Settings(data_dir=tmp_path / "data", index="kb")
    report = Ingestor(settings, embedder=HashingEmbedder()).ingest_folder(folder, index="kb")
    assert [f.source_uri.rsplit("/", 1)[-1] for f in report.failed] == ["q3-forecast.pdf"]

    dana = Principal(name="dana", clearance="restricted", groups=frozenset({"security"}))
    outsider = evaluate_coverage(settings, dana, None, "kb")
    assert outsider.failures == ()
    assert "q3-forecast" not in outsider.model_dump_json()
    carol = Principal(name="carol", clearance="confidential", groups=frozenset({"finance"}))
    insider = evaluate_coverage(settings, carol, None, "kb")
    assert [f.source_uri.rsplit("/", 1)[-1] for f in insider.failures] == ["q3-forecast.pdf"]


def test_coverage_refuses_a_version_whose_stored_ranks_the_configured_levels_move(tmp_path):
    """Serving refuses a version whose levels were re-ranked after ingestion (a level inserted
    below others); coverage read the manifest itself and filtered the stored ranks with the new
    levels, so a confidential owner (now rank 3) saw a restricted document's title (stored at
    rank 3)."""
    from citewell.core.errors import IndexIntegrityError
    from citewell.core.models import AccessLabel
    from citewell.ingestion.pipeline import Ingestor, TextDocument
    from tests.agent.fakes import HashingEmbedder

    settings = Settings(data_dir=tmp_path / "data", index="kb")
    board = TextDocument(
        doc_id="board-minutes",
        title="Board minutes on the Initech merger",
        text="The merger with Initech closes in May after the board vote.",
        label=AccessLabel(classification="restricted", groups=frozenset({"everyone"})),
    )
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        [board], index="kb", source_name="t"
    )
    carol = Principal(name="carol", clearance="confidential", groups=frozenset({"everyone"}))
    assert evaluate_coverage(settings, carol, None, "kb").documents == 0
    inserted = settings.model_copy(
        update={
            "classification_levels": (
                "public",
                "internal",
                "sensitive",
                "confidential",
                "restricted",
            )
        }
    )
    with pytest.raises(IndexIntegrityError, match="classification levels"):
        evaluate_coverage(inserted, carol, None, "kb")
