"""The manifest: what each index version holds, document by document.

It lives inside the index version (SQLite), so it is published atomically with the vectors and
the BM25 index it describes. Ingestion plans refreshes from it; evaluation reads it for corpus
coverage (failed and stale documents).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from citewell.core.errors import StoreUnavailableError
from citewell.core.models import Frozen

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    source_uri TEXT NOT NULL,
    relative_path TEXT NOT NULL,
    title TEXT NOT NULL,
    doc_type TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    label_fingerprint TEXT NOT NULL,
    classification TEXT NOT NULL,
    classification_rank INTEGER NOT NULL,
    groups TEXT NOT NULL,
    labelled INTEGER NOT NULL,
    banner_level TEXT,
    chunk_ids TEXT NOT NULL,
    modified_at TEXT,
    refreshed_at TEXT NOT NULL,
    chunk_recipe TEXT,
    sensitivity TEXT
);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS failures (
    source TEXT NOT NULL,
    source_uri TEXT NOT NULL,
    reason TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    PRIMARY KEY (source, source_uri)
);
"""


class DocumentEntry(Frozen):
    doc_id: str
    source: str
    source_uri: str
    relative_path: str
    title: str
    doc_type: str
    content_hash: str
    label_fingerprint: str
    classification: str
    classification_rank: int
    groups: tuple[str, ...]
    labelled: bool
    banner_level: str | None = None
    chunk_ids: tuple[str, ...]
    modified_at: datetime | None = None
    refreshed_at: datetime
    # Fingerprint of the chunking recipe the chunks were made with (settings and code that
    # decide chunk texts and headers); another recipe re-chunks the document. None: unknown.
    chunk_recipe: str | None = None
    # The sensitivity labels the document's content carried and those that applied (ingestion
    # owns the JSON): a label removed later can be refused without the old file. None: none.
    sensitivity: str | None = None


# Columns named: manifests written before ``chunk_recipe`` have it last, added by ALTER TABLE.

ChangeKind = Literal["new", "changed", "relabeled", "unchanged"]


def classify_change(
    prior: DocumentEntry | None, content_hash: str, chunk_recipe: str, label_fingerprint: str
) -> ChangeKind:
    """What a refresh must do with a document, given its indexed entry and what the source has
    now: the one decision the pipeline and the Airflow planner both make. Another chunking
    recipe (settings or code) re-chunks an unchanged file, or the index keeps chunks made the
    old way; a label change alone is a payload update, never a re-embedding."""
    if prior is None:
        return "new"
    if prior.content_hash != content_hash or prior.chunk_recipe != chunk_recipe:
        return "changed"
    if prior.label_fingerprint != label_fingerprint:
        return "relabeled"
    return "unchanged"


_INSERT = (
    "INSERT OR REPLACE INTO documents (doc_id, source, source_uri, relative_path, title, "
    "doc_type, content_hash, label_fingerprint, classification, classification_rank, groups, "
    "labelled, banner_level, chunk_ids, modified_at, refreshed_at, chunk_recipe, sensitivity) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class FailureEntry(Frozen):
    """A document that failed, with the access label its path carries when one was resolved
    (``classification_rank`` None: unknown, so shown to nobody; see evaluation/coverage.py)."""

    source: str
    source_uri: str
    reason: str
    failed_at: datetime
    classification_rank: int | None = None
    groups: tuple[str, ...] = ()


class Manifest:
    """Documents and parse failures of one index version."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        try:
            if read_only:
                if not path.exists():
                    raise StoreUnavailableError(f"index manifest missing: {path}")
                uri = f"file:{path}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(path, check_same_thread=False)
                self._db.executescript(_SCHEMA)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(documents)")}
                if "chunk_recipe" not in columns:  # a manifest written before recipes existed
                    self._db.execute("ALTER TABLE documents ADD COLUMN chunk_recipe TEXT")
                failure_columns = {
                    row[1] for row in self._db.execute("PRAGMA table_info(failures)")
                }
                if "classification_rank" not in failure_columns:  # written before labels
                    self._db.execute("ALTER TABLE failures ADD COLUMN classification_rank INTEGER")
                    self._db.execute("ALTER TABLE failures ADD COLUMN groups TEXT")
                if "sensitivity" not in columns:  # written before sensitivity labels were read
                    self._db.execute("ALTER TABLE documents ADD COLUMN sensitivity TEXT")
            self._db.row_factory = sqlite3.Row
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open index manifest {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def commit(self) -> None:
        self._db.commit()

    # --- documents ------------------------------------------------------------------------
    def documents(self, source: str | None = None) -> dict[str, DocumentEntry]:
        if source is None:
            rows = self._db.execute("SELECT * FROM documents")
        else:
            rows = self._db.execute("SELECT * FROM documents WHERE source = ?", (source,))
        return {row["doc_id"]: _entry(row) for row in rows}

    def get(self, doc_id: str) -> DocumentEntry | None:
        row = self._db.execute("SELECT * FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return _entry(row) if row else None

    def document_locations(self) -> Iterator[tuple[str, str, str]]:
        """(source, source_uri, relative_path) of every document: what finding a folder's source
        needs, without building every entry (chunk ids included) as ``iter_documents`` does."""
        for row in self._db.execute("SELECT source, source_uri, relative_path FROM documents"):
            yield row["source"], row["source_uri"], row["relative_path"]

    def iter_documents(self) -> Iterator[DocumentEntry]:
        for row in self._db.execute("SELECT * FROM documents ORDER BY doc_id"):
            yield _entry(row)

    def put(self, entry: DocumentEntry) -> None:
        self._db.execute(
            _INSERT,
            (
                entry.doc_id,
                entry.source,
                entry.source_uri,
                entry.relative_path,
                entry.title,
                entry.doc_type,
                entry.content_hash,
                entry.label_fingerprint,
                entry.classification,
                entry.classification_rank,
                json.dumps(list(entry.groups)),
                int(entry.labelled),
                entry.banner_level,
                json.dumps(list(entry.chunk_ids)),
                entry.modified_at.isoformat() if entry.modified_at else None,
                entry.refreshed_at.isoformat(),
                entry.chunk_recipe,
                entry.sensitivity,
            ),
        )

    def delete(self, doc_ids: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM documents WHERE doc_id = ?", [(d,) for d in doc_ids])

    def levels(self) -> set[tuple[str, int]]:
        """The distinct (classification, classification_rank) pairs the documents carry: the
        ranks the stores filter on, with the level names they were computed from."""
        rows = self._db.execute(
            "SELECT DISTINCT classification, classification_rank FROM documents"
        )
        return {(str(row[0]), int(row[1])) for row in rows}

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        docs = 0
        chunks = 0
        for row in self._db.execute("SELECT chunk_ids FROM documents"):
            docs += 1
            chunks += len(json.loads(row["chunk_ids"]))
        return docs, chunks

    # --- failures -------------------------------------------------------------------------
    def record_failure(
        self,
        source: str,
        source_uri: str,
        reason: str,
        *,
        classification_rank: int | None = None,
        groups: Iterable[str] = (),
    ) -> None:
        """Record a failed document; pass the label its path resolved to when known, so reports
        can show the failure to whoever may see the document (and to nobody when unknown)."""
        self._db.execute(
            "INSERT OR REPLACE INTO failures (source, source_uri, reason, failed_at, "
            "classification_rank, groups) VALUES (?, ?, ?, ?, ?, ?)",
            (
                source,
                source_uri,
                reason,
                datetime.now(UTC).isoformat(),
                classification_rank,
                json.dumps(sorted(groups)),
            ),
        )

    def clear_failures(self, source: str) -> None:
        self._db.execute("DELETE FROM failures WHERE source = ?", (source,))

    def failures(self) -> list[FailureEntry]:
        return [
            FailureEntry(
                source=row["source"],
                source_uri=row["source_uri"],
                reason=row["reason"],
                failed_at=datetime.fromisoformat(row["failed_at"]),
                classification_rank=_optional(row, "classification_rank"),
                groups=tuple(json.loads(_optional(row, "groups") or "[]")),
            )
            for row in self._db.execute("SELECT * FROM failures ORDER BY source_uri")
        ]


def _optional(row: sqlite3.Row, column: str) -> Any:
    """A column that manifests opened read-only from before it existed lack."""
    return row[column] if column in row.keys() else None  # noqa: SIM118 (Row: values)


def _entry(row: sqlite3.Row) -> DocumentEntry:
    return DocumentEntry(
        doc_id=row["doc_id"],
        source=row["source"],
        source_uri=row["source_uri"],
        relative_path=row["relative_path"],
        title=row["title"],
        doc_type=row["doc_type"],
        content_hash=row["content_hash"],
        label_fingerprint=row["label_fingerprint"],
        classification=row["classification"],
        classification_rank=row["classification_rank"],
        groups=tuple(json.loads(row["groups"])),
        labelled=bool(row["labelled"]),
        banner_level=row["banner_level"],
        chunk_ids=tuple(json.loads(row["chunk_ids"])),
        modified_at=datetime.fromisoformat(row["modified_at"]) if row["modified_at"] else None,
        refreshed_at=datetime.fromisoformat(row["refreshed_at"]),
        # Read-only opens of manifests older than the column have no such key.
        chunk_recipe=row["chunk_recipe"] if "chunk_recipe" in row.keys() else None,  # noqa: SIM118
        sensitivity=row["sensitivity"] if "sensitivity" in row.keys() else None,  # noqa: SIM118
    )
