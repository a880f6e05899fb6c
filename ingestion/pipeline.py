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
import functools
import hashlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from citewell.core.errors import CitewellError, ModelError, ParseError
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
from citewell.ingestion.labels import MARKING_RULES_VERSION, LabelRules, Marking
from citewell.ingestion.limits import ZipLimits
from citewell.ingestion.models import ChunkDraft, Element, ParsedDocument, ResolvedLabel, SourceItem
from citewell.ingestion.parsing import parse_document
from citewell.ingestion.sources import LocalFolderSource
from citewell.retrieval.embedding import bundled_model_path, local_model_dir
from citewell.retrieval.factory import build_embedder, embedding_model_id
from citewell.retrieval.index import IndexWriter
from citewell.retrieval.manifest import DocumentEntry
from citewell.retrieval.protocols import Embedder

logger = logging.getLogger(__name__)

_CHUNK_NAMESPACE = uuid.UUID("5b0e4a36-37a4-4d5e-9a54-2f1f2d1c8e11")
_EMBED_BATCH_CHUNKS = 256  # chunks buffered across documents before one embedding call
# Part of the parse cache key: bump when parsing output changes (e.g. how titles are chosen), so
# cached documents parsed the old way are not reused.
_PARSER_VERSION = 4  # 4: XLSX sheet headers/footers and PPTX master/layout text


class TextDocument(Frozen):
    """A pre-extracted document (e.g. a BEIR corpus record) with its access label."""

    doc_id: str
    title: str
    text: str
    label: AccessLabel
    modified_at: datetime | None = None
    document_date: datetime | None = None  # the date the document states about itself


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
    # Markings in the parsed document that can only raise the label (banners, ...); None: none.
    mark: Callable[[ParsedDocument], Marking | None] | None = None


@dataclass(frozen=True)
class _Unreadable:
    """A document whose content cannot be read now. ``label`` is its current label, enforced on
    the version already indexed (which keeps being served); None when the labels themselves
    cannot be determined, which withdraws it."""

    doc_id: str
    source_uri: str
    reason: str
    label: ResolvedLabel | None = None


@dataclass
class _Pending:
    candidate: _Candidate
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
    withdrawn: list[str] = field(default_factory=list)
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
                doc_id = document_id(item.source_uri)
                try:
                    base = source.labels_for(item, None)
                except (OSError, CitewellError) as exc:
                    # Labels cannot be determined: withdrawn until they can (fail closed).
                    yield _Unreadable(doc_id, item.source_uri, _label_failure(exc))
                    continue
                try:
                    data = source.read_bytes(item)
                except (OSError, CitewellError) as exc:
                    # Reported and skipped; an indexed version stays, under the current label.
                    yield _Unreadable(doc_id, item.source_uri, f"cannot read: {exc}", base)
                    continue

                content_hash = hashlib.sha256(data).hexdigest()

                def load(item: SourceItem = item, digest: str = content_hash) -> ParsedDocument:
                    return self._parse_cached(item, digest)

                def mark(parsed: ParsedDocument, path: Path = item.path) -> Marking | None:
                    return rules.strongest_marking(parsed, path)

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
                    mark=mark,
                )

        def current_label(entry: DocumentEntry) -> ResolvedLabel:
            # For a document refused at discovery (too large, now a symlink...): its indexed
            # version stays, but only under the label the current files give it.
            return rules.resolve(entry.relative_path, root / entry.relative_path)

        kept = {document_id(r.source_uri) for r in discovery.rejected}
        return self._run(
            index,
            name,
            candidates(),
            total=len(discovery.items),
            rejected=list(discovery.rejected),
            keep_doc_ids=kept,
            progress=progress,
            fresh=fresh,
            validate=validate,
            current_label=current_label,
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
        progress: bool,
        fresh: bool,
        validate: Callable[[IndexWriter], None] | None = None,
        current_label: Callable[[DocumentEntry], ResolvedLabel] | None = None,
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
                    tally.failed.append(
                        DocumentFailure(source_uri=candidate.source_uri, reason=candidate.reason)
                    )
                    writer.manifest.record_failure(
                        source_name, candidate.source_uri, candidate.reason
                    )
                    prior = existing.get(candidate.doc_id)
                    if prior is not None:
                        self._enforce_label(writer, prior, candidate.label, candidate.reason, tally)
                    continue
                prior = existing.get(candidate.doc_id)
                if (
                    prior is not None
                    and prior.content_hash == candidate.content_hash
                    # Chunked with another recipe (settings or code): chunk again, or the index
                    # silently keeps chunks made the old way.
                    and prior.chunk_recipe == recipe
                ):
                    if prior.label_fingerprint == candidate.base_label.fingerprint:
                        tally.unchanged.append(candidate.relative_path)
                        if not prior.labelled:
                            tally.unlabelled.append(candidate.relative_path)
                    else:
                        self._relabel(writer, prior, candidate.base_label, tally)
                    continue
                item = self._prepare(candidate, prior is not None, tally)
                if item is None:
                    reason = tally.failed[-1].reason
                    writer.manifest.record_failure(source_name, candidate.source_uri, reason)
                    if prior is not None:
                        # The old version stays (the new one failed), under the current label.
                        self._enforce_label(writer, prior, candidate.base_label, reason, tally)
                    continue
                pending.append(item)
                if sum(len(p.drafts) for p in pending) >= _EMBED_BATCH_CHUNKS:
                    self._write(writer, source_name, pending, tally)
                    pending = []
            self._write(writer, source_name, pending, tally)
            bar.close()
            for doc_id in sorted(keep_doc_ids):
                prior = existing.get(doc_id)
                if prior is None or current_label is None:
                    continue
                try:
                    label: ResolvedLabel | None = current_label(prior)
                    reason = "refused at discovery"
                except (OSError, CitewellError) as exc:
                    label, reason = None, _label_failure(exc)
                    tally.failed.append(DocumentFailure(source_uri=prior.source_uri, reason=reason))
                self._enforce_label(writer, prior, label, reason, tally)
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
            withdrawn=tuple(tally.withdrawn),
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
            withdrawn=len(report.withdrawn),
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

    def _prepare(self, candidate: _Candidate, exists: bool, tally: _Tally) -> _Pending | None:
        try:
            parsed = candidate.load()
        except ParseError as exc:
            tally.failed.append(DocumentFailure(source_uri=candidate.source_uri, reason=exc.reason))
            return None
        try:
            marking = candidate.mark(parsed) if candidate.mark is not None else None
        except Exception as exc:  # any reader, any failure: the label cannot be determined
            reason = f"markings cannot be read: {type(exc).__name__}: {str(exc)[:160]}"
            tally.failed.append(DocumentFailure(source_uri=candidate.source_uri, reason=reason))
            return None
        label, banner_level = self._final_label(
            candidate.base_label, marking.level if marking else None
        )
        drafts = self.chunk(parsed, candidate.file_name)
        if not drafts:
            tally.failed.append(
                DocumentFailure(source_uri=candidate.source_uri, reason="no text to index")
            )
            return None
        return _Pending(
            candidate=candidate,
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

    def _enforce_label(
        self,
        writer: IndexWriter,
        prior: DocumentEntry,
        base: ResolvedLabel | None,
        reason: str,
        tally: _Tally,
    ) -> None:
        """An indexed document that was not re-ingested this run keeps being served only under
        the label the current files give it: relabeled if that changed, withdrawn when it
        cannot be determined (``base`` None)."""
        if base is None:
            writer.withdraw_document(
                prior.doc_id, source=prior.source, source_uri=prior.source_uri, reason=reason
            )
            tally.withdrawn.append(prior.relative_path)
        elif base.fingerprint != prior.label_fingerprint:
            self._relabel(writer, prior, base, tally)

    def _relabel(
        self, writer: IndexWriter, prior: DocumentEntry, base: ResolvedLabel, tally: _Tally
    ) -> None:
        label, _ = self._final_label(base, prior.banner_level)
        rank = self.scheme.rank(label.classification)
        writer.vectors.relabel_document(prior.doc_id, label, rank)
        writer.lexical.relabel_document(prior.doc_id, label, rank)
        writer.manifest.put(
            prior.model_copy(
                update={
                    "label_fingerprint": base.fingerprint,
                    "classification": label.classification,
                    "classification_rank": rank,
                    "groups": tuple(sorted(label.groups)),
                    "labelled": base.labelled,
                    "refreshed_at": datetime.now(UTC),
                }
            )
        )
        tally.relabeled.append(prior.relative_path)
        if not base.labelled:
            tally.unlabelled.append(prior.relative_path)


def _label_failure(exc: BaseException) -> str:
    return f"labels cannot be determined (withdrawn until fixed): {exc}"


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
