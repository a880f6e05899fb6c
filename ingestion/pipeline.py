"""Incremental, crash-safe ingestion into the vector store and the BM25 index.

One run is one index transaction (``retrieval.index.IndexWriter``): it plans against the
manifest of the published version, applies the changes to a staged copy and publishes it
atomically. Killing the process at any point leaves the published version as it was; running
again converges to the state of one clean run. Embeddings are cached by (model, backend, text
hash) outside the index, so a re-run after a crash recomputes none of them.

Plan per document: unchanged (same bytes, same label) costs nothing; relabeled (same bytes, new
label) rewrites access payloads without parsing or embedding; new or changed documents are
parsed, chunked, embedded and replace the old chunks; documents gone from the source are
deleted from both indexes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from citewell.core.errors import (
    CitewellError,
    EmptySourceError,
    InputRejectedError,
    ModelError,
    NonFiniteVectorsError,
    ParseError,
    ParseWorkerError,
)
from citewell.core.logging import log_event
from citewell.core.models import (
    AccessLabel,
    Chunk,
    DocumentFailure,
    Frozen,
    IngestReport,
    IngestStages,
)
from citewell.core.settings import Settings
from citewell.ingestion.chunking import Tokenizer, chunk_document, chunk_recipe, embedding_tokenizer
from citewell.ingestion.interrupts import raise_if_interrupted
from citewell.ingestion.labels import (
    MARKING_RULES_VERSION,
    LabelRules,
    Marking,
    apply_sensitivity,
)
from citewell.ingestion.limits import ZipLimits
from citewell.ingestion.models import (
    ChunkDraft,
    DiscoveryResult,
    Element,
    ParsedDocument,
    ResolvedLabel,
    SourceItem,
)
from citewell.ingestion.parse_workers import (
    ParseJob,
    ParseWorkers,
    WorkerLimits,
    default_workers,
    start_forkserver,
)
from citewell.ingestion.parsing import name_title
from citewell.ingestion.progress import IngestProgress, NoProgress, TerminalProgress
from citewell.ingestion.sensitivity import (
    SensitivityPolicy,
    SensitivityReading,
    SensitivityRecord,
    carries_labels,
    decide,
)
from citewell.ingestion.sources import LocalFolderSource, S3Source, object_content_hash
from citewell.ingestion.sources_config import check_folder_source, folder_sources
from citewell.retrieval.embedding import bundled_model_path, local_model_dir
from citewell.retrieval.factory import build_embedder, embedding_model_id
from citewell.retrieval.index import IndexWriter
from citewell.retrieval.manifest import ChangeKind, DocumentEntry, Manifest, classify_change
from citewell.retrieval.protocols import Embedder, Matrix

logger = logging.getLogger(__name__)

_CHUNK_NAMESPACE = uuid.UUID("5b0e4a36-37a4-4d5e-9a54-2f1f2d1c8e11")
_EMBED_BATCH_CHUNKS = 256  # chunks buffered across documents before one embedding call
# Part of the parse cache key: bump when parsing output changes (e.g. how titles are chosen), so
# cached documents parsed the old way are not reused.
# 6: a document without a title of its own is named after its own file, not the one parsed
# (a download's "<doc id>.<type>", another file with the same bytes in the cache).
# 7: markup and text parses keep their source's lines, where banners the parse drops are read.
# 8: those lines decoded as the parse decodes the file (UTF-16 banners were missed).
# 9: an Office Open XML package named .xls/.doc/.ppt is parsed (and labelled) as what it is.
# 10: DOCX text boxes, content controls, tracked insertions and header table cells are read.
# 11: PPTX master and layout text in groups and tables is read.
_PARSER_VERSION = 11  # 5: PDFs read by PDFium; 4: XLSX sheet headers/footers, PPTX masters
# Part of the cache key of sensitivity readings of objects; 2: PDFs read past pypdf's default
# array limit, which version 1 refused as unreadable; 3: packages named .xls/.doc/.ppt read;
# 4: MSIP_Label_ keys read in any case.
_SENSITIVITY_VERSION = 4
# A cache temporary older than this is a killed writer's (no write takes hours): removed.
_STALE_TEMPORARY_S = 6 * 3600


# prepare() parses, chunks and embeds without labelling: no label of it reaches the index.
_PREPARE_LABEL = ResolvedLabel(
    label=AccessLabel(classification="unlabelled", groups=frozenset()),
    labelled=False,
    origin="prepare",
    fingerprint="",
)


def _describe(exc: BaseException) -> str:
    """A short reason for a per-document failure (our own errors carry a readable message)."""
    if isinstance(exc, ParseError):
        return exc.reason
    if isinstance(exc, (CitewellError, OSError)) and str(exc).strip():
        return str(exc)
    message = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class TextDocument(Frozen):
    """A pre-extracted document (e.g. a BEIR corpus record) with its access label."""

    doc_id: str
    title: str
    text: str
    label: AccessLabel
    modified_at: datetime | None = None
    document_date: datetime | None = None  # the date the document states about itself


def _kept_label(
    current_label: Callable[[str, str, AccessLabel], ResolvedLabel],
    prior: DocumentEntry,
    reason: str,
    failed: list[DocumentFailure] | None = None,
) -> tuple[ResolvedLabel | None, str]:
    """The label ``current_label`` gives an indexed version kept this run, with ``reason``; or
    None (withdrawn) with why it cannot be read, also added to ``failed`` when given."""
    indexed = AccessLabel(classification=prior.classification, groups=frozenset(prior.groups))
    try:
        return current_label(prior.relative_path, prior.content_hash, indexed), reason
    except (OSError, CitewellError) as exc:
        failure = _label_failure(exc)
        if failed is not None:
            failed.append(
                DocumentFailure(
                    source_uri=prior.source_uri, reason=failure, relative_path=prior.relative_path
                )
            )
        return None, failure


def document_id(source_uri: str) -> str:
    """Stable document id from the source URI."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, source_uri))


def chunk_id(doc_id: str, chunk_index: int, text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{doc_id}:{chunk_index}:{digest}"))


@dataclass(frozen=True)
class _Candidate:
    """One document as the planner sees it; ``load`` parses it only when needed."""

    doc_id: str
    source_uri: str
    relative_path: str
    doc_type: str
    content_hash: str
    base_label: ResolvedLabel  # label without banner
    modified_at: datetime | None
    # A file is parsed in a worker process; a pre-extracted document is built by ``load``.
    item: SourceItem | None = None
    load: Callable[[], ParsedDocument] | None = None
    file_name: str | None = None  # the file's stem, for chunk headers; None without a file
    # Markings in the parsed document that can only raise the label (banners, ...); None: none.
    mark: Callable[[ParsedDocument], Marking | None] | None = None
    # The Purview labels the content carries (ingestion/sensitivity.py); None: not a file.
    read_sensitivity: Callable[[], SensitivityReading] | None = None
    # An object not on local disk: downloads it into the given folder for the parse workers
    # and returns the local file.
    download: Callable[[Path], Path] | None = None
    # Keeps the labels a worker read with the parse (an object's, cached for later runs).
    keep_labels: Callable[[SensitivityReading], None] | None = None


@dataclass(frozen=True)
class _Unreadable:
    """A document whose content cannot be read now. ``label`` is its current label, enforced on
    the version already indexed (which keeps being served); None when the labels themselves
    cannot be determined, which withdraws it."""

    doc_id: str
    source_uri: str
    reason: str
    label: ResolvedLabel | None = None
    relative_path: str | None = None


@dataclass
class _Pending:
    candidate: _Candidate
    parsed: ParsedDocument
    label: AccessLabel
    labelled: bool
    banner_level: str | None
    drafts: list[ChunkDraft]
    updated: bool
    sensitivity: str | None = None  # SensitivityRecord JSON for the manifest


@dataclass
class _Tally:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    relabeled: list[str] = field(default_factory=list)
    failed: list[DocumentFailure] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    label_refusals: list[DocumentFailure] = field(default_factory=list)
    chunks_written: int = 0
    chunks_queued: int = 0
    chunks_embedded: int = 0
    progress: IngestProgress = field(default_factory=NoProgress)
    chunk_s: float = 0.0
    embed_s: float = 0.0
    write_s: float = 0.0


# The parsing of the run going on in this thread: files' labels are read by its workers.
_RUN_PARSING: contextvars.ContextVar[_Parsing | None] = contextvars.ContextVar(
    "citewell_run_parsing", default=None
)


class _Parsing:
    """One run's parsing: the parse cache first, then the worker processes. ``submit`` early,
    ``take`` later: documents parse while the run chunks and embeds the ones before them."""

    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor
        self._workers: ParseWorkers | None = None
        self._cached: dict[str, ParsedDocument] = {}
        self._labels: dict[str, SensitivityReading] = {}  # read by the workers, per document
        self.worker_count = ingestor.settings.parse_workers or default_workers()
        # Documents submitted ahead of the one being chunked: enough to keep every worker busy
        # through an embedding batch, few enough that parsed documents never pile up.
        self.window = 2 * self.worker_count + 1
        self.wait_s = 0.0
        # Objects downloaded for the workers, removed once parsed; a failed download's reason.
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._downloaded: dict[str, Path] = {}
        self._not_downloaded: dict[str, str] = {}

    def __enter__(self) -> _Parsing:
        self._token = _RUN_PARSING.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _RUN_PARSING.reset(self._token)
        try:
            if self._workers is not None:
                self._workers.close()  # also on Ctrl-C: no worker outlives the run
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()

    def submit(self, candidate: _Candidate) -> None:
        item = candidate.item
        if item is None:
            return
        cached = self._ingestor._cached_parse(item, candidate.content_hash)
        if cached is not None:
            self._cached[candidate.doc_id] = cached
            return
        path = item.path
        if candidate.download is not None:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="citewell-objects-")
            try:
                path = candidate.download(Path(self._scratch.name))
            except Exception as exc:  # reported as this document's failure by take()
                self._not_downloaded[candidate.doc_id] = _describe(exc)
                return
            self._downloaded[candidate.doc_id] = path
        # A local file's content hash is the SHA-256 of the bytes the run read: the worker
        # parses those bytes or fails, never a version saved since (indexed, and cached, under
        # the old hash, it would pass as unchanged once the file is back to those bytes).
        sha256 = candidate.content_hash if candidate.download is None else None
        # A file's labels are read where it is parsed, under the workers' limits.
        labels = candidate.read_sensitivity is not None
        self._pool().submit(ParseJob(candidate.doc_id, path, item.doc_type, sha256, labels))

    def _pool(self) -> ParseWorkers:
        if self._workers is None:
            self._workers = ParseWorkers(self.worker_count, self._ingestor.worker_limits())
        return self._workers

    def read_labels(self, path: Path, doc_type: str) -> SensitivityReading:
        """A file's labels read by this run's workers (after the jobs queued before it)."""
        return self._pool().read_labels(path, doc_type)

    def take(self, candidate: _Candidate) -> ParsedDocument:
        """The parsed document, or :class:`ParseError` with the reason it failed."""
        if candidate.doc_id in self._cached:
            return _named_for(candidate, self._cached.pop(candidate.doc_id))
        if candidate.doc_id in self._not_downloaded:
            raise ParseError(self._not_downloaded.pop(candidate.doc_id))
        if candidate.item is None:
            if candidate.load is None:
                raise ParseError("nothing to parse")
            return candidate.load()
        if self._workers is None:
            raise ParseWorkerError(f"{candidate.relative_path} was never submitted")
        started = time.perf_counter()
        outcome = self._workers.take(candidate.doc_id)
        self.wait_s += time.perf_counter() - started
        downloaded = self._downloaded.pop(candidate.doc_id, None)
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
        if outcome.parsed is None:
            raise ParseError(outcome.reason or "parse failed")
        if outcome.labels is not None:
            self._labels[candidate.doc_id] = outcome.labels
            if candidate.keep_labels is not None:
                candidate.keep_labels(outcome.labels)
        self._ingestor._store_parse(candidate.item, candidate.content_hash, outcome.parsed)
        return _named_for(candidate, outcome.parsed)

    def labels(self, candidate: _Candidate) -> SensitivityReading | None:
        """The sensitivity labels a worker read with the parse (None: read them here)."""
        return self._labels.pop(candidate.doc_id, None)

    def stages(self, tally: _Tally) -> IngestStages:
        workers = self._workers
        return IngestStages(
            parse_s=round(workers.busy_seconds if workers else 0.0, 3),
            parse_wait_s=round(self.wait_s, 3),
            chunk_s=round(tally.chunk_s, 3),
            embed_s=round(tally.embed_s, 3),
            write_s=round(tally.write_s, 3),
            parse_workers=workers.workers if workers else 0,
            parse_workers_replaced=workers.replaced if workers else 0,
            parse_peak_rss_bytes=workers.peak_rss_bytes if workers else 0,
        )


class _EmbedAhead:
    """Embeds one batch in a background thread while the caller parses, labels and chunks the
    next (the embedding runtimes release the GIL); batches are written in order, by the
    caller's thread, so the index writer is never shared. At most two batches wait."""

    def __init__(
        self, ingestor: Ingestor, writer: IndexWriter, source_name: str, tally: _Tally
    ) -> None:
        self._ingestor = ingestor
        self._writer = writer
        self._source_name = source_name
        self._tally = tally
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="citewell-embed")
        self._in_flight: tuple[list[_Pending], Future[Matrix]] | None = None

    def __enter__(self) -> _EmbedAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        # After a failure the run is abandoned: what is still queued is dropped.
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, pending: list[_Pending]) -> None:
        """Start embedding ``pending``, then write the batch before it."""
        previous = self._in_flight
        self._in_flight = None
        if pending:
            future = self._executor.submit(self._ingestor._embed, pending, self._tally)
            self._in_flight = (pending, future)
        if previous is not None:
            self._write(*previous)

    def drain(self) -> None:
        """Write the batch still embedding."""
        if self._in_flight is not None:
            batch, self._in_flight = self._in_flight, None
            self._write(*batch)

    def _write(self, pending: list[_Pending], future: Future[Matrix]) -> None:
        self._ingestor._write(
            self._writer, self._source_name, pending, future.result(), self._tally
        )


class Ingestor:
    """Ingests sources into a named index. Cheap to construct; the model loads on first use."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        parse_cache_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self._embedder = embedder
        # Parsed documents by content hash, so work split across processes (Airflow mapped
        # tasks) parses each document once.
        self.parse_cache_dir = parse_cache_dir
        self._cache_warned = False  # a cache that cannot be written is logged once
        self._cache_swept = False  # killed writers' temporaries are removed once per Ingestor
        self._tokenizer: Tokenizer | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The embedding model's own tokenizer, so chunk sizes count what the embedder sees
        (None for a hub model not cached locally: llama-index's default count is used)."""
        if self._tokenizer is None:
            model_dir = local_model_dir(self.settings.embedding_model or bundled_model_path())
            if model_dir is not None:
                with contextlib.suppress(ModelError):
                    self._tokenizer = embedding_tokenizer(str(model_dir))
        return self._tokenizer

    def chunk(self, parsed: ParsedDocument, file_name: str | None = None) -> list[ChunkDraft]:
        """Chunk drafts of ``parsed`` exactly as ingestion makes them (headers included)."""
        return chunk_document(
            parsed,
            self.settings.chunk_size_tokens,
            self.settings.chunk_overlap_tokens,
            tokenizer=self.tokenizer,
            context=self.settings.chunk_context,
            file_name=file_name,
            max_sequence_tokens=self.settings.embedding_max_seq_length,
        )

    @functools.cached_property
    def chunk_recipe(self) -> str:
        """Fingerprint of the settings and code that decide chunk texts, headers and in-document
        markings; an index made with another recipe is parsed, labelled and chunked again in
        full on its next refresh (so a better banner detector reaches documents already
        indexed)."""
        chunking = chunk_recipe(
            self.settings.chunk_size_tokens,
            self.settings.chunk_overlap_tokens,
            self.settings.chunk_context,
            self.settings.embedding_max_seq_length,
        )
        material = f"{chunking}|parser:{_PARSER_VERSION}|markings:{MARKING_RULES_VERSION}"
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]

    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_uncompressed_bytes=self.settings.max_uncompressed_bytes,
            max_compression_ratio=self.settings.max_compression_ratio,
            max_entries=self.settings.max_zip_entries,
        )

    def worker_limits(self) -> WorkerLimits:
        return WorkerLimits(
            time_limit_s=self.settings.parse_time_limit_s,
            memory_limit_bytes=self.settings.parse_memory_limit_bytes,
            zip_limits=self.zip_limits(),
        )

    def _parse_cache_file(self, item: SourceItem, content_hash: str) -> Path | None:
        if self.parse_cache_dir is None:
            return None
        return self.parse_cache_dir / f"{content_hash}.{item.doc_type}.p{_PARSER_VERSION}.json"

    def _cached_parse(self, item: SourceItem, content_hash: str) -> ParsedDocument | None:
        cached = self._parse_cache_file(item, content_hash)
        if cached is None or not cached.exists():
            return None
        try:
            return ParsedDocument.model_validate_json(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cached.unlink(missing_ok=True)
            return None

    def _store_parse(self, item: SourceItem, content_hash: str, parsed: ParsedDocument) -> None:
        cached = self._parse_cache_file(item, content_hash)
        if cached is not None:
            self._write_cache(cached, parsed.model_dump_json())

    def _write_cache(self, path: Path, payload: str) -> None:
        """Write one cache entry (a parse, an object's labels). The caches only save work: one
        that cannot be written (disk full, a read-only folder) is logged once, the run goes on."""
        # Unique, not per pid: pods of other hosts sharing the folder may run under this pid.
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not self._cache_swept:
                self._cache_swept = True
                _remove_stale_temporaries(path.parent)
            tmp.write_text(payload, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # a partial write (disk full) is no entry
            if not self._cache_warned:
                self._cache_warned = True
                log_event(
                    logger,
                    logging.WARNING,
                    "ingest.cache_unwritable",
                    folder=str(path.parent),
                    reason=_describe(exc),
                )

    def _warm_caches(self, candidates: Iterable[_Candidate]) -> int:
        """Parse (in the workers), chunk and embed ``candidates`` into the caches without
        writing the index; failures are left for the publishing run to report. Returns the
        number of embeddings computed."""
        computed_before = _computed(self.embedder)
        with _Parsing(self) as parsing:
            ahead: deque[_Candidate] = deque()

            def embed_next() -> None:
                candidate = ahead.popleft()
                try:
                    parsed = parsing.take(candidate)
                    read = parsing.labels(candidate) is None and candidate.download is not None
                    if read and candidate.read_sensitivity is not None:
                        # An object's labels, into the cache for the publishing run (a local
                        # file's are read again there, with the file at hand).
                        candidate.read_sensitivity()
                    drafts = self.chunk(parsed, candidate.file_name)
                except ParseWorkerError:
                    raise
                except Exception as exc:  # the publishing run reports it with its reason
                    reason = _describe(exc)
                    log_event(logger, logging.DEBUG, "ingest.prepare_skipped", reason=reason)
                    return
                if drafts:
                    self.embedder.embed_documents([d.embedding_text for d in drafts])

            for candidate in candidates:
                parsing.submit(candidate)
                ahead.append(candidate)
                while len(ahead) > parsing.window:
                    embed_next()
            while ahead:
                embed_next()
        return _computed(self.embedder) - computed_before

    def prepare(self, path: Path, relative_paths: Iterable[str]) -> int:
        """Parse, chunk and embed the given files of a folder into the caches, without writing
        the index (work for parallel workers before one ``ingest_folder`` publishes). Returns
        the number of embeddings computed; parse failures are left for the publishing run."""
        root = path.resolve()

        def candidates() -> Iterator[_Candidate]:
            for relative in dict.fromkeys(relative_paths):
                file_path = (root / relative).resolve()
                if not file_path.is_relative_to(root) or not file_path.is_file():
                    continue
                if file_path.stat().st_size > self.settings.max_file_bytes:
                    continue  # the publishing run reports it as too large
                data = file_path.read_bytes()
                item = SourceItem(
                    source="prepare",
                    source_uri=file_path.as_uri(),
                    relative_path=relative,
                    path=file_path,
                    size=len(data),
                    modified_at=datetime.fromtimestamp(file_path.stat().st_mtime, UTC),
                    doc_type=file_path.suffix.lower().lstrip("."),
                )
                yield _Candidate(
                    doc_id=document_id(item.source_uri),
                    source_uri=item.source_uri,
                    relative_path=relative,
                    doc_type=item.doc_type,
                    content_hash=hashlib.sha256(data).hexdigest(),
                    base_label=_PREPARE_LABEL,
                    modified_at=item.modified_at,
                    item=item,
                    file_name=file_path.stem,
                )

        return self._warm_caches(candidates())

    # --- entry points ---------------------------------------------------------------------
    def ingest_folder(
        self,
        path: Path,
        index: str | None = None,
        source_name: str | None = None,
        progress: bool | IngestProgress = False,
        fresh: bool = False,
        validate: Callable[[IndexWriter], None] | None = None,
        allow_empty: bool = True,
    ) -> IngestReport:
        """Refresh ``index`` from a local folder (recursive) with its labels files.

        ``fresh`` rebuilds into an empty version; ``validate`` may raise to refuse publishing
        (the serving version then stays untouched). ``progress`` receives the run's progress
        (``True``: bars on a terminal). ``allow_empty=False`` refuses a folder with no document
        (an unmounted share would otherwise publish a version without this source)."""
        root = path.resolve()
        name = source_name or root.name
        rules = LabelRules.load(root, self.settings.scheme)
        source = LocalFolderSource(
            root, name=name, max_file_bytes=self.settings.max_file_bytes, labels=rules
        )
        discovery = source.discover()
        if not discovery.items and not allow_empty:
            raise InputRejectedError(
                f"no document to ingest in {root}; nothing was published "
                "(pass --allow-empty to publish the source as empty)"
            )

        def candidate(item: SourceItem, base: ResolvedLabel) -> _Candidate | _Unreadable:
            try:
                data = source.read_bytes(item)
            except Exception as exc:
                # Reported and skipped; an indexed version stays, under the current label.
                reason = f"cannot read: {_describe(exc)}"
                return _Unreadable(
                    document_id(item.source_uri),
                    item.source_uri,
                    reason,
                    base,
                    relative_path=item.relative_path,
                )

            def mark(parsed: ParsedDocument) -> Marking | None:
                return rules.strongest_marking(parsed, item.path)

            def sensitivity() -> SensitivityReading:
                return self._read_labels(item.path, item.doc_type)

            return _Candidate(
                doc_id=document_id(item.source_uri),
                source_uri=item.source_uri,
                relative_path=item.relative_path,
                doc_type=item.doc_type,
                content_hash=hashlib.sha256(data).hexdigest(),
                base_label=base,
                modified_at=item.modified_at,
                item=item,
                file_name=Path(item.relative_path).stem,
                mark=mark,
                read_sensitivity=sensitivity,
            )

        def check_source(writer: IndexWriter) -> None:
            # Callers check the name before the write lock; checked again under it, as another
            # run may since have published this folder under another name, or this name for
            # another folder (whose documents this run would delete as gone).
            check_folder_source(folder_sources(writer.manifest), root, name, writer.layout.name)

        return self._ingest_discovered(
            source,
            discovery,
            str(root),
            candidate,
            index=index,
            progress=progress,
            fresh=fresh,
            validate=validate,
            sensitivity=rules.sensitivity,
            check_source=check_source,
        )

    def _read_labels(self, path: Path, doc_type: str) -> SensitivityReading:
        """The sensitivity labels of a file, read by a parse worker under its time and memory
        limits, never in this process: a hostile PDF's label metadata took pypdf 19 s and
        800 MB. The run's own workers while a run is going (a cached parse, a refused label
        read again), else a worker started for it."""
        if not carries_labels(doc_type):
            return SensitivityReading()  # nothing to read: no worker round trip
        parsing = _RUN_PARSING.get()
        if parsing is not None and parsing._ingestor is self:
            return parsing.read_labels(path, doc_type)
        with ParseWorkers(1, self.worker_limits()) as workers:
            return workers.read_labels(path, doc_type)

    # --- object stores (S3-compatible) ----------------------------------------------------
    def _cached_reading(self, content_hash: str) -> SensitivityReading | None:
        if self.parse_cache_dir is None:
            return None
        path = self.parse_cache_dir / f"{content_hash}.mip{_SENSITIVITY_VERSION}.json"
        try:
            return SensitivityReading.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _cache_reading(self, content_hash: str, reading: SensitivityReading) -> None:
        if self.parse_cache_dir is None:
            return
        path = self.parse_cache_dir / f"{content_hash}.mip{_SENSITIVITY_VERSION}.json"
        self._write_cache(path, reading.model_dump_json())

    def _object_candidate(
        self, source: S3Source, item: SourceItem, base: ResolvedLabel
    ) -> _Candidate:
        """An object as the planner sees it: its listing (ETag, size) stands for its content, so
        an unchanged object is never downloaded; a changed one is downloaded once, for the parse
        workers, which read its sensitivity labels from that copy too."""
        doc_id = document_id(item.source_uri)
        content_hash = object_content_hash(item)
        readings: dict[str, SensitivityReading] = {}

        def download(folder: Path) -> Path:
            local = folder / f"{doc_id}.{item.doc_type}"
            try:
                source.download(item, local)
            except InputRejectedError as exc:
                local.unlink(missing_ok=True)
                raise ParseError(f"cannot read: {exc}") from exc
            return local

        def keep(reading: SensitivityReading) -> None:
            self._cache_reading(content_hash, reading)
            readings["reading"] = reading

        def sensitivity() -> SensitivityReading:
            if not carries_labels(item.doc_type):
                return SensitivityReading()  # never downloaded for labels it cannot carry
            if "reading" not in readings:
                cached = self._cached_reading(content_hash)
                if cached is not None:
                    return cached
                # Parsed from the cache (an Airflow ``process`` task), or unchanged and indexed
                # before labels were read: download once more, only to read the labels.
                with tempfile.TemporaryDirectory(prefix="citewell-s3-") as folder:
                    try:
                        local = download(Path(folder))
                    except ParseError as exc:
                        reason = f"sensitivity labels unreadable: {exc.reason}"
                        return SensitivityReading(problems=(reason,))
                    keep(self._read_labels(local, item.doc_type))
            return readings["reading"]

        def mark(parsed: ParsedDocument) -> Marking | None:
            # Header and footer texts and a markup source's lines are part of the parse.
            return source.labels.strongest_marking(parsed, None)

        return _Candidate(
            doc_id=doc_id,
            source_uri=item.source_uri,
            relative_path=item.relative_path,
            doc_type=item.doc_type,
            content_hash=content_hash,
            base_label=base,
            modified_at=item.modified_at,
            item=item,
            file_name=PurePosixPath(item.relative_path).stem,
            mark=mark,
            read_sensitivity=sensitivity,
            download=download,
            keep_labels=keep,
        )

    def prepare_objects(self, source: S3Source, relative_paths: Iterable[str]) -> int:
        """Download, parse, chunk and embed the given objects into the caches (sensitivity
        readings included) without writing the index: the object-store counterpart of
        :meth:`prepare`. Failures are left for the publishing run to report."""

        def candidates() -> Iterator[_Candidate]:
            for relative in dict.fromkeys(relative_paths):
                try:
                    # HEAD per object: a batch never lists the whole prefix again.
                    item = source.item_for(relative)
                except InputRejectedError:
                    continue
                yield self._object_candidate(source, item, _PREPARE_LABEL)

        return self._warm_caches(candidates())

    def ingest_objects(
        self,
        source: S3Source,
        index: str | None = None,
        progress: bool | IngestProgress = False,
        fresh: bool = False,
        validate: Callable[[IndexWriter], None] | None = None,
        allow_empty: bool = False,
    ) -> IngestReport:
        """Refresh ``index`` from an object store prefix. The listing (ETag and size) decides
        what is unchanged: those objects are neither downloaded nor parsed nor embedded. A
        listing that fails raises before anything is written; an empty listing of a source
        that had documents is refused unless ``allow_empty``."""
        discovery = source.discover()  # raises SourceUnavailableError: nothing withdrawn
        return self._ingest_discovered(
            source,
            discovery,
            source.location.uri,
            functools.partial(self._object_candidate, source),
            index=index,
            progress=progress,
            fresh=fresh,
            validate=validate,
            sensitivity=source.labels.sensitivity,
            refuse_empty=not allow_empty,
        )

    def _ingest_discovered(
        self,
        source: LocalFolderSource | S3Source,
        discovery: DiscoveryResult,
        where: str,
        candidate: Callable[[SourceItem, ResolvedLabel], _Candidate | _Unreadable],
        *,
        index: str | None,
        progress: bool | IngestProgress,
        fresh: bool,
        validate: Callable[[IndexWriter], None] | None,
        sensitivity: SensitivityPolicy | None = None,
        refuse_empty: bool = False,
        check_source: Callable[[IndexWriter], None] | None = None,
    ) -> IngestReport:
        """One run over what ``source`` discovered: each item with its labels becomes a
        ``candidate``; documents the source refused keep their indexed version, served only
        under the label the source's labels give them now (``labels_at``)."""
        reporter = _reporter(progress)
        reporter.begin(source.name, where, len(discovery.items))
        if discovery.items:
            # The forkserver's imports overlap the embedding model's load in _run (both take
            # seconds; one after the other they delayed the first embedding batch by both).
            start_forkserver()

        def candidates() -> Iterator[_Candidate | _Unreadable]:
            for item in discovery.items:
                try:
                    base = source.labels_for(item, None)
                except Exception as exc:
                    # Labels cannot be determined, for any reason: withdrawn until they can.
                    yield _Unreadable(
                        document_id(item.source_uri),
                        item.source_uri,
                        _label_failure(exc),
                        relative_path=item.relative_path,
                    )
                    continue
                yield candidate(item, base)

        return self._run(
            index,
            source.name,
            candidates(),
            total=len(discovery.items),
            rejected=list(discovery.rejected),
            keep_doc_ids={document_id(r.source_uri) for r in discovery.rejected},
            progress=reporter,
            fresh=fresh,
            validate=validate,
            current_label=source.labels_at,
            sensitivity=sensitivity,
            refuse_empty=refuse_empty,
            check_source=check_source,
        )

    def ingest_texts(
        self,
        docs: Iterable[TextDocument],
        index: str,
        source_name: str,
        progress: bool | IngestProgress = False,
        fresh: bool = False,
    ) -> IngestReport:
        """Sync ``index`` with pre-extracted documents: the given set replaces the source's."""
        documents = list(docs)

        def candidates() -> Iterator[_Candidate]:
            for doc in documents:
                label = ResolvedLabel(
                    label=doc.label,
                    labelled=bool(doc.label.groups),
                    origin="caller",
                    fingerprint=_label_fingerprint(doc.label),
                )
                uri = f"{source_name}:{doc.doc_id}"
                body = f"{doc.title}\n\n{doc.text}" if doc.title.strip() else doc.text
                # The stated date is part of what is stored, so a new date is a change; without
                # one the hash stays what it was before documents had dates.
                material = body if doc.document_date is None else f"{body}\n{doc.document_date}"

                def load(doc: TextDocument = doc, body: str = body) -> ParsedDocument:
                    parsed = _text_document(doc.title or doc.doc_id, body, doc.title)
                    return parsed.model_copy(update={"document_date": doc.document_date})

                yield _Candidate(
                    doc_id=doc.doc_id,
                    source_uri=uri,
                    relative_path=doc.doc_id,
                    doc_type="txt",
                    content_hash=hashlib.sha256(material.encode("utf-8")).hexdigest(),
                    base_label=label,
                    modified_at=doc.modified_at,
                    load=load,
                )

        return self._run(
            index,
            source_name,
            candidates(),
            total=len(documents),
            rejected=[],
            keep_doc_ids=set(),
            progress=_reporter(progress),
            fresh=fresh,
        )

    # --- the transaction ------------------------------------------------------------------
    def _run(
        self,
        index: str | None,
        source_name: str,
        candidates: Iterator[_Candidate | _Unreadable],
        *,
        total: int,
        rejected: list[DocumentFailure],
        keep_doc_ids: set[str],
        progress: IngestProgress,
        fresh: bool,
        validate: Callable[[IndexWriter], None] | None = None,
        current_label: Callable[[str, str, AccessLabel], ResolvedLabel] | None = None,
        sensitivity: SensitivityPolicy | None = None,
        refuse_empty: bool = False,
        check_source: Callable[[IndexWriter], None] | None = None,
    ) -> IngestReport:
        """One index transaction over a source's ``candidates``. ``keep_doc_ids``: documents the
        source refused at discovery (too large, a symlink now...); their indexed versions stay,
        served only under the label ``current_label`` gives their relative path now (the same
        rule for folders and object stores), withdrawn when it cannot be determined.
        ``check_source`` may raise to refuse the run before anything is written (under the
        write lock, against the version the run starts from)."""
        started = time.perf_counter()
        embedder = self.embedder
        computed_before = _computed(embedder)
        tally = _Tally(failed=list(rejected), progress=progress)
        with (
            contextlib.closing(progress),
            IndexWriter(
                self.settings,
                index,
                embedding_model=embedding_model_id(self.settings),
                embedding_key=embedder.cache_key,
                dimension=embedder.dimension,
                fresh=fresh,
            ) as writer,
            _Parsing(self) as parsing,
            _EmbedAhead(self, writer, source_name, tally) as embedding,
        ):
            if check_source is not None:
                check_source(writer)
            existing = writer.manifest.documents(source=source_name)
            if refuse_empty and existing and total == 0 and not rejected:
                # An empty listing of a source that had documents is far more often a wrong
                # prefix, a permissions change or a broken store than a real deletion.
                raise EmptySourceError(
                    f"source {source_name!r} listed no documents but the index holds "
                    f"{len(existing)}; refusing to withdraw them all (allow an empty source "
                    "to do so on purpose)"
                )
            # A rebuild starts empty, but labels seen before must still not be lowered.
            remembered = (
                _published_documents(writer, source_name)
                if fresh and sensitivity is not None
                else existing
            )
            recipe = self.chunk_recipe
            stale = sum(1 for doc in existing.values() if doc.chunk_recipe != recipe)
            if stale:
                log_event(
                    logger, logging.INFO, "ingest.rechunk", source=source_name, documents=stale
                )
            failures_before = _failure_set(writer, source_name)
            writer.manifest.clear_failures(source_name)
            for failure in rejected:
                writer.manifest.record_failure(source_name, failure.source_uri, failure.reason)
            seen: set[str] = set(keep_doc_ids)
            pending: list[_Pending] = []  # chunked, waiting for a full embedding batch
            # Submitted for parsing, not yet chunked: (candidate, already indexed).
            ahead: deque[tuple[_Candidate, bool]] = deque()

            def chunk_next() -> None:
                nonlocal pending
                candidate, exists = ahead.popleft()
                item = self._prepare(
                    candidate,
                    exists,
                    tally,
                    parsing,
                    sensitivity,
                    remembered.get(candidate.doc_id),
                )
                if item is None:
                    reason = tally.failed[-1].reason
                    base = candidate.base_label
                    # The path's label, so reports show the failure only to who may see it.
                    writer.manifest.record_failure(
                        source_name,
                        candidate.source_uri,
                        reason,
                        classification_rank=(
                            self.settings.scheme.rank(base.label.classification)
                            if base.labelled
                            else None
                        ),
                        groups=base.label.groups,
                    )
                    prior = existing.get(candidate.doc_id)
                    if prior is not None:
                        # The old version stays (the new one failed), under the current label:
                        # for other content, the one its path gives the old version (a new
                        # object's tags label the new object, not the kept text).
                        kept: ResolvedLabel | None = base
                        if current_label is not None and prior.content_hash != (
                            candidate.content_hash
                        ):
                            kept, reason = _kept_label(current_label, prior, reason)
                        self._enforce_label(writer, prior, kept, reason, tally, sensitivity)
                    return
                pending.append(item)
                tally.chunks_queued += len(item.drafts)
                if sum(len(p.drafts) for p in pending) >= _EMBED_BATCH_CHUNKS:
                    embedding.submit(pending)
                    pending = []

            for checked, candidate in enumerate(candidates, start=1):
                raise_if_interrupted()
                progress.update("parse", checked, total)
                seen.add(candidate.doc_id)
                if isinstance(candidate, _Unreadable):
                    tally.failed.append(
                        DocumentFailure(
                            source_uri=candidate.source_uri,
                            reason=candidate.reason,
                            relative_path=candidate.relative_path,
                        )
                    )
                    writer.manifest.record_failure(
                        source_name, candidate.source_uri, candidate.reason
                    )
                    prior = existing.get(candidate.doc_id)
                    if prior is not None:
                        self._enforce_label(
                            writer, prior, candidate.label, candidate.reason, tally, sensitivity
                        )
                    continue
                prior = existing.get(candidate.doc_id)
                change, served, record = self.classify(
                    prior,
                    candidate.content_hash,
                    candidate.base_label,
                    sensitivity if candidate.read_sensitivity is not None else None,
                    candidate.read_sensitivity,
                    tally,
                )
                if prior is not None and change == "unchanged":
                    tally.unchanged.append(candidate.relative_path)
                    if not prior.labelled:
                        tally.unlabelled.append(candidate.relative_path)
                    continue
                if prior is not None and change == "relabeled":
                    self._relabel(writer, prior, served, tally, record)
                    continue
                parsing.submit(candidate)
                ahead.append((candidate, prior is not None))
                while len(ahead) > parsing.window:
                    chunk_next()
            while ahead:
                chunk_next()
            embedding.submit(pending)
            embedding.drain()
            for doc_id in sorted(keep_doc_ids):
                prior = existing.get(doc_id)
                if prior is None or current_label is None:
                    continue
                label, reason = _kept_label(
                    current_label, prior, "refused at discovery", tally.failed
                )
                self._enforce_label(writer, prior, label, reason, tally, sensitivity)
            gone = [doc for doc_id, doc in existing.items() if doc_id not in seen]
            if gone:
                writer.delete_documents([doc.doc_id for doc in gone])
                tally.deleted.extend(doc.relative_path for doc in gone)
            changed = (
                fresh
                or writer.base_version is None
                or bool(tally.added or tally.updated or tally.deleted or tally.relabeled)
                or bool(tally.withdrawn)
                or _failure_set(writer, source_name) != failures_before
            )
            # Nothing changed: keep serving the published version instead of publishing a copy.
            raise_if_interrupted()
            version = writer.commit(validate) if changed else writer.base_version
        report = IngestReport.model_validate(
            {
                "index": writer.layout.name,
                "index_version": version,
                **{outcome: tuple(getattr(tally, outcome)) for outcome in IngestReport.OUTCOMES},
                "chunks_written": tally.chunks_written,
                "embeddings_computed": _computed(embedder) - computed_before,
                "seconds": round(time.perf_counter() - started, 3),
                "stages": parsing.stages(tally),
            }
        )
        log_event(logger, logging.INFO, "ingest.completed", **report.summary())
        return report

    def _final_label(
        self, base: ResolvedLabel, banner_level: str | None
    ) -> tuple[AccessLabel, str | None]:
        """A banner raises the level, never lowers it. Unlabelled stays fail-closed."""
        label = base.label
        if banner_level is None or not base.labelled:
            return label, banner_level
        level = self.settings.scheme.max(label.classification, banner_level)
        return AccessLabel(classification=level, groups=label.groups), banner_level

    def classify(
        self,
        prior: DocumentEntry | None,
        content_hash: str,
        base: ResolvedLabel,
        sensitivity: SensitivityPolicy | None,
        read: Callable[[], SensitivityReading] | None = None,
        tally: _Tally | None = None,
    ) -> tuple[ChangeKind, ResolvedLabel, str | None]:
        """What a refresh does with a document: the one decision of this pipeline and of the
        Airflow planner (``refresh.plan``). ``base``: its label from rules, sidecars and object
        labels; ``sensitivity``: the labels file's policy (None: the document carries no
        sensitivity label, e.g. pre-extracted text). Returns the change, and for the same
        content the label and sensitivity record it is to be served with: the sensitivity labels
        its content carried when indexed (the manifest's record) apply again, so an unchanged
        object is never downloaded to know its label. Without a record, ``read`` reads the
        content; without ``read`` either the document is a relabel (the pipeline reads it)."""
        change = classify_change(prior, content_hash, self.chunk_recipe, base.fingerprint)
        if prior is None or change not in ("unchanged", "relabeled") or sensitivity is None:
            return change, base, None
        stored = _stored_sensitivity(prior)
        # A reading that failed is taken again while the content can be read: a fixed reader
        # or a passing failure lifts the refusal (only refused documents pay for the read).
        if stored is not None and not (stored.reading.problems and read is not None):
            reading = stored.reading
        elif read is not None:
            reading = read()
        else:
            return "relabeled", base, None
        label, record = self._apply_sensitivity(
            base, prior.source_uri, prior.relative_path, reading, sensitivity, prior, tally
        )
        same = label.fingerprint == prior.label_fingerprint and record == prior.sensitivity
        return ("unchanged" if same else "relabeled"), label, record

    def _sensitivity(
        self,
        candidate: _Candidate,
        policy: SensitivityPolicy | None,
        prior: DocumentEntry | None,
        tally: _Tally,
        reading: SensitivityReading | None = None,
    ) -> tuple[_Candidate, str | None]:
        """The candidate with its sensitivity label applied (the one hook,
        ``labels.apply_sensitivity``) and the record to keep in the manifest. ``reading``: what
        the content was read to carry before (None: read it now)."""
        if policy is None or candidate.read_sensitivity is None:
            return candidate, None
        if reading is None:
            reading = candidate.read_sensitivity()
        resolved, record = self._apply_sensitivity(
            candidate.base_label,
            candidate.source_uri,
            candidate.relative_path,
            reading,
            policy,
            prior,
            tally,
        )
        return dataclasses.replace(candidate, base_label=resolved), record

    def _apply_sensitivity(
        self,
        base: ResolvedLabel,
        source_uri: str,
        relative_path: str,
        reading: SensitivityReading,
        policy: SensitivityPolicy,
        prior: DocumentEntry | None,
        tally: _Tally | None,
    ) -> tuple[ResolvedLabel, str]:
        """``tally`` None: only planning (no refusal reported, nothing logged)."""
        previous = _stored_sensitivity(prior) if prior is not None else None
        decision = decide(reading, policy, self.settings.scheme, previous)
        resolved = apply_sensitivity(
            base, decision, self.settings.scheme, frozenset(self.settings.default_groups)
        )
        if tally is None:
            return resolved, decision.record.model_dump_json()
        if decision.status == "refused":
            tally.label_refusals.append(
                DocumentFailure(
                    source_uri=source_uri,
                    reason=decision.reason or "",
                    relative_path=relative_path,
                )
            )
        if decision.retained or reading.notes:
            log_event(
                logger,
                logging.WARNING,
                "labels.sensitivity_retained" if decision.retained else "labels.sensitivity_note",
                source_uri=source_uri,
                notes=list(reading.notes),
            )
        return resolved, decision.record.model_dump_json()

    def _prepare(
        self,
        candidate: _Candidate,
        exists: bool,
        tally: _Tally,
        parsing: _Parsing,
        sensitivity: SensitivityPolicy | None = None,
        remembered: DocumentEntry | None = None,
    ) -> _Pending | None:
        """Parse (or take the parsed), label and chunk one document; any failure of these is
        that document's, recorded with its reason. ``remembered``: the document as indexed
        before (also across a rebuild), whose sensitivity label a new one may not lower."""

        def fail(reason: str) -> None:
            tally.failed.append(
                DocumentFailure(
                    source_uri=candidate.source_uri,
                    reason=reason,
                    relative_path=candidate.relative_path,
                )
            )

        try:
            parsed = parsing.take(candidate)
        except ParseWorkerError:
            raise  # parsing itself is broken: not one document's failure
        except Exception as exc:
            fail(_describe(exc))
            return None
        started = time.perf_counter()
        try:
            try:
                candidate, record = self._sensitivity(
                    candidate, sensitivity, remembered, tally, parsing.labels(candidate)
                )
            except Exception as exc:  # the label cannot be determined: not indexed
                fail(f"sensitivity labels cannot be read: {_describe(exc)}")
                return None
            try:
                marking = candidate.mark(parsed) if candidate.mark is not None else None
            except Exception as exc:  # any reader, any failure: the label cannot be determined
                fail(f"markings cannot be read: {_describe(exc)}")
                return None
            label, banner_level = self._final_label(
                candidate.base_label, marking.level if marking else None
            )
            drafts = self.chunk(parsed, candidate.file_name)
        except Exception as exc:
            fail(f"cannot label or chunk: {_describe(exc)}")
            return None
        finally:
            tally.chunk_s += time.perf_counter() - started
        if not drafts:
            fail("no text to index")
            return None
        return _Pending(
            candidate=candidate,
            parsed=parsed,
            label=label,
            labelled=candidate.base_label.labelled,
            banner_level=banner_level,
            drafts=drafts,
            updated=exists,
            sensitivity=record,
        )

    def _embed(self, pending: list[_Pending], tally: _Tally) -> Matrix:
        texts = [draft.embedding_text for item in pending for draft in item.drafts]
        started = time.perf_counter()
        try:
            vectors = self.embedder.embed_documents(texts)
        except NonFiniteVectorsError as exc:
            # A model defect, not a bad file: the run stops. The operator is told which
            # documents set it off (each embedded alone to find out) and what to change.
            culprits = [item.candidate.source_uri for item in pending if not self._finite(item)]
            named = ", ".join(culprits[:5]) + (" …" if len(culprits) > 5 else "")
            raise NonFiniteVectorsError(
                f"{exc}; from the text of {named or 'this batch'}: use another "
                "CITEWELL_EMBEDDING_BACKEND (e.g. torch) or move the document out of the source"
            ) from exc
        tally.embed_s += time.perf_counter() - started
        return vectors

    def _finite(self, item: _Pending) -> bool:
        try:
            self.embedder.embed_documents([draft.embedding_text for draft in item.drafts])
        except NonFiniteVectorsError:
            return False
        return True

    def _write(
        self,
        writer: IndexWriter,
        source_name: str,
        pending: list[_Pending],
        vectors: Matrix,
        tally: _Tally,
    ) -> None:
        if not pending:
            return
        started = time.perf_counter()
        tally.chunks_embedded += sum(len(item.drafts) for item in pending)
        tally.progress.update("embed", tally.chunks_embedded, tally.chunks_queued)
        offset = 0
        now = datetime.now(UTC)
        for item in pending:
            candidate = item.candidate
            chunks = [self._chunk(item, draft, source_name) for draft in item.drafts]
            block = vectors[offset : offset + len(chunks)]
            offset += len(chunks)
            writer.put_document(
                DocumentEntry(
                    doc_id=candidate.doc_id,
                    source=source_name,
                    source_uri=candidate.source_uri,
                    relative_path=candidate.relative_path,
                    title=item.parsed.title,
                    doc_type=candidate.doc_type,
                    content_hash=candidate.content_hash,
                    label_fingerprint=candidate.base_label.fingerprint,
                    classification=item.label.classification,
                    classification_rank=self.settings.scheme.rank(item.label.classification),
                    groups=tuple(sorted(item.label.groups)),
                    labelled=item.labelled,
                    banner_level=item.banner_level,
                    chunk_ids=tuple(chunk.chunk_id for chunk in chunks),
                    modified_at=candidate.modified_at,
                    refreshed_at=now,
                    chunk_recipe=self.chunk_recipe,
                    sensitivity=item.sensitivity,
                ),
                chunks,
                block,
            )
            tally.chunks_written += len(chunks)
            tally.progress.update("write", tally.chunks_written, tally.chunks_queued)
            (tally.updated if item.updated else tally.added).append(candidate.relative_path)
            if not item.labelled:
                tally.unlabelled.append(candidate.relative_path)
        tally.write_s += time.perf_counter() - started

    def _chunk(self, item: _Pending, draft: ChunkDraft, source_name: str) -> Chunk:
        candidate = item.candidate
        return Chunk(
            chunk_id=chunk_id(candidate.doc_id, draft.chunk_index, draft.text),
            doc_id=candidate.doc_id,
            chunk_index=draft.chunk_index,
            text=draft.text,
            title=item.parsed.title,
            section=draft.section,
            context=draft.context,
            source=source_name,
            source_uri=candidate.source_uri,
            doc_type=candidate.doc_type,
            page=draft.page,
            char_start=draft.char_start,
            char_end=draft.char_end,
            classification=item.label.classification,
            classification_rank=self.settings.scheme.rank(item.label.classification),
            groups=tuple(sorted(item.label.groups)),
            modified_at=candidate.modified_at,
            document_date=item.parsed.document_date,
        )

    def _enforce_label(
        self,
        writer: IndexWriter,
        prior: DocumentEntry,
        base: ResolvedLabel | None,
        reason: str,
        tally: _Tally,
        sensitivity: SensitivityPolicy | None = None,
    ) -> None:
        """An indexed document that was not re-ingested this run keeps being served only under
        the label the current files give it, with the sensitivity label its indexed content
        carries: relabeled if that changed, withdrawn when it cannot be determined (``base``
        None)."""
        if base is None:
            writer.withdraw_document(
                prior.doc_id, source=prior.source, source_uri=prior.source_uri, reason=reason
            )
            tally.withdrawn.append(prior.relative_path)
            return
        record = prior.sensitivity
        stored = _stored_sensitivity(prior)
        if sensitivity is not None and stored is not None:
            base, record = self._apply_sensitivity(
                base,
                prior.source_uri,
                prior.relative_path,
                stored.reading,
                sensitivity,
                prior,
                tally,
            )
        if base.fingerprint != prior.label_fingerprint or record != prior.sensitivity:
            self._relabel(writer, prior, base, tally, record)

    def _relabel(
        self,
        writer: IndexWriter,
        prior: DocumentEntry,
        base: ResolvedLabel,
        tally: _Tally,
        sensitivity: str | None = None,
    ) -> None:
        label, _ = self._final_label(base, prior.banner_level)
        updated = writer.relabel_document(prior, label, base.labelled, base.fingerprint)
        if updated.sensitivity != sensitivity:
            writer.manifest.put(updated.model_copy(update={"sensitivity": sensitivity}))
        tally.relabeled.append(prior.relative_path)
        if not base.labelled:
            tally.unlabelled.append(prior.relative_path)


def _published_documents(writer: IndexWriter, source_name: str) -> dict[str, DocumentEntry]:
    """The published version's entries for a source (read-only), for a fresh build."""
    version = writer.layout.current_version()
    if version is None:
        return {}
    manifest = Manifest(writer.layout.version_dir(version) / "manifest.sqlite", read_only=True)
    try:
        return manifest.documents(source=source_name)
    finally:
        manifest.close()


def _named_for(candidate: _Candidate, parsed: ParsedDocument) -> ParsedDocument:
    """``parsed`` titled for ``candidate``: a document with no title of its own is named after
    the candidate's file, whatever file was parsed (a download, a namesake's cached parse)."""
    if not parsed.named_after_file or candidate.file_name is None:
        return parsed
    return parsed.model_copy(update={"title": name_title(candidate.file_name)})


def _stored_sensitivity(entry: DocumentEntry) -> SensitivityRecord | None:
    if entry.sensitivity is None:
        return None
    try:
        return SensitivityRecord.model_validate_json(entry.sensitivity)
    except ValueError:
        # A damaged record cannot prove the earlier label; treat it as unreadable metadata.
        return SensitivityRecord(
            reading=SensitivityReading(problems=("stored sensitivity record unreadable",))
        )


def _label_failure(exc: BaseException) -> str:
    return f"labels cannot be determined (withdrawn until fixed): {exc}"


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporaries of cache writers killed between writing and renaming (entries
    are read by their own names, so none is ever read as one)."""
    cutoff = time.time() - _STALE_TEMPORARY_S
    for stray in folder.glob("*.tmp"):
        with contextlib.suppress(OSError):  # another process's sweep may remove it first
            if stray.stat().st_mtime < cutoff:
                stray.unlink()


def _reporter(progress: bool | IngestProgress) -> IngestProgress:
    if isinstance(progress, bool):
        return TerminalProgress() if progress else NoProgress()
    return progress


def _failure_set(writer: IndexWriter, source_name: str) -> set[tuple[str, str]]:
    return {(f.source_uri, f.reason) for f in writer.manifest.failures() if f.source == source_name}


def _computed(embedder: Embedder) -> int:
    return int(getattr(embedder, "computed", 0))


def _label_fingerprint(label: AccessLabel) -> str:
    material = label.classification + "|" + ",".join(sorted(label.groups))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def _text_document(title: str, body: str, heading: str) -> ParsedDocument:
    elements: list[Element] = []
    if heading.strip() and body.startswith(heading):
        elements.append(Element(kind="title", text=heading, char_start=0, char_end=len(heading)))
        rest_start = len(heading) + 2
        if len(body) > rest_start:
            elements.append(
                Element(
                    kind="text",
                    text=body[rest_start:],
                    char_start=rest_start,
                    char_end=len(body),
                )
            )
    else:
        elements.append(Element(kind="text", text=body, char_start=0, char_end=len(body)))
    return ParsedDocument(title=title, doc_type="txt", text=body, elements=tuple(elements))
