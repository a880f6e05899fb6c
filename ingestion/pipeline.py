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
import dataclasses
import functools
import hashlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from citewell.core.errors import (
    CitewellError,
    EmptySourceError,
    InputRejectedError,
    ModelError,
    ParseError,
)
from citewell.core.logging import log_event
from citewell.core.models import (
    AccessLabel,
    Chunk,
    ClassificationScheme,
    DocumentFailure,
    Frozen,
    IngestReport,
)
from citewell.core.settings import Settings
from citewell.ingestion.chunking import Tokenizer, chunk_document, chunk_recipe, embedding_tokenizer
from citewell.ingestion.labels import LabelRules, apply_sensitivity, detect_banner
from citewell.ingestion.limits import ZipLimits
from citewell.ingestion.models import ChunkDraft, Element, ParsedDocument, ResolvedLabel, SourceItem
from citewell.ingestion.parsing import parse_document
from citewell.ingestion.sensitivity import (
    SensitivityPolicy,
    SensitivityReading,
    SensitivityRecord,
    decide,
    read_sensitivity,
)
from citewell.ingestion.sources import LocalFolderSource, S3Source
from citewell.retrieval.embedding import bundled_model_path, local_model_dir
from citewell.retrieval.factory import build_embedder, embedding_model_id
from citewell.retrieval.index import IndexWriter
from citewell.retrieval.manifest import DocumentEntry, Manifest
from citewell.retrieval.protocols import Embedder

logger = logging.getLogger(__name__)

_CHUNK_NAMESPACE = uuid.UUID("5b0e4a36-37a4-4d5e-9a54-2f1f2d1c8e11")
_EMBED_BATCH_CHUNKS = 256  # chunks buffered across documents before one embedding call
# Part of the parse cache key: bump when parsing output changes (e.g. how titles are chosen), so
# cached documents parsed the old way are not reused.
_PARSER_VERSION = 3  # 3: documents carry the date they state (ingestion/dates.py)
_SENSITIVITY_VERSION = 1  # part of the cache key of sensitivity readings of objects


class TextDocument(Frozen):
    """A pre-extracted document (e.g. a BEIR corpus record) with its access label."""

    doc_id: str
    title: str
    text: str
    label: AccessLabel
    modified_at: datetime | None = None
    document_date: datetime | None = None  # the date the document states about itself


def object_content_hash(item: SourceItem) -> str:
    """What stands for an object's content without downloading it: its ETag (an MD5 or a
    multipart digest; it changes whenever the bytes do) and size, from the listing."""
    material = f"s3-etag:{item.etag}|{item.size}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


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
    load: Callable[[], ParsedDocument]
    file_name: str | None = None  # the file's stem, for chunk headers; None without a file
    # The Purview labels the content carries (ingestion/sensitivity.py); None: not a file.
    read_sensitivity: Callable[[], SensitivityReading] | None = None


@dataclass(frozen=True)
class _Unreadable:
    doc_id: str
    source_uri: str
    reason: str


@dataclass
class _Pending:
    candidate: _Candidate  # its base_label has the sensitivity label applied
    sensitivity: str | None  # SensitivityRecord JSON for the manifest
    parsed: ParsedDocument
    label: AccessLabel
    labelled: bool
    banner_level: str | None
    drafts: list[ChunkDraft]
    updated: bool


@dataclass
class _Tally:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    relabeled: list[str] = field(default_factory=list)
    failed: list[DocumentFailure] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    label_refusals: list[DocumentFailure] = field(default_factory=list)
    chunks_written: int = 0


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
        """Fingerprint of the settings that decide chunk texts and headers; an index chunked
        with another recipe is re-chunked in full on its next refresh."""
        return chunk_recipe(
            self.settings.chunk_size_tokens,
            self.settings.chunk_overlap_tokens,
            self.settings.chunk_context,
            self.settings.embedding_max_seq_length,
        )

    def _parse(self, item: SourceItem) -> ParsedDocument:
        limits = ZipLimits(
            max_uncompressed_bytes=self.settings.max_uncompressed_bytes,
            max_compression_ratio=self.settings.max_compression_ratio,
            max_entries=self.settings.max_zip_entries,
        )
        return parse_document(item.path, item.doc_type, zip_limits=limits)

    def _parse_cached(self, item: SourceItem, content_hash: str) -> ParsedDocument:
        if self.parse_cache_dir is None:
            return self._parse(item)
        name = f"{content_hash}.{item.doc_type}.p{_PARSER_VERSION}.json"
        cached = self.parse_cache_dir / name
        if cached.exists():
            try:
                return ParsedDocument.model_validate_json(cached.read_text(encoding="utf-8"))
            except ValueError:
                cached.unlink(missing_ok=True)
        parsed = self._parse(item)
        self.parse_cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(parsed.model_dump_json(), encoding="utf-8")
        os.replace(tmp, cached)
        return parsed

    def prepare(self, path: Path, relative_paths: Iterable[str]) -> int:
        """Parse, chunk and embed the given files of a folder into the caches, without writing
        the index (work for parallel workers before one ``ingest_folder`` publishes). Returns
        the number of embeddings computed; parse failures are left for the publishing run."""
        root = path.resolve()
        computed_before = _computed(self.embedder)
        for relative in relative_paths:
            file_path = (root / relative).resolve()
            if not file_path.is_relative_to(root) or not file_path.is_file():
                continue
            if file_path.stat().st_size > self.settings.max_file_bytes:
                continue  # the publishing run reports it as too large
            data = file_path.read_bytes()
            doc_type = file_path.suffix.lower().lstrip(".")
            item = SourceItem(
                source="prepare",
                source_uri=file_path.as_uri(),
                relative_path=relative,
                path=file_path,
                size=len(data),
                modified_at=datetime.fromtimestamp(file_path.stat().st_mtime, UTC),
                doc_type=doc_type,
            )
            try:
                parsed = self._parse_cached(item, hashlib.sha256(data).hexdigest())
            except ParseError:
                continue
            drafts = self.chunk(parsed, file_path.stem)
            if drafts:
                self.embedder.embed_documents([d.embedding_text for d in drafts])
        return _computed(self.embedder) - computed_before

    @property
    def scheme(self) -> ClassificationScheme:
        return self.settings.scheme

    # --- entry points ---------------------------------------------------------------------
    def ingest_folder(
        self,
        path: Path,
        index: str | None = None,
        source_name: str | None = None,
        progress: bool = False,
        fresh: bool = False,
        validate: Callable[[IndexWriter], None] | None = None,
    ) -> IngestReport:
        """Refresh ``index`` from a local folder (recursive) with its labels files.

        ``fresh`` rebuilds into an empty version; ``validate`` may raise to refuse publishing
        (the serving version then stays untouched)."""
        root = path.resolve()
        name = source_name or root.name
        rules = LabelRules.load(root, self.scheme)
        source = LocalFolderSource(
            root, name=name, max_file_bytes=self.settings.max_file_bytes, labels=rules
        )
        discovery = source.discover()

        def candidates() -> Iterator[_Candidate | _Unreadable]:
            for item in discovery.items:
                try:
                    data = source.read_bytes(item)
                    base = source.labels_for(item, None)
                except (OSError, CitewellError) as exc:
                    # Reported and skipped; a previously indexed version stays as it was.
                    yield _Unreadable(document_id(item.source_uri), item.source_uri, str(exc))
                    continue

                content_hash = hashlib.sha256(data).hexdigest()

                def load(item: SourceItem = item, digest: str = content_hash) -> ParsedDocument:
                    return self._parse_cached(item, digest)

                def sensitivity(item: SourceItem = item) -> SensitivityReading:
                    return read_sensitivity(item.path, item.doc_type)

                yield _Candidate(
                    doc_id=document_id(item.source_uri),
                    source_uri=item.source_uri,
                    relative_path=item.relative_path,
                    doc_type=item.doc_type,
                    content_hash=content_hash,
                    base_label=base,
                    modified_at=item.modified_at,
                    load=load,
                    file_name=Path(item.relative_path).stem,
                    read_sensitivity=sensitivity,
                )

        kept = {document_id(r.source_uri) for r in discovery.rejected}
        return self._run(
            index,
            name,
            candidates(),
            total=len(discovery.items),
            rejected=list(discovery.rejected),
            keep_doc_ids=kept,
            detect_banners=True,
            progress=progress,
            fresh=fresh,
            validate=validate,
            sensitivity=rules.sensitivity,
        )

    def _load_object(
        self, source: S3Source, item: SourceItem, content_hash: str
    ) -> tuple[ParsedDocument, SensitivityReading]:
        """Parse an object and read its sensitivity labels, from the caches when both are there
        (an Airflow ``process`` task did the work), else from one download to a temporary
        file that is removed afterwards."""
        cached_reading = self._cached_reading(content_hash)
        if cached_reading is not None and self.parse_cache_dir is not None:
            cached = (
                self.parse_cache_dir / f"{content_hash}.{item.doc_type}.p{_PARSER_VERSION}.json"
            )
            if cached.exists():
                return self._parse_cached(item, content_hash), cached_reading
        with tempfile.TemporaryDirectory(prefix="citewell-s3-") as folder:
            local = Path(folder) / f"object.{item.doc_type}"
            try:
                source.download(item, local)
            except InputRejectedError as exc:
                raise ParseError(f"cannot read: {exc}") from exc
            reading = read_sensitivity(local, item.doc_type)
            self._cache_reading(content_hash, reading)
            parsed = self._parse_cached(item.model_copy(update={"path": local}), content_hash)
        return parsed, reading

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
        self.parse_cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.parse_cache_dir / f"{content_hash}.mip{_SENSITIVITY_VERSION}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(reading.model_dump_json(), encoding="utf-8")
        os.replace(tmp, path)

    def prepare_objects(self, source: S3Source, relative_paths: Iterable[str]) -> int:
        """Download, parse, chunk and embed the given objects into the caches without writing
        the index (the object-store counterpart of :meth:`prepare`)."""
        computed_before = _computed(self.embedder)
        for relative in relative_paths:
            try:
                # HEAD per object: a batch never lists the whole prefix again.
                item = source.item_for(relative)
                parsed, _ = self._load_object(source, item, object_content_hash(item))
            except (ParseError, InputRejectedError):
                continue  # the publishing run reports it
            drafts = self.chunk(parsed, PurePosixPath(item.relative_path).stem)
            if drafts:
                self.embedder.embed_documents([d.embedding_text for d in drafts])
        return _computed(self.embedder) - computed_before

    def ingest_objects(
        self,
        source: S3Source,
        index: str | None = None,
        progress: bool = False,
        fresh: bool = False,
        validate: Callable[[IndexWriter], None] | None = None,
        allow_empty: bool = False,
    ) -> IngestReport:
        """Refresh ``index`` from an object store prefix. The listing (ETag and size) decides
        what is unchanged: those objects are neither downloaded nor parsed nor embedded. A
        listing that fails raises before anything is written; an empty listing of a source
        that had documents is refused unless ``allow_empty``."""
        discovery = source.discover()  # raises SourceUnavailableError: nothing withdrawn
        name = source.name

        def candidates() -> Iterator[_Candidate | _Unreadable]:
            for item in discovery.items:
                doc_id = document_id(item.source_uri)
                try:
                    base = source.labels_for(item, None)
                except (OSError, CitewellError) as exc:
                    yield _Unreadable(doc_id, item.source_uri, str(exc))
                    continue
                content_hash = object_content_hash(item)
                loaded: dict[str, SensitivityReading] = {}

                def load(
                    item: SourceItem = item,
                    digest: str = content_hash,
                    loaded: dict[str, SensitivityReading] = loaded,
                ) -> ParsedDocument:
                    parsed, loaded["reading"] = self._load_object(source, item, digest)
                    return parsed

                def sensitivity(
                    item: SourceItem = item,
                    digest: str = content_hash,
                    loaded: dict[str, SensitivityReading] = loaded,
                ) -> SensitivityReading:
                    if "reading" not in loaded:
                        # Only for an unchanged object indexed before labels were read.
                        try:
                            _, loaded["reading"] = self._load_object(source, item, digest)
                        except ParseError as exc:
                            reason = f"sensitivity labels unreadable: {exc.reason}"
                            return SensitivityReading(problems=(reason,))
                    return loaded["reading"]

                yield _Candidate(
                    doc_id=doc_id,
                    source_uri=item.source_uri,
                    relative_path=item.relative_path,
                    doc_type=item.doc_type,
                    content_hash=content_hash,
                    base_label=base,
                    modified_at=item.modified_at,
                    load=load,
                    file_name=PurePosixPath(item.relative_path).stem,
                    read_sensitivity=sensitivity,
                )

        kept = {document_id(r.source_uri) for r in discovery.rejected}
        return self._run(
            index,
            name,
            candidates(),
            total=len(discovery.items),
            rejected=list(discovery.rejected),
            keep_doc_ids=kept,
            detect_banners=True,
            progress=progress,
            fresh=fresh,
            validate=validate,
            sensitivity=source.labels.sensitivity,
            allow_empty=allow_empty,
        )

    def ingest_texts(
        self,
        docs: Iterable[TextDocument],
        index: str,
        source_name: str,
        progress: bool = False,
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
            detect_banners=False,
            progress=progress,
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
        detect_banners: bool,
        progress: bool,
        fresh: bool,
        validate: Callable[[IndexWriter], None] | None = None,
        sensitivity: SensitivityPolicy | None = None,
        allow_empty: bool = True,
    ) -> IngestReport:
        started = time.perf_counter()
        embedder = self.embedder
        computed_before = _computed(embedder)
        tally = _Tally(failed=list(rejected))
        with IndexWriter(
            self.settings,
            index,
            embedding_model=embedding_model_id(self.settings),
            embedding_key=embedder.cache_key,
            dimension=embedder.dimension,
            fresh=fresh,
        ) as writer:
            existing = writer.manifest.documents(source=source_name)
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
            pending: list[_Pending] = []
            bar = tqdm(
                total=total,
                desc=f"ingest {source_name}",
                unit="doc",
                disable=not (progress and sys.stderr.isatty()),
            )
            for candidate in candidates:
                bar.update(1)
                seen.add(candidate.doc_id)
                if isinstance(candidate, _Unreadable):
                    reason = f"cannot read: {candidate.reason}"
                    tally.failed.append(
                        DocumentFailure(source_uri=candidate.source_uri, reason=reason)
                    )
                    writer.manifest.record_failure(source_name, candidate.source_uri, reason)
                    continue
                prior = existing.get(candidate.doc_id)
                if (
                    prior is not None
                    and prior.content_hash == candidate.content_hash
                    # Chunked with another recipe (settings or code): chunk again, or the index
                    # silently keeps chunks made the old way.
                    and prior.chunk_recipe == recipe
                ):
                    # Same content, same labels it carries: what was read then still holds
                    # (an unchanged object is never downloaded again to know its label).
                    stored = _stored_sensitivity(prior)
                    reading = stored.reading if stored is not None else None
                    candidate, record = self._sensitivity(
                        candidate, sensitivity, prior, tally, reading
                    )
                    if (
                        prior.label_fingerprint == candidate.base_label.fingerprint
                        and record == prior.sensitivity
                    ):
                        tally.unchanged.append(candidate.relative_path)
                        if not prior.labelled:
                            tally.unlabelled.append(candidate.relative_path)
                    else:
                        self._relabel(writer, prior, candidate, tally, record)
                    continue
                try:
                    parsed = candidate.load()
                except ParseError as exc:
                    tally.failed.append(
                        DocumentFailure(source_uri=candidate.source_uri, reason=exc.reason)
                    )
                    writer.manifest.record_failure(source_name, candidate.source_uri, exc.reason)
                    continue
                candidate, record = self._sensitivity(
                    candidate, sensitivity, remembered.get(candidate.doc_id), tally
                )
                item = self._prepare(
                    candidate, parsed, record, prior is not None, detect_banners, tally
                )
                if item is None:
                    writer.manifest.record_failure(
                        source_name, candidate.source_uri, tally.failed[-1].reason
                    )
                    continue
                pending.append(item)
                if sum(len(p.drafts) for p in pending) >= _EMBED_BATCH_CHUNKS:
                    self._write(writer, source_name, pending, tally)
                    pending = []
            self._write(writer, source_name, pending, tally)
            bar.close()
            if not allow_empty and existing and total == 0 and not rejected:
                # An empty listing of a source that had documents is far more often a wrong
                # prefix, a permissions change or a broken store than a real deletion.
                raise EmptySourceError(
                    f"source {source_name!r} listed no documents but the index holds "
                    f"{len(existing)}; refusing to withdraw them all (allow an empty source "
                    "to do so on purpose)"
                )
            gone = [doc for doc_id, doc in existing.items() if doc_id not in seen]
            if gone:
                ids = [doc.doc_id for doc in gone]
                writer.vectors.delete_documents(ids)
                writer.lexical.delete_documents(ids)
                writer.manifest.delete(ids)
                tally.deleted.extend(doc.relative_path for doc in gone)
            changed = (
                fresh
                or writer.base_version is None
                or bool(tally.added or tally.updated or tally.deleted or tally.relabeled)
                or _failure_set(writer, source_name) != failures_before
            )
            # Nothing changed: keep serving the published version instead of publishing a copy.
            version = writer.commit(validate) if changed else writer.base_version
        report = IngestReport(
            index=writer.layout.name,
            index_version=version,
            added=tuple(tally.added),
            updated=tuple(tally.updated),
            unchanged=tuple(tally.unchanged),
            deleted=tuple(tally.deleted),
            relabeled=tuple(tally.relabeled),
            failed=tuple(tally.failed),
            unlabelled=tuple(tally.unlabelled),
            label_refusals=tuple(tally.label_refusals),
            chunks_written=tally.chunks_written,
            embeddings_computed=_computed(embedder) - computed_before,
            seconds=round(time.perf_counter() - started, 3),
        )
        log_event(
            logger,
            logging.INFO,
            "ingest.completed",
            index=report.index,
            version=version,
            added=len(report.added),
            updated=len(report.updated),
            unchanged=len(report.unchanged),
            deleted=len(report.deleted),
            relabeled=len(report.relabeled),
            failed=len(report.failed),
            chunks_written=report.chunks_written,
            embeddings_computed=report.embeddings_computed,
            seconds=report.seconds,
        )
        return report

    def _final_label(
        self, base: ResolvedLabel, banner_level: str | None
    ) -> tuple[AccessLabel, str | None]:
        """A banner raises the level, never lowers it. Unlabelled stays fail-closed."""
        label = base.label
        if banner_level is None or not base.labelled:
            return label, banner_level
        level = self.scheme.max(label.classification, banner_level)
        return AccessLabel(classification=level, groups=label.groups), banner_level

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
        previous = _stored_sensitivity(prior) if prior is not None else None
        decision = decide(reading, policy, self.scheme, previous)
        resolved = apply_sensitivity(
            candidate.base_label, decision, self.scheme, frozenset(self.settings.default_groups)
        )
        if decision.status == "refused":
            tally.label_refusals.append(
                DocumentFailure(source_uri=candidate.source_uri, reason=decision.reason or "")
            )
        if decision.retained or reading.notes:
            log_event(
                logger,
                logging.WARNING,
                "labels.sensitivity_retained" if decision.retained else "labels.sensitivity_note",
                source_uri=candidate.source_uri,
                notes=list(reading.notes),
            )
        return dataclasses.replace(
            candidate, base_label=resolved
        ), decision.record.model_dump_json()

    def _prepare(
        self,
        candidate: _Candidate,
        parsed: ParsedDocument,
        record: str | None,
        exists: bool,
        detect_banners: bool,
        tally: _Tally,
    ) -> _Pending | None:
        banner = detect_banner(parsed.text, self.scheme) if detect_banners else None
        label, banner_level = self._final_label(candidate.base_label, banner)
        drafts = self.chunk(parsed, candidate.file_name)
        if not drafts:
            tally.failed.append(
                DocumentFailure(source_uri=candidate.source_uri, reason="no text to index")
            )
            return None
        return _Pending(
            candidate=candidate,
            sensitivity=record,
            parsed=parsed,
            label=label,
            labelled=candidate.base_label.labelled,
            banner_level=banner_level,
            drafts=drafts,
            updated=exists,
        )

    def _write(
        self, writer: IndexWriter, source_name: str, pending: list[_Pending], tally: _Tally
    ) -> None:
        if not pending:
            return
        texts = [draft.embedding_text for item in pending for draft in item.drafts]
        vectors = self.embedder.embed_documents(texts)
        offset = 0
        now = datetime.now(UTC)
        for item in pending:
            candidate = item.candidate
            chunks = [self._chunk(item, draft, source_name) for draft in item.drafts]
            block = vectors[offset : offset + len(chunks)]
            offset += len(chunks)
            new_ids = {chunk.chunk_id for chunk in chunks}
            # Upsert first, then delete stale chunks: a live remote collection never lacks
            # the document in between.
            writer.vectors.upsert(chunks, block)
            stale = writer.vectors.chunk_ids_by_document([candidate.doc_id]).get(
                candidate.doc_id, []
            )
            stale_ids = [cid for cid in stale if cid not in new_ids]
            if stale_ids:
                writer.vectors.delete_chunks(stale_ids)
            writer.lexical.delete_documents([candidate.doc_id])
            writer.lexical.add(chunks)  # indexes context + text, as embedded
            writer.manifest.put(
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
                    classification_rank=self.scheme.rank(item.label.classification),
                    groups=tuple(sorted(item.label.groups)),
                    labelled=item.labelled,
                    banner_level=item.banner_level,
                    chunk_ids=tuple(chunk.chunk_id for chunk in chunks),
                    modified_at=candidate.modified_at,
                    refreshed_at=now,
                    chunk_recipe=self.chunk_recipe,
                    sensitivity=item.sensitivity,
                )
            )
            tally.chunks_written += len(chunks)
            (tally.updated if item.updated else tally.added).append(candidate.relative_path)
            if not item.labelled:
                tally.unlabelled.append(candidate.relative_path)

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
            classification_rank=self.scheme.rank(item.label.classification),
            groups=tuple(sorted(item.label.groups)),
            modified_at=candidate.modified_at,
            document_date=item.parsed.document_date,
        )

    def _relabel(
        self,
        writer: IndexWriter,
        prior: DocumentEntry,
        candidate: _Candidate,
        tally: _Tally,
        sensitivity: str | None = None,
    ) -> None:
        label, _ = self._final_label(candidate.base_label, prior.banner_level)
        rank = self.scheme.rank(label.classification)
        writer.vectors.relabel_document(prior.doc_id, label, rank)
        writer.lexical.relabel_document(prior.doc_id, label, rank)
        writer.manifest.put(
            prior.model_copy(
                update={
                    "label_fingerprint": candidate.base_label.fingerprint,
                    "classification": label.classification,
                    "classification_rank": rank,
                    "groups": tuple(sorted(label.groups)),
                    "labelled": candidate.base_label.labelled,
                    "refreshed_at": datetime.now(UTC),
                    "sensitivity": sensitivity,
                }
            )
        )
        tally.relabeled.append(candidate.relative_path)
        if not candidate.base_label.labelled:
            tally.unlabelled.append(candidate.relative_path)


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
