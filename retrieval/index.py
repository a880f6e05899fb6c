"""Index versions on disk: copy-on-write staging, atomic publish, rollback.

Layout under ``<data_dir>/indexes/<name>/``::

    CURRENT                 the published version's name, replaced atomically
    versions/v000007/       a published version (never modified once published)
        vectors/            embedded Qdrant shard (qdrant-edge); absent for a remote Qdrant
        bm25/               the BM25 index
        manifest.sqlite     documents, labels, chunk ids, parse failures
        meta.json           IndexMeta, with every file's size and digest (sealed)
    staging/                versions being written; discarded if the writer dies
    rerankers/              locally trained rerankers and the gate decision
    .write.lock             one writer at a time

A refresh copies the published version into staging, applies its changes there and publishes by
renaming the directory and replacing CURRENT. A process killed at any point leaves the published
version untouched, so re-running converges to the state of one clean run. Readers (the API) open
published versions only and switch by re-reading CURRENT.

qdrant-edge lets one process at a time open a shard (there is no read-only mode), so a reader
that finds a version held by another process opens a private copy (see ``open_version``).

Integrity: publishing records every file of the version (size and content digest, see
``retrieval/integrity.py``) and the point count in ``meta.json``, which carries a seal over its
own fields. Opening, switching to (``open_version``, ``rollback``) or building on a version
checks all of it and refuses a version that differs (``IndexIntegrityError``, logged as
``index.version_refused``); ``verify_version`` is the same check on demand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from citewell.core.errors import (
    CitewellError,
    IndexIntegrityError,
    IndexLockedError,
    IndexNotFoundError,
    StoreUnavailableError,
    UnknownClassificationError,
)
from citewell.core.logging import log_event
from citewell.core.models import AccessLabel, Chunk, ClassificationScheme, Frozen
from citewell.core.settings import Settings
from citewell.retrieval.durable import copy_tree, fsync_dir, write_atomic, write_synced
from citewell.retrieval.embedding import backend_of_key
from citewell.retrieval.integrity import DIGEST_ALGORITHM, VersionFile, check_files, record_files
from citewell.retrieval.lexical.bm25 import BM25Index
from citewell.retrieval.lexical.tokenize import Tokenizer
from citewell.retrieval.manifest import DocumentEntry, Manifest
from citewell.retrieval.protocols import Matrix, VectorStore
from citewell.retrieval.stores.edge import EdgeVectorStore

if TYPE_CHECKING:
    from citewell.retrieval.stores.qdrant import QdrantVectorStore

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
_NOT_RECORDED = frozenset({META_FILE})  # the record itself; sealed instead
VectorBackend = Literal["edge", "qdrant"]


# IndexMeta fields added after versions were first sealed; left out of the seal while None.
_LATER_FIELDS = ("embedding_backend", "replaces")


class IndexMeta(Frozen):
    index: str
    version: str
    created_at: datetime
    embedding_model: str
    embedding_key: str
    # The inference backend (with its recipe tag) that made every vector in this version;
    # documents and queries must be embedded by the same one. None: written before the field
    # existed (``vectors_backend`` then reads it from the embedding key).
    embedding_backend: str | None = None
    dimension: int
    vector_backend: VectorBackend
    collection: str | None = None  # remote Qdrant collection holding this version's vectors
    documents: int = 0
    chunks: int = 0
    bm25_k1: float
    bm25_b: float
    bm25_stemming: bool = True
    # Integrity records (None in versions published before they existed: those are checked by
    # their counts only, and say so when opened).
    points: int | None = None  # vectors in the store at publish
    digest_algorithm: str | None = None
    files: tuple[VersionFile, ...] | None = None
    # The version CURRENT named when this one was published: what a plain rollback returns to
    # (after a rollback and a refresh, not the newest older version). None: the first version,
    # or one published before the field existed.
    replaces: str | None = None
    seal: str | None = None  # sha256 over every other field, so an edit of meta.json shows

    def sealed(self) -> IndexMeta:
        return self.model_copy(update={"seal": self._seal_value()})

    def seal_problem(self) -> str | None:
        if self.seal is None:
            return None if self.files is None else "meta.json: seal missing"
        if self.seal != self._seal_value():
            return "meta.json: fields differ from its seal"
        return None

    def _seal_value(self) -> str:
        # A version sealed before these fields existed reads them back as None: leave them
        # out, as that code did, or every such version would read as tampered with.
        unset = {name for name in _LATER_FIELDS if getattr(self, name) is None}
        material = self.model_dump_json(exclude={"seal"} | unset)
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    @property
    def vectors_backend(self) -> str:
        """The backend that made this version's vectors: the recorded one; for a version
        written before the record, the one its embedding key names, else torch (the only
        default there was)."""
        if self.embedding_backend is not None:
            return self.embedding_backend
        named = backend_of_key(self.embedding_key)
        return "torch" if named == self.embedding_key else named


def check_embedding_backend(index: str, index_backend: str, embedder_backend: str) -> None:
    """Refuse to mix vectors of two inference backends in one index (their spaces differ by
    more than the ranking tolerates: int8 vs fp32 cosine ~0.998, and a recipe change more)."""
    if index_backend != embedder_backend:
        raise StoreUnavailableError(
            f"index {index!r} was embedded with backend {index_backend!r}, but this process "
            f"embeds with {embedder_backend!r}; documents and queries must use one backend. "
            f"Set CITEWELL_EMBEDDING_BACKEND={index_backend.split(':')[0]} to use this index, "
            "or rebuild it with `citewell ingest --fresh`"
        )


class IndexLayout:
    """Paths of one named index."""

    def __init__(self, settings: Settings, index: str | None = None) -> None:
        self.name = index or settings.index
        self.root = settings.index_root / self.name
        self.current_file = self.root / "CURRENT"
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.rerankers_dir = self.root / "rerankers"
        self.lock_file = self.root / ".write.lock"
        # Every version CURRENT has named. A writer killed between renaming its version into
        # place and switching CURRENT leaves a whole version nobody published: rollback must
        # never serve it, and garbage collection must not keep it in place of a served one.
        self.published_file = self.root / "PUBLISHED"

    def current_version(self) -> str | None:
        try:
            name = self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:  # e.g. written by a shell that writes UTF-16
            raise IndexIntegrityError(None, ["CURRENT is not UTF-8 text"]) from exc
        return name or None

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / version

    def versions(self) -> list[str]:
        if not self.versions_dir.exists():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.name.startswith("v"))

    def read_meta(self, version: str) -> IndexMeta:
        path = self.version_dir(version) / META_FILE
        try:
            return IndexMeta.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreUnavailableError(
                f"index {self.name!r} version {version} is unreadable"
            ) from exc

    def published_versions(self) -> set[str]:
        """The versions that have been served (CURRENT's included)."""
        current = self.current_version()
        return self._recorded_versions(current) | ({current} if current else set())

    def _recorded_versions(self, current: str | None) -> set[str]:
        try:
            return set(self.published_file.read_text(encoding="utf-8").split())
        except FileNotFoundError:
            # An index written before the record existed: every version it holds was served
            # as far as anyone can tell; one never published yet holds none.
            return set(self.versions()) if current else set()
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexIntegrityError(None, ["PUBLISHED is unreadable"]) from exc

    def record_published(self, versions: set[str]) -> None:
        """Add ``versions`` to the record (atomically; the caller holds the write lock)."""
        recorded = self._recorded_versions(self.current_version())
        if versions <= recorded and self.published_file.exists():
            return
        # Versions garbage collection has removed leave the record too, so it stays small.
        kept = (recorded | versions) & (set(self.versions()) | versions)
        payload = "".join(f"{v}\n" for v in sorted(kept))
        write_atomic(self.published_file, payload.encode("utf-8"))

    def sweep_temporary_files(self) -> None:
        """Remove what ``write_atomic`` left beside CURRENT and PUBLISHED when a process was
        killed mid-write (the caller holds the write lock, so none is being written)."""
        for name in (self.current_file.name, self.published_file.name):
            for stray in self.root.glob(f".{name}.*.tmp"):
                stray.unlink(missing_ok=True)

    def set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` atomically (write, fsync, rename, fsync dir)."""
        if not (self.version_dir(version) / META_FILE).exists():
            raise IndexNotFoundError(f"index {self.name!r} has no version {version}")
        write_atomic(self.current_file, f"{version}\n".encode())


def _next_version(layout: IndexLayout) -> str:
    numbers = [int(v[1:]) for v in layout.versions() if v[1:].isdigit()]
    current = layout.current_version()
    if current and current[1:].isdigit():
        numbers.append(int(current[1:]))
    return f"v{(max(numbers) + 1 if numbers else 1):06d}"


def _remote_store(
    settings: Settings, collection: str, dimension: int, *, create: bool = False
) -> QdrantVectorStore:
    """A collection on the configured Qdrant server, with the configured API key. Only a fresh
    build ``create``s one: a published collection that is gone is an error, never replaced by
    an empty one (which a reader would serve from and a refresh would half fill)."""
    if not settings.qdrant_url:
        raise StoreUnavailableError("this index lives in a remote Qdrant; set CITEWELL_QDRANT_URL")
    # Imported on use: qdrant-client takes seconds to import and the embedded default needs none.
    from citewell.retrieval.stores.qdrant import QdrantVectorStore

    return QdrantVectorStore.from_url(
        settings.qdrant_url,
        settings.qdrant_api_key,
        collection,
        dimension,
        exact_search_max_points=settings.exact_search_max_points,
        create=create,
    )


def remote_collection_name(index: str, version: str) -> str:
    return f"citewell_{index}_{version}"


class IndexWriter:
    """A transaction over an index: stage, change, then ``commit()`` to publish atomically.

    With ``fresh=True`` the staged version starts empty (a rebuild); otherwise it starts as a copy
    of the published version. Leaving the context without committing discards the staging.
    """

    def __init__(
        self,
        settings: Settings,
        index: str | None = None,
        *,
        embedding_model: str,
        embedding_key: str,
        dimension: int,
        fresh: bool = False,
    ) -> None:
        self.settings = settings
        self.layout = IndexLayout(settings, index)
        self.embedding_model = embedding_model
        self.embedding_key = embedding_key
        self.embedding_backend = backend_of_key(embedding_key)
        self.dimension = dimension
        self.fresh = fresh
        self.version = ""
        self.base_version: str | None = None
        self._lock_fd: int | None = None
        self._staging: Path | None = None
        self._vectors: VectorStore | None = None
        self._lexical: BM25Index | None = None
        self._manifest: Manifest | None = None
        self._collection: str | None = None
        # The staged collection and the published one to copy into it, until copied.
        self._copy_from: tuple[QdrantVectorStore, str] | None = None
        self._committed = False

    # --- handles --------------------------------------------------------------------------
    @property
    def vectors(self) -> VectorStore:
        if self._vectors is None:
            raise StoreUnavailableError("index writer is not open")
        if self._copy_from is not None:
            store, source = self._copy_from
            copied = store.copy_points_from(source)
            self._copy_from = None
            log_event(
                logger,
                logging.INFO,
                "index.collection_copied",
                index=self.layout.name,
                source=source,
                target=self._collection,
                points=copied,
            )
        return self._vectors

    @property
    def lexical(self) -> BM25Index:
        if self._lexical is None:
            raise StoreUnavailableError("index writer is not open")
        return self._lexical

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise StoreUnavailableError("index writer is not open")
        return self._manifest

    @property
    def backend(self) -> VectorBackend:
        return "qdrant" if self.settings.qdrant_url else "edge"

    # --- document-level operations ----------------------------------------------------------
    # --- document operations: each changes vectors, BM25 and the manifest together ------------
    def put_document(self, entry: DocumentEntry, chunks: Sequence[Chunk], vectors: Matrix) -> None:
        """Add a document, or replace every chunk of an indexed one, with its manifest entry.

        Upserts come before deletes, so a live remote collection never lacks the document in
        between; chunks of the old version that the new one does not have are then removed.
        """
        # A statvfs per document (microseconds): the store's memory-mapped writes must stop
        # before the disk is full, not die in it.
        _ensure_free_space(self.layout, 0, "write more documents")
        new_ids = {chunk.chunk_id for chunk in chunks}
        self.vectors.upsert(list(chunks), vectors)
        stale = self.vectors.chunk_ids_by_document([entry.doc_id]).get(entry.doc_id, [])
        stale_ids = [cid for cid in stale if cid not in new_ids]
        if stale_ids:
            self.vectors.delete_chunks(stale_ids)
        self.lexical.delete_documents([entry.doc_id])
        self.lexical.add(list(chunks))  # indexes context + text, as embedded
        self.manifest.put(entry)

    def relabel_document(
        self, entry: DocumentEntry, label: AccessLabel, labelled: bool, fingerprint: str
    ) -> DocumentEntry:
        """Change an indexed document's access label everywhere, payloads only (no
        re-embedding); returns the new manifest entry."""
        rank = self.settings.scheme.rank(label.classification)
        self.vectors.relabel_document(entry.doc_id, label, rank)
        self.lexical.relabel_document(entry.doc_id, label, rank)
        updated = entry.model_copy(
            update={
                "label_fingerprint": fingerprint,
                "classification": label.classification,
                "classification_rank": rank,
                "groups": tuple(sorted(label.groups)),
                "labelled": labelled,
                "refreshed_at": datetime.now(UTC),
            }
        )
        self.manifest.put(updated)
        return updated

    def delete_documents(self, doc_ids: list[str]) -> None:
        """Remove documents from the vectors, BM25 and the manifest together."""
        if not doc_ids:
            return
        self.vectors.delete_documents(doc_ids)
        self.lexical.delete_documents(doc_ids)
        self.manifest.delete(doc_ids)

    def withdraw_document(self, doc_id: str, *, source: str, source_uri: str, reason: str) -> None:
        """Stop serving a document whose access labels can no longer be determined.

        Its chunks leave the vectors and BM25 and its manifest entry goes, so no leg, statistic or
        report can reach it; ``reason`` is recorded as the document's failure. Serving it again
        takes a refresh that finds its labels valid, which ingests it as new (embeddings come
        from the cache). Fail closed: a label the current files no longer support is never
        served, not even the previous one.
        """
        self.delete_documents([doc_id])
        self.manifest.record_failure(source, source_uri, reason)
        log_event(
            logger,
            logging.WARNING,
            "index.document_withdrawn",
            index=self.layout.name,
            doc_id=doc_id,
            reason=reason,
        )

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> IndexWriter:
        try:
            self.layout.root.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        except OSError as exc:  # a read-only or full data dir
            raise StoreUnavailableError(
                f"cannot write index {self.layout.name!r}: {_os_error_reason(exc)}"
            ) from exc
        try:
            self._open()
        except BaseException as exc:
            # A refused open (another model or backend) must not keep the index locked.
            self._discard()
            self._release_lock()
            if isinstance(exc, OSError):
                # Disk full, permissions... while staging: one line, not shutil's list of
                # every file it could not copy.
                raise StoreUnavailableError(
                    f"cannot stage index {self.layout.name!r}: {_os_error_reason(exc)}"
                ) from exc
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self._discard()
        self._release_lock()

    def _acquire_lock(self) -> None:
        self._lock_fd = _lock_index(self.layout)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            _unlock_index(self._lock_fd)
            self._lock_fd = None

    def _open(self) -> None:
        layout = self.layout
        # Anything left in staging belongs to a writer that died: we hold the lock, so discard it.
        shutil.rmtree(layout.staging_dir, ignore_errors=True)
        layout.sweep_temporary_files()
        layout.staging_dir.mkdir(parents=True)
        layout.versions_dir.mkdir(parents=True, exist_ok=True)
        self.version = _next_version(layout)
        self.base_version = None if self.fresh else layout.current_version()
        staging = layout.staging_dir / self.version
        self._staging = staging
        base_meta = layout.read_meta(self.base_version) if self.base_version else None
        if base_meta is not None and base_meta.embedding_model != self.embedding_model:
            raise StoreUnavailableError(
                f"index {layout.name!r} was built with embedding model "
                f"{base_meta.embedding_model!r}, not {self.embedding_model!r}; rebuild it"
            )
        if base_meta is not None:
            check_embedding_backend(layout.name, base_meta.vectors_backend, self.embedding_backend)
        if self.base_version is not None and base_meta is not None:
            # Building on a damaged version would record its damage as the new truth.
            _refuse_if_damaged(layout, base_meta, digests=True)
        base_dir = layout.version_dir(self.base_version) if self.base_version else None
        _ensure_free_space(layout, _tree_bytes(base_dir) if base_dir else 0, "stage a version")
        if base_dir is not None:
            copy_tree(base_dir, staging)
            (staging / META_FILE).unlink(missing_ok=True)
        else:
            staging.mkdir()
        if self.backend == "edge":
            self._vectors = EdgeVectorStore(
                staging / "vectors",
                self.dimension,
                exact_search_max_points=self.settings.exact_search_max_points,
            )
        else:
            # Every version gets its own collection, published by the CURRENT switch; a
            # refresh copies the published one first. Written in place, a refresh that died
            # left the served version's vectors changed under its manifest and BM25 (refused
            # by every reader), and all versions shared one collection (rollback restored none).
            self._collection = remote_collection_name(layout.name, self.version)
            store = _remote_store(self.settings, self._collection, self.dimension, create=True)
            # Named after a version number no version on disk holds: a killed writer's leftover.
            store.delete_collection()
            self._vectors = store
            # Copied on the first write (``vectors``): a no-change refresh copies nothing.
            if base_meta is not None and base_meta.collection:
                self._copy_from = (store, base_meta.collection)
        bm25_dir = staging / "bm25"
        tokenizer = Tokenizer(stem=self.settings.bm25_stemming)
        if bm25_dir.exists():
            # Refuses an index saved with another tokenizer: that change needs a fresh build.
            self._lexical = BM25Index.load(
                bm25_dir, tokenizer=tokenizer, k1=self.settings.bm25_k1, b=self.settings.bm25_b
            )
        else:
            self._lexical = BM25Index(
                k1=self.settings.bm25_k1, b=self.settings.bm25_b, tokenizer=tokenizer
            )
        self._manifest = Manifest(staging / "manifest.sqlite")
        # A refresh would write new documents at the new ranks next to old ones at the old.
        problems = scheme_problems(self.settings.scheme, self._manifest)
        if problems and self.base_version is not None:
            raise _refuse(layout, self.base_version, problems)

    def commit(self, validate: Callable[[IndexWriter], None] | None = None) -> str:
        """Make everything durable and publish the staged version. ``validate`` may raise to
        refuse publication (the serving version stays as it was)."""
        staging = self._staging
        if staging is None or self._committed:
            raise StoreUnavailableError("nothing staged to commit")
        try:
            return self._publish(staging, validate)
        except OSError as exc:
            # Disk full, permissions...: the staged version is discarded on exit and the
            # published version keeps serving.
            raise StoreUnavailableError(
                f"cannot publish index {self.layout.name!r}: {_os_error_reason(exc)}"
            ) from exc

    def _publish(self, staging: Path, validate: Callable[[IndexWriter], None] | None) -> str:
        self.manifest.commit()
        if isinstance(self._vectors, EdgeVectorStore):
            # Segments are rewritten (and the HNSW graph written) beside the staged ones.
            _ensure_free_space(self.layout, _tree_bytes(staging / "vectors"), "build the vectors")
            # qdrant-edge builds HNSW only when asked: without it, a broad filter scans every
            # point (100k chunks: dense p50/p95 52/80 ms, 7/23 ms with HNSW; building took 90 s,
            # benchmarks/retrieval_latency.py). The engine only indexes segments over its
            # threshold, so a small refresh pays nothing here.
            started = time.perf_counter()
            if self._vectors.optimize():
                log_event(
                    logger,
                    logging.INFO,
                    "index.vectors_optimized",
                    index=self.layout.name,
                    seconds=round(time.perf_counter() - started, 3),
                )
        self.vectors.flush()
        self.lexical.save(staging / "bm25")
        if validate is not None:
            validate(self)
        documents, chunks = self.manifest.counts()
        meta = IndexMeta(
            index=self.layout.name,
            version=self.version,
            created_at=datetime.now(UTC),
            embedding_model=self.embedding_model,
            embedding_key=self.embedding_key,
            embedding_backend=self.embedding_backend,
            dimension=self.dimension,
            vector_backend=self.backend,
            collection=self._collection,
            documents=documents,
            chunks=chunks,
            bm25_k1=self.lexical.k1,
            bm25_b=self.lexical.b,
            bm25_stemming=self.settings.bm25_stemming,
        )
        self._close_handles()
        points = self._settled_point_count(staging, chunks)
        # We hold the write lock, so CURRENT (the one to roll back to from this version) stays.
        previous = self.layout.current_version()
        meta = meta.model_copy(
            update={
                "replaces": previous,
                "points": points,
                "digest_algorithm": DIGEST_ALGORITHM,
                "files": record_files(staging, _NOT_RECORDED),
            }
        ).sealed()
        write_synced(staging / META_FILE, meta.model_dump_json(indent=2).encode("utf-8"))
        target = self.layout.version_dir(self.version)
        os.rename(staging, target)
        fsync_dir(self.layout.versions_dir)
        self.layout.set_current(self.version)
        self._committed = True
        published = meta.model_dump(include={"index", "version", "documents", "chunks"})
        log_event(logger, logging.INFO, "index.published", **published)
        try:
            # Killed or failing here, the next writer or rollback records it (CURRENT names
            # it) and collects again: the version is published, so a failure (a full disk) is
            # logged, never reported as a failed publish of a version that serves.
            self.layout.record_published({self.version} | ({previous} if previous else set()))
            self._collect_garbage(previous)
        except (OSError, CitewellError) as exc:
            reason = _os_error_reason(exc) if isinstance(exc, OSError) else str(exc)
            log_event(
                logger,
                logging.WARNING,
                "index.after_publish_failed",
                index=self.layout.name,
                version=self.version,
                error=reason,
            )
        return self.version

    def _settled_point_count(self, staging: Path, chunks: int) -> int:
        """The vector count, checked against the manifest's chunk count. An embedded shard is
        opened and closed once first: qdrant-edge rewrites its config and folds its journals on
        the first load after writing, and the recorded files must be those every later load
        finds (it changes nothing after that; ``tests/retrieval/test_integrity.py``)."""
        if self.backend == "edge":
            store = EdgeVectorStore(
                staging / "vectors",
                self.dimension,
                exact_search_max_points=self.settings.exact_search_max_points,
            )
            try:
                points = store.count()
            finally:
                store.close()
        else:
            points = _remote_store(self.settings, self._collection or "", self.dimension).count()
        if points != chunks:
            raise IndexIntegrityError(
                self.version,
                [f"vector store holds {points} points, the manifest {chunks} chunks"],
            )
        return points

    def _close_handles(self) -> None:
        for handle in (self._vectors, self._manifest):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
        self._vectors = None
        self._manifest = None

    def _discard(self) -> None:
        self._close_handles()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            # Once its version is in versions/, CURRENT may name it: never remove its vectors.
            placed = bool(self.version) and self.layout.version_dir(self.version).exists()
            if self.backend == "qdrant" and self._collection and not placed:
                with contextlib.suppress(Exception):
                    _remote_store(
                        self.settings, self._collection, self.dimension
                    ).delete_collection()

    def _collect_garbage(self, previous: str | None) -> None:
        """Keep ``keep_versions`` published versions: the current one, ``previous`` (the one it
        replaced, which servers may still hold and rollback returns to: after a rollback it is
        not the newest) and then the newest; versions whose publish was killed before CURRENT
        named them go."""
        layout = self.layout
        current = layout.current_version()
        versions = layout.versions()
        served = layout.published_versions()
        published = [v for v in versions if v in served]
        first = [v for v in (current, previous) if v in published]
        ranked = list(dict.fromkeys([*first, *reversed(published)]))
        keep = set(ranked[: self.settings.keep_versions]) | {current}
        kept_collections = {layout.read_meta(v).collection for v in keep if v and v in versions}
        for version in versions:
            if version in keep:
                continue
            with contextlib.suppress(Exception):
                meta = layout.read_meta(version)
                if (
                    meta.vector_backend == "qdrant"
                    and meta.collection
                    and meta.collection not in kept_collections
                ):
                    _remote_store(
                        self.settings, meta.collection, meta.dimension
                    ).delete_collection()
            _remove_version(layout, version)


# Room kept free beyond what a step is estimated to write (manifest, BM25, logs).
_DISK_HEADROOM_BYTES = 64 << 20


def _tree_bytes(folder: Path) -> int:
    """Bytes allocated to the files under ``folder`` (sparse files count what they hold)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                total += min(info.st_size, info.st_blocks * 512)
    return total


def _ensure_free_space(layout: IndexLayout, needed: int, step: str) -> None:
    """Refuse a step before it runs out of disk: qdrant-edge writes its segments through
    memory maps, and a write into a full file system kills the process with SIGBUS instead of
    raising an error the run could report (found on a full tmpfs)."""
    try:
        free = _free_bytes(layout.root)
    except OSError:
        return  # unknown: let the write itself report what happens
    if free < needed + _DISK_HEADROOM_BYTES:
        raise StoreUnavailableError(
            f"not enough disk space to {step} of index {layout.name!r}: "
            f"{free >> 20} MB free under {layout.root}, about "
            f"{(needed + _DISK_HEADROOM_BYTES) >> 20} MB needed; the published version is "
            "unchanged"
        )


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _lock_index(layout: IndexLayout) -> int:
    """Take the index's write lock (one writer or rollback at a time) or refuse at once."""
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise IndexLockedError(
            f"another process is writing index {layout.name!r}; try again when it ends"
        ) from exc
    return fd


def _unlock_index(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def _write_lock(layout: IndexLayout) -> Iterator[None]:
    fd = _lock_index(layout)
    try:
        yield
    finally:
        _unlock_index(fd)


def _remove_version(layout: IndexLayout, version: str) -> None:
    """Remove a version whole or not at all: rename it out of ``versions/`` into staging (which
    the next writer empties), then delete it. A process killed while deleting must never leave
    a half-removed version that listings, rollbacks and later collections would trip over."""
    doomed = layout.staging_dir / f"gc-{version}"
    try:
        shutil.rmtree(doomed, ignore_errors=True)
        os.rename(layout.version_dir(version), doomed)
        fsync_dir(layout.versions_dir)
    except OSError:
        return  # still whole; the next collection tries again
    shutil.rmtree(doomed, ignore_errors=True)


def _os_error_reason(exc: OSError) -> str:
    """One line for an OSError; ``shutil.Error`` (a copy that failed) carries a list of every
    file it could not copy: name the first failure and how many there were."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        failures = exc.args[0]
        if failures:
            first = str(failures[0][-1]) if isinstance(failures[0], tuple) else str(failures[0])
            more = f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""
            return f"{first}{more}"
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or str(exc)


def rollback(settings: Settings, index: str | None = None, to_version: str | None = None) -> str:
    """Point the index back at ``to_version`` (default: the version before the current one).
    Only versions that have served can be chosen: one whose publish was killed never can."""
    layout = IndexLayout(settings, index)
    if not layout.root.is_dir():
        raise IndexNotFoundError(f"index {layout.name!r} does not exist")
    with _write_lock(layout):
        versions = layout.versions()
        current = layout.current_version()
        published = layout.published_versions()
        if to_version is None:
            to_version = _version_before(layout, current, versions, published)
        elif to_version not in versions:
            raise IndexNotFoundError(f"index {layout.name!r} has no version {to_version}")
        elif to_version not in published:
            raise IndexNotFoundError(
                f"index {layout.name!r} version {to_version} was never published (a refresh "
                "was stopped before it switched to it); it cannot be served"
            )
        # A switch like any other: a version that fails its check is never pointed at.
        _refuse_if_damaged(layout, layout.read_meta(to_version), digests=True)
        layout.sweep_temporary_files()
        layout.record_published(published)  # the version left stays one that served
        layout.set_current(to_version)
    log_event(logger, logging.WARNING, "index.rolled_back", index=layout.name, version=to_version)
    return to_version


def _version_before(
    layout: IndexLayout, current: str | None, versions: list[str], published: set[str]
) -> str:
    """The version ``current`` replaced when it was published; when that one is gone (or was
    never recorded), the newest published version older than ``current``."""
    replaced = None
    if current is not None and current in versions:
        with contextlib.suppress(StoreUnavailableError):
            replaced = layout.read_meta(current).replaces
    if replaced is not None and replaced in versions and replaced in published:
        return replaced
    older = [v for v in versions if v in published and (current is None or v < current)]
    if not older:
        raise IndexNotFoundError(
            f"index {layout.name!r} has no earlier version to roll back to "
            "(`citewell index versions` lists those on disk; `--to` picks one)"
        )
    return older[-1]


def _file_problems(layout: IndexLayout, meta: IndexMeta, *, digests: bool) -> list[str]:
    problems = [p for p in (meta.seal_problem(),) if p]
    if meta.files is not None:
        if meta.digest_algorithm != DIGEST_ALGORITHM:
            problems.append(f"meta.json: unknown digest algorithm {meta.digest_algorithm!r}")
        else:
            problems += check_files(
                layout.version_dir(meta.version), meta.files, _NOT_RECORDED, digests=digests
            )
    return problems


def _refuse(layout: IndexLayout, version: str, problems: list[str]) -> IndexIntegrityError:
    log_event(
        logger,
        logging.ERROR,
        "index.version_refused",
        index=layout.name,
        version=version,
        problems=problems[:20],
    )
    return IndexIntegrityError(version, problems)


def _refuse_if_damaged(layout: IndexLayout, meta: IndexMeta, *, digests: bool) -> None:
    problems = _file_problems(layout, meta, digests=digests)
    if problems:
        raise _refuse(layout, meta.version, problems)


def _count_problems(
    meta: IndexMeta, vectors: VectorStore, lexical: BM25Index, manifest: Manifest
) -> list[str]:
    problems: list[str] = []
    documents, chunks = manifest.counts()
    if (documents, chunks) != (meta.documents, meta.chunks):
        problems.append(
            f"manifest holds {documents} documents and {chunks} chunks, "
            f"meta.json {meta.documents} and {meta.chunks}"
        )
    points = vectors.count()
    expected = meta.points if meta.points is not None else meta.chunks
    if points != expected:
        problems.append(f"vector store holds {points} points, {expected} were published")
    if len(lexical) != meta.chunks:
        problems.append(f"BM25 index holds {len(lexical)} chunks, {meta.chunks} were published")
    return problems


def scheme_problems(scheme: ClassificationScheme, manifest: Manifest) -> list[str]:
    """Levels whose stored rank the configured scheme reads differently. Chunks carry the rank
    their level had when they were written, and every filter compares ranks: a level inserted
    below existing ones (or a level renamed, reordered or removed) would silently move every
    stored document up or down, letting a lower clearance see what was written above it."""

    def moved_from(name: str, rank: int) -> bool:
        try:
            return scheme.rank(name) != rank
        except UnknownClassificationError:
            return True

    moved = sorted(
        f"{name!r} is stored at rank {rank}"
        for name, rank in manifest.levels()
        if moved_from(name, rank)
    )
    if not moved:
        return []
    return [
        "documents were labelled with other classification levels than the configured "
        f"{list(scheme.levels)} ({'; '.join(moved)}); restore the levels or rebuild the index "
        "(citewell ingest --fresh)"
    ]


@dataclass(eq=False)
class OpenedVersion:
    """Read handles on one published version; ``private_copy`` (a folder the stores were copied
    to, removed on close) and ``layout`` (for the damage check) are optional."""

    meta: IndexMeta
    vectors: VectorStore
    lexical: BM25Index
    manifest: Manifest
    private_copy: Path | None
    layout: IndexLayout | None = None

    @property
    def version(self) -> str:
        return self.meta.version

    def damage(self) -> list[str]:
        """What changed on disk since this version was opened and verified: missing, extra or
        resized files (a stat per file, no digests: cheap enough for every readiness probe).
        The stores hold some files open, but the next open, by this process or another, would
        read what is on disk, so a difference here means the version can no longer be
        trusted."""
        if self.layout is None:
            return []
        return _file_problems(self.layout, self.meta, digests=False)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.vectors.close()
        with contextlib.suppress(Exception):
            self.manifest.close()
        if self.private_copy is not None:
            shutil.rmtree(self.private_copy, ignore_errors=True)


def open_version(
    settings: Settings, index: str | None = None, version: str | None = None
) -> OpenedVersion:
    """Open a published version of an index for reading (default: the current one), after
    checking every recorded file's size and digest and, once open, the stores' counts against
    the record. Raises ``IndexIntegrityError`` for a version that fails (logged as
    ``index.version_refused``) and ``StoreUnavailableError`` when a store cannot be opened."""
    layout = IndexLayout(settings, index)
    version = version or layout.current_version()
    if version is None:
        raise IndexNotFoundError(
            f"index {layout.name!r} has no published version; run `citewell ingest` first"
        )
    try:
        meta = layout.read_meta(version)
    except StoreUnavailableError as exc:
        if not layout.version_dir(version).is_dir():
            raise _refuse(layout, version, ["version directory missing"]) from exc
        raise _refuse(layout, version, ["meta.json: unreadable"]) from exc
    _refuse_if_damaged(layout, meta, digests=True)
    if meta.files is None:
        log_event(
            logger,
            logging.WARNING,
            "index.version_unrecorded",
            index=layout.name,
            version=version,
            note="published before file records existed: counts checked, files not",
        )
    version_dir = layout.version_dir(version)
    lexical = BM25Index.load(
        version_dir / "bm25", tokenizer=Tokenizer(stem=meta.bm25_stemming), read_only=True
    )
    lexical.warm_up()  # a served version answers its first search at full speed
    private_copy: Path | None = None
    vectors: VectorStore
    if meta.vector_backend == "qdrant":
        vectors = _remote_store(settings, meta.collection or "", meta.dimension)
    else:
        vectors, private_copy = _open_edge(
            version_dir, meta.dimension, settings.exact_search_max_points
        )
    manifest: Manifest | None = None
    try:
        manifest = Manifest(version_dir / "manifest.sqlite", read_only=True)
        problems = _count_problems(meta, vectors, lexical, manifest)
        problems += scheme_problems(settings.scheme, manifest)
        if problems:
            raise _refuse(layout, version, problems)
    except BaseException:
        with contextlib.suppress(Exception):
            vectors.close()
        if manifest is not None:
            manifest.close()
        if private_copy is not None:
            shutil.rmtree(private_copy, ignore_errors=True)
        raise
    return OpenedVersion(meta, vectors, lexical, manifest, private_copy, layout)


def verify_version(
    settings: Settings, index: str | None = None, version: str | None = None
) -> IndexMeta:
    """``citewell index verify``: the check :func:`open_version` makes, on demand, for any
    published version (default: the current one). Returns its meta; raises like
    ``open_version``."""
    opened = open_version(settings, index, version)
    meta = opened.meta
    opened.close()
    return meta


def _open_edge(
    version_dir: Path, dimension: int, exact_search_max_points: int
) -> tuple[VectorStore, Path | None]:
    vectors_dir = version_dir / "vectors"
    if not vectors_dir.is_dir() or not any(vectors_dir.iterdir()):
        # The edge store would create an empty shard here: a published version must never be
        # written, and serving an empty store would hide the fault behind "no results".
        raise StoreUnavailableError(f"vector store missing in {version_dir}")
    store = EdgeVectorStore(vectors_dir, dimension, exact_search_max_points=exact_search_max_points)
    try:
        store.count()
        return store, None
    except StoreUnavailableError as exc:
        if "WouldBlock" not in str(exc) and "lock" not in str(exc).lower():
            raise
    # Another process (e.g. the API) has this version open and qdrant-edge has no read-only
    # mode: read a private copy instead. Published versions never change, so a copy is exact.
    started = time.perf_counter()
    private = Path(tempfile.mkdtemp(prefix="citewell-read-"))
    copy_tree(version_dir / "vectors", private / "vectors")
    copy = EdgeVectorStore(
        private / "vectors", dimension, exact_search_max_points=exact_search_max_points
    )
    try:
        copy.count()
    except StoreUnavailableError:
        shutil.rmtree(private, ignore_errors=True)
        raise
    log_event(
        logger,
        logging.INFO,
        "index.private_copy_opened",
        version_dir=str(version_dir),
        seconds=round(time.perf_counter() - started, 3),
    )
    return copy, private
