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
FAILURES = [
    FailureEntry(
        source="kb", source_uri="file:///kb/secret-plan.pdf", reason="encrypted PDF", failed_at=NOW
    )
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
    assert report.documents == 2 and report.failures == () and report.failures_hidden
    (group,) = report.groups
    assert (group.source, group.classification) == ("kb", "public")
    assert [d.doc_id for d in group.never_retrieved] == ["old-faq"]
    assert [d.doc_id for d in group.never_cited] == ["old-faq"]
    assert [d.doc_id for d in group.stale] == ["old-faq"]
    dumped = report.model_dump_json()
    for hidden in ("postmortem", "runbook", "draft", "secret-plan"):
        assert hidden not in dumped


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
