"""Corpus coverage for knowledge-base owners: which documents evaluation questions never reach.

Per source and classification level: documents never among the top retrieved chunks for any
evaluation question, documents never cited, stale documents (not refreshed for ``stale_days``)
and documents that failed parsing. Everything is filtered by the evaluating principal's access
scope (``retrieval.access``: clearance and groups): a document the principal cannot see is
neither listed nor counted. A failed document carries the label its path resolved to (rules and
sidecars; a banner inside it could not be read); a failure whose label is unknown is shown to
nobody (fail closed).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta

from pydantic import Field

from citewell.core.errors import IndexNotFoundError
from citewell.core.models import Frozen, Principal
from citewell.core.settings import Settings
from citewell.evaluation.answers_eval import AnswersEvalReport
from citewell.evaluation.published import read_published_manifest
from citewell.retrieval.access import scope_for
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.manifest import DocumentEntry, FailureEntry

DEFAULT_STALE_DAYS = 90


class DocumentRef(Frozen):
    doc_id: str
    title: str
    path: str  # relative to the source folder
    refreshed_at: datetime


class FailedDocument(Frozen):
    source: str
    source_uri: str
    reason: str
    failed_at: datetime


class CoverageGroup(Frozen):
    """Coverage of one (source, classification) cell."""

    source: str
    classification: str
    documents: int
    never_retrieved: tuple[DocumentRef, ...]
    never_cited: tuple[DocumentRef, ...]
    stale: tuple[DocumentRef, ...]


class CoverageReport(Frozen):
    index: str
    index_version: str | None
    principal: str
    clearance: str
    questions: int  # evaluation questions whose retrievals and citations were counted
    stale_days: int
    documents: int  # visible to the principal
    groups: tuple[CoverageGroup, ...]
    failures: tuple[FailedDocument, ...] = ()  # only those the principal may see
    notes: tuple[str, ...] = Field(default_factory=tuple)
    generated_at: datetime


def _ref(doc: DocumentEntry) -> DocumentRef:
    return DocumentRef(
        doc_id=doc.doc_id, title=doc.title, path=doc.relative_path, refreshed_at=doc.refreshed_at
    )


def build_coverage(
    settings: Settings,
    principal: Principal,
    documents: Iterable[DocumentEntry],
    failures: Iterable[FailureEntry],
    *,
    retrieved_doc_ids: Collection[str],
    cited_doc_ids: Collection[str],
    questions: int,
    index: str,
    index_version: str | None,
    stale_days: int = DEFAULT_STALE_DAYS,
    now: datetime | None = None,
) -> CoverageReport:
    """Pure: coverage of the documents ``principal`` may see."""
    scope = scope_for(principal, settings.scheme, settings.default_groups)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=stale_days)
    cells: dict[tuple[str, str], list[DocumentEntry]] = {}
    visible = 0
    for doc in documents:
        # Unlabelled documents are visible to nobody (fail closed), whatever their fields say.
        if not doc.labelled or not scope.allows(doc.classification_rank, doc.groups):
            continue
        visible += 1
        cells.setdefault((doc.source, doc.classification), []).append(doc)
    order = settings.scheme.levels
    groups = tuple(
        CoverageGroup(
            source=source,
            classification=level,
            documents=len(docs),
            never_retrieved=tuple(_ref(d) for d in docs if d.doc_id not in retrieved_doc_ids),
            never_cited=tuple(_ref(d) for d in docs if d.doc_id not in cited_doc_ids),
            stale=tuple(_ref(d) for d in docs if _aware(d.refreshed_at) < cutoff),
        )
        for (source, level), docs in sorted(
            cells.items(), key=lambda item: (item[0][0], order.index(item[0][1]))
        )
    )
    failed = tuple(
        FailedDocument(
            source=f.source, source_uri=f.source_uri, reason=f.reason, failed_at=f.failed_at
        )
        for f in failures
        if f.classification_rank is not None and scope.allows(f.classification_rank, f.groups)
    )
    notes: list[str] = []
    if questions == 0:
        notes.append("no evaluation questions were run: every document counts as never retrieved")
    return CoverageReport(
        index=index,
        index_version=index_version,
        principal=principal.name,
        clearance=principal.clearance,
        questions=questions,
        stale_days=stale_days,
        documents=visible,
        groups=groups,
        failures=failed,
        notes=tuple(notes),
        generated_at=datetime.now(UTC),
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def evaluate_coverage(
    settings: Settings,
    principal: Principal,
    answers: AnswersEvalReport | None = None,
    index: str | None = None,
    *,
    stale_days: int = DEFAULT_STALE_DAYS,
    now: datetime | None = None,
) -> CoverageReport:
    """Coverage of the published version of ``index`` against an answers evaluation run."""
    published = read_published_manifest(settings, index)
    if published is None:
        raise IndexNotFoundError(
            f"index {IndexLayout(settings, index).name!r} has no published version"
        )
    results = answers.questions if answers is not None else ()
    return build_coverage(
        settings,
        principal,
        published.documents,
        published.failures,
        retrieved_doc_ids={d for r in results for d in r.retrieved_doc_ids},
        cited_doc_ids={d for r in results for d in r.cited_doc_ids},
        questions=len(results),
        index=published.index,
        index_version=published.version,
        stale_days=stale_days,
        now=now,
    )
