"""Index versions on disk: copy-on-write staging, atomic publish, rollback.

Layout under ``<data_dir>/indexes/<name>/``::

    CURRENT                 the published version's name, replaced atomically
    versions/v000007/       a published version (never modified once published)
        vectors/            embedded Qdrant shard (qdrant-edge); absent for a remote Qdrant
        bm25/               the BM25 index
        manifest.sqlite     documents, labels, chunk ids, parse failures
        meta.json           IndexMeta
    staging/                versions being written; discarded if the writer dies
    rerankers/              locally trained rerankers and the gate decision
    .write.lock             one writer at a time

A refresh copies the published version into staging, applies its changes there and publishes by
renaming the directory and replacing CURRENT. A process killed at any point leaves the published
version untouched, so re-running converges to the state of one clean run. Readers (the API) open
published versions only and switch by re-reading CURRENT.

qdrant-edge lets one process at a time open a shard (there is no read-only mode), so a reader
that finds a version held by another process opens a private copy (see ``open_version``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from citewell.core.errors import IndexLockedError, IndexNotFoundError, StoreUnavailableError
from citewell.core.logging import log_event
from citewell.core.models import Frozen
from citewell.core.settings import Settings
from citewell.retrieval.lexical.bm25 import BM25Index
from citewell.retrieval.lexical.tokenize import Tokenizer
from citewell.retrieval.manifest import Manifest
from citewell.retrieval.protocols import VectorStore
from citewell.retrieval.stores.edge import EdgeVectorStore

if TYPE_CHECKING:
    from citewell.retrieval.stores.qdrant import QdrantVectorStore

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
VectorBackend = Literal["edge", "qdrant"]


class IndexMeta(Frozen):
    index: str
    version: str
    created_at: datetime
    embedding_model: str
    embedding_key: str
    dimension: int
    vector_backend: VectorBackend
    collection: str | None = None  # remote Qdrant collection holding this version's vectors
    documents: int = 0
    chunks: int = 0
    bm25_k1: float
    bm25_b: float
    bm25_stemming: bool = True


class IndexLayout:
    """Paths of one named index."""

    def __init__(self, settings: Settings, index: str | None = None) -> None:
        self.name = index or settings.index
        self.root = settings.index_root / self.name

    @property
    def current_file(self) -> Path:
        return self.root / "CURRENT"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def rerankers_dir(self) -> Path:
        return self.root / "rerankers"

    @property
    def lock_file(self) -> Path:
        return self.root / ".write.lock"

    def current_version(self) -> str | None:
        try:
            name = self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
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

    def set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` atomically (write, fsync, rename, fsync dir)."""
        if not (self.version_dir(version) / META_FILE).exists():
            raise IndexNotFoundError(f"index {self.name!r} has no version {version}")
        tmp = self.root / f".CURRENT.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.current_file)
        _fsync_dir(self.root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _next_version(layout: IndexLayout) -> str:
    numbers = [int(v[1:]) for v in layout.versions() if v[1:].isdigit()]
    current = layout.current_version()
    if current and current[1:].isdigit():
        numbers.append(int(current[1:]))
    return f"v{(max(numbers) + 1 if numbers else 1):06d}"


def _remote_store(settings: Settings, collection: str, dimension: int) -> QdrantVectorStore:
    """A collection on the configured Qdrant server, with the configured API key."""
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
        self._committed = False

    # --- handles --------------------------------------------------------------------------
    @property
    def vectors(self) -> VectorStore:
        if self._vectors is None:
            raise StoreUnavailableError("index writer is not open")
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

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> IndexWriter:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._open()
        except BaseException:
            self._discard()
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
        fd = os.open(self.layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise IndexLockedError(
                f"another process is writing index {self.layout.name!r}; try again when it ends"
            ) from exc
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open(self) -> None:
        layout = self.layout
        # Anything left in staging belongs to a writer that died: we hold the lock, so discard it.
        shutil.rmtree(layout.staging_dir, ignore_errors=True)
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
        if self.base_version is not None:
            shutil.copytree(layout.version_dir(self.base_version), staging)
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
            # A remote collection cannot be copied cheaply, so refreshes write into the
            # published collection in place (upserts before deletes keep old chunks searchable);
            # a fresh build gets its own collection, published by the CURRENT switch.
            if base_meta is not None and base_meta.collection:
                self._collection = base_meta.collection
            else:
                self._collection = remote_collection_name(layout.name, self.version)
            self._vectors = _remote_store(self.settings, self._collection, self.dimension)
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
                f"cannot publish index {self.layout.name!r}: {exc.strerror or exc}"
            ) from exc

    def _publish(self, staging: Path, validate: Callable[[IndexWriter], None] | None) -> str:
        self.manifest.commit()
        if isinstance(self._vectors, EdgeVectorStore):
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
        with open(staging / META_FILE, "w", encoding="utf-8") as handle:
            handle.write(meta.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        target = self.layout.version_dir(self.version)
        os.rename(staging, target)
        _fsync_dir(self.layout.versions_dir)
        self.layout.set_current(self.version)
        self._committed = True
        log_event(
            logger,
            logging.INFO,
            "index.published",
            index=self.layout.name,
            version=self.version,
            documents=documents,
            chunks=chunks,
        )
        self._collect_garbage()
        return self.version

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
            if self.backend == "qdrant" and self.fresh and self._collection:
                with contextlib.suppress(Exception):
                    _remote_store(
                        self.settings, self._collection, self.dimension
                    ).delete_collection()

    def _collect_garbage(self) -> None:
        """Keep the newest ``keep_versions`` versions (the current one always)."""
        layout = self.layout
        current = layout.current_version()
        versions = layout.versions()
        keep = set(versions[-self.settings.keep_versions :]) | {current}
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
            shutil.rmtree(layout.version_dir(version), ignore_errors=True)


def rollback(settings: Settings, index: str | None = None, to_version: str | None = None) -> str:
    """Point the index back at ``to_version`` (default: the version before the current one)."""
    layout = IndexLayout(settings, index)
    versions = layout.versions()
    current = layout.current_version()
    if to_version is None:
        older = [v for v in versions if current is None or v < current]
        if not older:
            raise IndexNotFoundError(
                f"index {layout.name!r} has no earlier version to roll back to"
            )
        to_version = older[-1]
    layout.set_current(to_version)
    log_event(logger, logging.WARNING, "index.rolled_back", index=layout.name, version=to_version)
    return to_version


class OpenedVersion:
    """Read handles on one published version."""

    def __init__(
        self,
        meta: IndexMeta,
        vectors: VectorStore,
        lexical: BM25Index,
        manifest: Manifest,
        private_copy: Path | None,
    ) -> None:
        self.meta = meta
        self.vectors = vectors
        self.lexical = lexical
        self.manifest = manifest
        self._private_copy = private_copy

    @property
    def version(self) -> str:
        return self.meta.version

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.vectors.close()
        with contextlib.suppress(Exception):
            self.manifest.close()
        if self._private_copy is not None:
            shutil.rmtree(self._private_copy, ignore_errors=True)


def open_version(settings: Settings, index: str | None = None) -> OpenedVersion:
    """Open the published version of an index for reading."""
    layout = IndexLayout(settings, index)
    version = layout.current_version()
    if version is None:
        raise IndexNotFoundError(
            f"index {layout.name!r} has no published version; run `citewell ingest` first"
        )
    meta = layout.read_meta(version)
    version_dir = layout.version_dir(version)
    lexical = BM25Index.load(version_dir / "bm25", tokenizer=Tokenizer(stem=meta.bm25_stemming))
    private_copy: Path | None = None
    vectors: VectorStore
    if meta.vector_backend == "qdrant":
        vectors = _remote_store(settings, meta.collection or "", meta.dimension)
        vectors.count()
    else:
        vectors, private_copy = _open_edge(
            version_dir, meta.dimension, settings.exact_search_max_points
        )
    manifest = Manifest(version_dir / "manifest.sqlite", read_only=True)
    return OpenedVersion(meta, vectors, lexical, manifest, private_copy)


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
    shutil.copytree(version_dir / "vectors", private / "vectors")
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
