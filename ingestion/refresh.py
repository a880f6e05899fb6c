"""Scheduled refreshes and rebuilds of one configured source, step by step.

Each function is one orchestrator task (see ``dags/``): small, idempotent, and exchanging only
file paths. Work files live in a run directory ``<data_dir>/runs/<index>/<source>/<run_id>/``:

- ``discover`` writes ``snapshot.json`` (relative paths, content hashes, label fingerprints);
- ``plan`` compares it with the published manifest and writes ``plan.json`` and
  ``batch-NNNN.json`` (the new and changed documents, ``batch_size`` at a time);
- ``process_batch`` parses, chunks and embeds one batch into the shared caches (no index write);
- ``finalize`` runs the one ingestion transaction, which finds every parse and embedding cached,
  applies deletes and relabels, updates BM25 and publishes a new version atomically.

Re-running any step, or the whole run, converges to the same index: the caches are keyed by
content, and ``finalize`` ingests the folder's state at that moment (if it changed since the
plan, the newer state wins, which is what the next run would do anyway).

``rebuild`` builds from scratch into a new version and publishes it only if it validates
(document and chunk counts against the plan, and a retrieval smoke test on a golden set);
otherwise the serving version stays as it was.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from citewell.core.errors import CitewellError, ConfigurationError, EvaluationError
from citewell.core.logging import log_event
from citewell.core.models import (
    DocumentFailure,
    Frozen,
    IngestReport,
)
from citewell.core.settings import Settings
from citewell.ingestion.labels import LabelRules
from citewell.ingestion.models import ResolvedLabel
from citewell.ingestion.pipeline import Ingestor, document_id, object_content_hash
from citewell.ingestion.sensitivity import SensitivityPolicy
from citewell.ingestion.sources import LocalFolderSource, S3Access, S3Location, S3Source
from citewell.ingestion.sources_config import SourceConfig
from citewell.retrieval.durable import write_atomic
from citewell.retrieval.index import IndexLayout, IndexWriter
from citewell.retrieval.manifest import DocumentEntry, Manifest, classify_change
from citewell.retrieval.protocols import Embedder

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "snapshot.json"
PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"

M = TypeVar("M", bound=BaseModel)


class RebuildValidationError(EvaluationError):
    """A rebuilt version failed validation and was not published."""


class StagedVersionCheck(Protocol):
    """A retrieval check of a rebuilt version while it is still staged: the golden-set smoke
    test (``evaluation.smoke_test.GoldenSmokeTest``), given by the entry points."""

    def __call__(self, writer: IndexWriter, embedder: Embedder) -> tuple[int, int]:
        """(questions that passed, questions asked); raises ``RebuildValidationError`` to
        refuse the version."""
        ...


# --- work files ---------------------------------------------------------------------------
class SnapshotEntry(Frozen):
    relative_path: str
    source_uri: str
    content_hash: str
    label_fingerprint: str
    # The label from rules, sidecars and object labels, which the plan combines with the
    # sensitivity labels the indexed content carried, as the pipeline does. None: a snapshot
    # written before labels were kept (compared by fingerprint alone).
    label: ResolvedLabel | None = None


class DiscoveredSnapshot(Frozen):
    """What the source held at discovery: ids and hashes, never content."""

    source: str
    index: str
    run_id: str
    root: str
    taken_at: datetime
    entries: tuple[SnapshotEntry, ...]
    rejected: tuple[DocumentFailure, ...] = ()
    # The labels file's sensitivity-label policy at discovery (None: none read).
    sensitivity: SensitivityPolicy | None = None
    path: str  # where this snapshot is stored (what XCom carries)


class Batch(Frozen):
    relative_paths: tuple[str, ...]


class PlanSummary(Frozen):
    """The changes a refresh will make, relative to the published version ``base_version``."""

    source: str
    index: str
    run_id: str
    base_version: str | None
    snapshot_path: str
    new: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    relabeled: tuple[str, ...] = ()
    unchanged: int = 0
    batch_paths: tuple[str, ...] = ()
    path: str  # where this plan is stored


class RebuildReport(Frozen):
    index: str
    version: str | None
    previous_version: str | None
    documents: int
    chunks: int
    smoke_questions: int
    smoke_hits: int
    ingest: IngestReport


# --- helpers ------------------------------------------------------------------------------
def run_dir(settings: Settings, source: SourceConfig, run_id: str) -> Path:
    """The work directory of one run of ``source`` (run ids from Airflow hold ':' and '+').
    Per source: the DAGs of sources sharing an index on one schedule get the same run id
    ('scheduled__<time>'), and each plan must read its own snapshot and keep its own batches."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).strip("._") or "run"
    return settings.data_dir / "runs" / source.index / source.name / safe


def prune_runs(settings: Settings, source: SourceConfig, current: Path) -> int:
    """Remove ``source``'s run folders last written over ``keep_runs_days`` ago, never
    ``current``; called once a run has completed. Each run keeps its snapshot (~840 bytes a
    document), plan and batches: an hourly refresh of 50k documents would otherwise add about
    35 MB a run to the index's disk until the disk guard refused refreshes. A folder that
    cannot be removed is logged, never fails the run that already published."""
    cutoff = time.time() - settings.keep_runs_days * 86_400
    removed = 0
    root = current.parent
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if folder == current or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            written = max(
                (entry.stat().st_mtime for entry in folder.rglob("*")),
                default=folder.stat().st_mtime,
            )
            if written >= cutoff:
                continue
            shutil.rmtree(folder)
            removed += 1
        except OSError as exc:
            log_event(
                logger,
                logging.WARNING,
                "refresh.prune_failed",
                source=source.name,
                run=folder.name,
                error=str(exc)[:300],
            )
    if removed:
        log_event(logger, logging.INFO, "refresh.runs_pruned", source=source.name, runs=removed)
    return removed


def plan_file(snapshot_path: Path) -> Path:
    """Where ``plan`` stores the plan made from this snapshot (same run directory)."""
    return snapshot_path.parent / PLAN_FILE


def parse_cache_dir(settings: Settings) -> Path:
    return settings.cache_dir / "parsed"


def _write_model(path: Path, model: BaseModel) -> None:
    """Write atomically so a retried task never reads a half-written file."""
    write_atomic(path, model.model_dump_json(indent=2).encode("utf-8"))


def _write_report(directory: Path, report: BaseModel) -> None:
    """``report.json``, or beside it ``report-2.json``, ``report-3.json``... when another try
    of the run wrote one: a retried finalize that finds its first try published changes
    nothing, and its report must not replace the record of what the run published."""
    path, attempt = directory / REPORT_FILE, 1
    while path.exists():
        attempt += 1
        path = directory / f"report-{attempt}.json"
    _write_model(path, report)


def _read_model(path: Path, model: type[M]) -> M:
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise ConfigurationError(f"run file {path} is missing or invalid: {exc}") from exc


def _check_plan_source(summary: PlanSummary, source: SourceConfig) -> None:
    """Tasks re-read the sources config: a source edited to another index after its run
    planned would be written there against a plan of the old one."""
    if (summary.source, summary.index) != (source.name, source.index):
        raise ConfigurationError(
            f"the sources config changed during this run: source {source.name!r} now writes "
            f"index {source.index!r}, but the run planned {summary.source!r} into index "
            f"{summary.index!r}; trigger a new run"
        )


def _check_connector(source: SourceConfig) -> None:
    if source.connector == "s3":
        return  # reachability is the listing's business (a failure there withdraws nothing)
    if source.connector != "local":
        raise ConfigurationError(f"source {source.name!r}: unsupported connector")
    if not source.folder.is_dir():
        raise ConfigurationError(f"source {source.name!r}: folder {source.path} does not exist")


def open_s3(settings: Settings, source: SourceConfig, access: S3Access | None = None) -> S3Source:
    """The object-store source of an ``s3`` source config (credentials: ``access`` or the
    standard AWS chain)."""
    access = access or S3Access()
    return S3Source(
        S3Location(bucket=source.bucket or "", prefix=source.prefix),
        scheme=settings.scheme,
        max_file_bytes=settings.max_file_bytes,
        name=source.name,
        session=access.session,
        endpoint_url=source.endpoint_url or access.endpoint_url,
        region=source.region,
        object_labels=frozenset(source.object_labels),
        default_groups=frozenset(settings.default_groups),
        max_attempts=settings.s3_max_attempts,
        timeout_s=settings.s3_timeout_s,
    )


def _published_documents(
    settings: Settings, source: SourceConfig
) -> tuple[str | None, dict[str, DocumentEntry]]:
    """The published version and its manifest entries for this source (read-only, no vectors)."""
    layout = IndexLayout(settings, source.index)
    version = layout.current_version()
    if version is None:
        return None, {}
    manifest = Manifest(layout.version_dir(version) / "manifest.sqlite", read_only=True)
    try:
        return version, manifest.documents(source=source.name)
    finally:
        manifest.close()


def _batches(paths: Sequence[str], size: int) -> Iterable[tuple[str, ...]]:
    for start in range(0, len(paths), size):
        yield tuple(paths[start : start + size])


# --- the steps ----------------------------------------------------------------------------
def _discover_objects(
    settings: Settings, source: SourceConfig, access: S3Access | None
) -> tuple[list[SnapshotEntry], list[DocumentFailure], SensitivityPolicy]:
    """The listing decides: ETag and size stand for content, nothing is downloaded."""
    with open_s3(settings, source, access) as store:
        found = store.discover()
        entries: list[SnapshotEntry] = []
        rejected = list(found.rejected)
        for item in found.items:
            try:
                label = store.labels_for(item, None)
            except (OSError, CitewellError) as exc:
                rejected.append(
                    DocumentFailure(
                        source_uri=item.source_uri,
                        reason=str(exc),
                        relative_path=item.relative_path,
                    )
                )
                continue
            entries.append(
                SnapshotEntry(
                    relative_path=item.relative_path,
                    source_uri=item.source_uri,
                    content_hash=object_content_hash(item),
                    label_fingerprint=label.fingerprint,
                    label=label,
                )
            )
        return entries, rejected, store.labels.sensitivity


def _discover_folder(
    settings: Settings, source: SourceConfig
) -> tuple[list[SnapshotEntry], list[DocumentFailure], SensitivityPolicy]:
    rules = LabelRules.load(source.folder, settings.scheme)
    folder = LocalFolderSource(
        source.folder, name=source.name, max_file_bytes=settings.max_file_bytes, labels=rules
    )
    found = folder.discover()
    entries: list[SnapshotEntry] = []
    rejected = list(found.rejected)
    for item in found.items:
        try:
            digest = hashlib.sha256(folder.read_bytes(item)).hexdigest()
            label = folder.labels_for(item, None)
        except (OSError, CitewellError) as exc:
            rejected.append(
                DocumentFailure(
                    source_uri=item.source_uri, reason=str(exc), relative_path=item.relative_path
                )
            )
            continue
        entries.append(
            SnapshotEntry(
                relative_path=item.relative_path,
                source_uri=item.source_uri,
                content_hash=digest,
                label_fingerprint=label.fingerprint,
                label=label,
            )
        )
    return entries, rejected, rules.sensitivity


def discover(
    settings: Settings, source: SourceConfig, run_id: str, access: S3Access | None = None
) -> DiscoveredSnapshot:
    """List the source's documents with content hashes and label fingerprints."""
    _check_connector(source)
    if source.connector == "s3":
        entries, rejected, sensitivity = _discover_objects(settings, source, access)
        root = source.uri
    else:
        entries, rejected, sensitivity = _discover_folder(settings, source)
        root = str(source.folder.resolve())
    path = run_dir(settings, source, run_id) / SNAPSHOT_FILE
    snapshot = DiscoveredSnapshot(
        source=source.name,
        index=source.index,
        run_id=run_id,
        root=root,
        taken_at=datetime.now(UTC),
        entries=tuple(entries),
        rejected=tuple(rejected),
        sensitivity=sensitivity,
        path=str(path),
    )
    _write_model(path, snapshot)
    log_event(
        logger,
        logging.INFO,
        "refresh.discovered",
        source=source.name,
        index=source.index,
        documents=len(entries),
        rejected=len(rejected),
    )
    return snapshot


def plan(
    settings: Settings, source: SourceConfig, snapshot_path: Path, *, fresh: bool = False
) -> PlanSummary:
    """Classify each document against the published manifest (``fresh``: against nothing, as
    a rebuild does) and write the batches of documents to parse and embed."""
    snapshot = _read_model(snapshot_path, DiscoveredSnapshot)
    base_version, published = (None, {}) if fresh else _published_documents(settings, source)
    new: list[str] = []
    changed: list[str] = []
    relabeled: list[str] = []
    unchanged = 0
    seen: set[str] = {document_id(r.source_uri) for r in snapshot.rejected}
    ingestor = Ingestor(settings)
    for entry in snapshot.entries:
        doc_id = document_id(entry.source_uri)
        seen.add(doc_id)
        prior = published.get(doc_id)
        if entry.label is None:
            change = classify_change(
                prior, entry.content_hash, ingestor.chunk_recipe, entry.label_fingerprint
            )
        else:
            # The pipeline's own decision, sensitivity labels of the indexed content included.
            change, _, _ = ingestor.classify(
                prior, entry.content_hash, entry.label, snapshot.sensitivity
            )
        if change == "new":
            new.append(entry.relative_path)
        elif change == "changed":
            changed.append(entry.relative_path)
        elif change == "relabeled":
            relabeled.append(entry.relative_path)
        else:
            unchanged += 1
    deleted = sorted(doc.relative_path for doc_id, doc in published.items() if doc_id not in seen)
    directory = Path(snapshot.path).parent
    for stale in directory.glob("batch-*.json"):
        stale.unlink()  # a retried plan may produce fewer batches than the first try
    batch_paths: list[str] = []
    for number, paths in enumerate(_batches([*new, *changed], source.batch_size)):
        batch_path = directory / f"batch-{number:04d}.json"
        _write_model(batch_path, Batch(relative_paths=paths))
        batch_paths.append(str(batch_path))
    summary = PlanSummary(
        source=source.name,
        index=source.index,
        run_id=snapshot.run_id,
        base_version=base_version,
        snapshot_path=str(snapshot_path),
        new=tuple(new),
        changed=tuple(changed),
        deleted=tuple(deleted),
        relabeled=tuple(relabeled),
        unchanged=unchanged,
        batch_paths=tuple(batch_paths),
        path=str(plan_file(snapshot_path)),
    )
    _write_model(Path(summary.path), summary)
    log_event(
        logger,
        logging.INFO,
        "refresh.planned",
        source=source.name,
        index=source.index,
        base_version=base_version,
        new=len(new),
        changed=len(changed),
        deleted=len(deleted),
        relabeled=len(relabeled),
        unchanged=unchanged,
        batches=len(batch_paths),
    )
    return summary


def process_batch(
    settings: Settings,
    source: SourceConfig,
    batch_path: Path,
    embedder: Embedder | None = None,
    access: S3Access | None = None,
) -> int:
    """Parse, chunk and embed one batch into the caches. Returns embeddings computed (0 when a
    retry finds them cached)."""
    batch = _read_model(batch_path, Batch)
    ingestor = Ingestor(settings, embedder=embedder, parse_cache_dir=parse_cache_dir(settings))
    if source.connector == "s3":
        with open_s3(settings, source, access) as store:
            computed = ingestor.prepare_objects(store, batch.relative_paths)
    else:
        computed = ingestor.prepare(source.folder, batch.relative_paths)
    log_event(
        logger,
        logging.INFO,
        "refresh.batch_processed",
        source=source.name,
        batch=batch_path.name,
        documents=len(batch.relative_paths),
        embeddings_computed=computed,
    )
    return computed


def _ingest(
    ingestor: Ingestor,
    settings: Settings,
    source: SourceConfig,
    access: S3Access | None,
    fresh: bool = False,
    validate: Callable[[IndexWriter], None] | None = None,
) -> IngestReport:
    if source.connector == "s3":
        with open_s3(settings, source, access) as store:
            return ingestor.ingest_objects(
                store,
                index=source.index,
                fresh=fresh,
                validate=validate,
                allow_empty=source.allow_empty,
            )
    return ingestor.ingest_folder(
        source.folder,
        index=source.index,
        source_name=source.name,
        fresh=fresh,
        validate=validate,
        allow_empty=source.allow_empty,  # an unmounted share must not empty the index
    )


def finalize(
    settings: Settings,
    source: SourceConfig,
    plan_path: Path,
    embedder: Embedder | None = None,
    access: S3Access | None = None,
) -> IngestReport:
    """Publish the source's current state: one ingestion transaction over the whole source."""
    summary = _read_model(plan_path, PlanSummary)
    _check_plan_source(summary, source)
    _check_connector(source)
    ingestor = Ingestor(settings, embedder=embedder, parse_cache_dir=parse_cache_dir(settings))
    report = _ingest(ingestor, settings, source, access)
    _write_report(plan_path.parent, report)
    prune_runs(settings, source, plan_path.parent)
    planned = {*summary.new, *summary.changed}
    done = {*report.added, *report.updated}
    if planned != done or set(summary.deleted) != set(report.deleted):
        # Not an error: the folder changed after planning and the newer state was published.
        log_event(
            logger,
            logging.INFO,
            "refresh.plan_drift",
            source=source.name,
            index=source.index,
            planned=len(planned),
            written=len(done),
        )
    return report


def published_version(plan_path: Path, report: IngestReport) -> str | None:
    """The version a run's ``finalize`` published, or None when the index still serves the
    version the plan started from (nothing changed). Compared with the plan, not with the
    index before this try: a retried finalize whose first try published finds nothing to do,
    yet its run did publish."""
    summary = _read_model(plan_path, PlanSummary)
    if report.index_version is None or report.index_version == summary.base_version:
        return None
    return report.index_version


# --- rebuild ------------------------------------------------------------------------------
def _check_counts(writer: IndexWriter, snapshot: DiscoveredSnapshot, source_name: str) -> None:
    documents = writer.manifest.documents(source=source_name)
    indexed = {doc.source_uri for doc in documents.values()}
    failed = {f.source_uri for f in writer.manifest.failures() if f.source == source_name}
    expected = {entry.source_uri for entry in snapshot.entries} - failed
    if indexed != expected:
        raise RebuildValidationError(
            f"document count mismatch: {len(indexed)} indexed, {len(expected)} expected from the "
            f"plan ({len(indexed - expected)} unexpected, {len(expected - indexed)} missing)"
        )
    if not indexed:
        raise RebuildValidationError("the rebuilt index holds no document")
    chunks = sum(len(doc.chunk_ids) for doc in documents.values())
    _, all_chunks = writer.manifest.counts()
    if writer.vectors.count() != all_chunks or len(writer.lexical) != all_chunks:
        raise RebuildValidationError(
            f"chunk count mismatch: manifest {all_chunks}, vectors {writer.vectors.count()}, "
            f"bm25 {len(writer.lexical)}"
        )
    if chunks < len(indexed):
        raise RebuildValidationError("some indexed documents have no chunk")


def rebuild(
    settings: Settings,
    source: SourceConfig,
    plan_path: Path,
    smoke_test: StagedVersionCheck | None = None,
    embedder: Embedder | None = None,
    access: S3Access | None = None,
) -> RebuildReport:
    """Build the index from scratch into a new version, validate it against the plan and with
    ``smoke_test`` (the source's golden set), and only then publish it (the previous version
    stays for rollback). Raises :class:`RebuildValidationError` and publishes nothing when
    validation fails."""
    summary = _read_model(plan_path, PlanSummary)
    snapshot = _read_model(Path(summary.snapshot_path), DiscoveredSnapshot)
    _check_plan_source(summary, source)
    _check_connector(source)
    if smoke_test is None and source.smoke_golden is not None:
        # Fail closed: a caller that forgot the check must not publish an unchecked version.
        raise ConfigurationError(
            f"source {source.name!r} names a rebuild golden set ({source.smoke_golden}) but "
            "no smoke test was given to run it"
        )
    layout = IndexLayout(settings, source.index)
    previous = layout.current_version()
    ingestor = Ingestor(settings, embedder=embedder, parse_cache_dir=parse_cache_dir(settings))
    smoke: list[tuple[int, int]] = []

    def validate(writer: IndexWriter) -> None:
        _check_counts(writer, snapshot, source.name)
        if smoke_test is not None:
            smoke.append(smoke_test(writer, ingestor.embedder))

    try:
        report = _ingest(ingestor, settings, source, access, fresh=True, validate=validate)
    except RebuildValidationError as exc:
        log_event(
            logger,
            logging.ERROR,
            "rebuild.validation_failed",
            source=source.name,
            index=source.index,
            serving_version=previous,
            error=str(exc),
        )
        raise
    meta = layout.read_meta(report.index_version) if report.index_version else None
    hits, total = smoke[0] if smoke else (0, 0)
    result = RebuildReport(
        index=source.index,
        version=report.index_version,
        previous_version=previous,
        documents=meta.documents if meta else 0,
        chunks=meta.chunks if meta else 0,
        smoke_questions=total,
        smoke_hits=hits,
        ingest=report,
    )
    _write_report(plan_path.parent, result)
    prune_runs(settings, source, plan_path.parent)
    log_event(
        logger,
        logging.INFO,
        "rebuild.published",
        source=source.name,
        index=source.index,
        version=result.version,
        previous_version=previous,
        documents=result.documents,
        chunks=result.chunks,
        smoke_hits=hits,
        smoke_questions=total,
    )
    return result
