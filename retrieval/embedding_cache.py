"""Persistent document-embedding cache and an in-memory query cache around any Embedder.

Entries are keyed by (embedder ``cache_key``, sha256 of the exact text): switching model,
backend or max length changes the key, so vectors from another backend are never served.

The query cache is also keyed by the caller (:func:`caller_partition`): a vector carries no
access information, but whether a text is already cached does. Shared between callers, a query
that returns in a few milliseconds instead of tens would tell a low-clearance caller that
someone asked exactly that text, or that an LLM answer written from restricted sources stated it
(the agent embeds each claim to check it against its source).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from citewell.core.errors import ConfigurationError, StoreUnavailableError
from citewell.core.logging import log_event
from citewell.core.models import Principal
from citewell.retrieval.protocols import Embedder, Matrix, Vector

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    cache_key TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (cache_key, text_sha256)
) WITHOUT ROWID
"""
_SQLITE_VARS = 500  # stays under SQLite's bound-parameter limit on old builds


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


# Whose request is running: caches of caller-supplied texts (query vectors here, question
# analyses in the agent) keep one partition per caller. None outside any caller (a one-principal
# process: the CLI, evaluation, benchmarks).
_PARTITION: ContextVar[str | None] = ContextVar("citewell_caller_partition", default=None)


def principal_partition(principal: Principal) -> str:
    """The cache partition of ``principal``: equal only for the same name, clearance and groups,
    so it is never shared by two callers who may see different chunks."""
    material = json.dumps([principal.name, principal.clearance, sorted(principal.groups)])
    return hashlib.sha256(material.encode()).hexdigest()


@contextlib.contextmanager
def caller_partition(principal: Principal) -> Iterator[None]:
    """Within this block (this thread or task), caller-keyed caches use ``principal``'s
    partition."""
    token = _PARTITION.set(principal_partition(principal))
    try:
        yield
    finally:
        _PARTITION.reset(token)


def current_partition() -> str | None:
    """The partition of the caller whose request is running (None outside any)."""
    return _PARTITION.get()


class EmbeddingCache:
    """SQLite (WAL) store of float32 vectors; safe for several processes on one file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self._path, timeout=30.0, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                conn.commit()
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"embedding cache {self._path}: {exc}") from exc
            self._conn = conn
        return self._conn

    def get_many(self, cache_key: str, digests: Sequence[bytes]) -> dict[bytes, Vector]:
        """Cached vectors for these text digests (missing ones are absent)."""
        found: dict[bytes, Vector] = {}
        unique = list(dict.fromkeys(digests))
        with self._lock:
            conn = self._connection()
            for start in range(0, len(unique), _SQLITE_VARS):
                part = unique[start : start + _SQLITE_VARS]
                marks = ",".join("?" * len(part))
                try:
                    rows = conn.execute(
                        "SELECT text_sha256, dim, vector FROM embeddings "  # noqa: S608
                        f"WHERE cache_key = ? AND text_sha256 IN ({marks})",
                        (cache_key, *part),
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise StoreUnavailableError(f"embedding cache {self._path}: {exc}") from exc
                for digest, dim, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (dim,):  # a torn or foreign row is recomputed, not served
                        found[bytes(digest)] = vector
        return found

    def put_many(self, cache_key: str, digests: Sequence[bytes], vectors: Matrix) -> None:
        rows = [
            (cache_key, digest, int(vec.shape[0]), np.ascontiguousarray(vec, np.float32).tobytes())
            for digest, vec in zip(digests, vectors, strict=True)
        ]
        with self._lock:
            conn = self._connection()
            try:
                with conn:
                    conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"embedding cache {self._path}: {exc}") from exc

    def count(self, cache_key: str | None = None) -> int:
        with self._lock:
            conn = self._connection()
            if cache_key is None:
                row = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM embeddings WHERE cache_key = ?", (cache_key,)
                ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class CachingEmbedder:
    """Embedder that serves document vectors from an :class:`EmbeddingCache` and query vectors
    from a bounded in-memory LRU, one partition per caller (:func:`caller_partition`).
    ``computed``/``cached`` count document vectors."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache, query_cache_size: int = 1024):
        if query_cache_size < 0:
            raise ConfigurationError("query_cache_size must be >= 0")
        self._inner = inner
        self._cache = cache
        self._query_cache_size = query_cache_size
        self._queries: OrderedDict[tuple[str | None, str, str], Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0
        self.cached = 0

    @property
    def inner(self) -> Embedder:
        return self._inner

    @property
    def cache_key(self) -> str:
        return self._inner.cache_key

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def warm_up(self) -> None:
        self._inner.warm_up()

    def reset_counts(self) -> None:
        self.computed = 0
        self.cached = 0

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return self._inner.embed_documents(texts)
        key = self._inner.cache_key
        digests = [text_digest(t) for t in texts]
        hits = self._cache.get_many(key, digests)
        missing: dict[bytes, str] = {}
        for digest, text in zip(digests, texts, strict=True):
            if digest not in hits:
                missing.setdefault(digest, text)  # duplicates in one call are embedded once
        if missing:
            new = self._inner.embed_documents(list(missing.values()))
            self._cache.put_many(key, list(missing), new)
            hits.update(zip(missing, new, strict=True))
        self.computed += len(missing)
        self.cached += len(texts) - len(missing)
        log_event(
            logger,
            logging.DEBUG,
            "embeddings",
            cache_key=key,
            computed=len(missing),
            cached=len(texts) - len(missing),
        )
        return np.stack([hits[d] for d in digests]).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> Vector:
        entry = (current_partition(), self._inner.cache_key, text)
        with self._lock:
            vector = self._queries.get(entry)
            if vector is not None:
                self._queries.move_to_end(entry)
                return vector.copy()
        vector = self._inner.embed_query(text)
        if self._query_cache_size:
            with self._lock:
                self._queries[entry] = vector.copy()
                while len(self._queries) > self._query_cache_size:
                    self._queries.popitem(last=False)
        return vector
