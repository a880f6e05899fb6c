"""Where documents come from. A :class:`Source` lists documents and reads their bytes; the
pipeline parses, labels, chunks and writes them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from citewell.core.errors import ConfigurationError, InputRejectedError, LabelError
from citewell.core.logging import log_event
from citewell.core.models import DocumentFailure
from citewell.ingestion.labels import LABELS_FILE, MISSPELT_SUFFIX, SIDECAR_SUFFIX, LabelRules
from citewell.ingestion.models import DiscoveryResult, ResolvedLabel, SourceItem

logger = logging.getLogger(__name__)


@runtime_checkable
class Source(Protocol):
    """A collection of documents with stable URIs."""

    @property
    def name(self) -> str:
        """The source's configured name (stored on every chunk)."""
        ...

    def discover(self) -> DiscoveryResult:
        """Every document to ingest, in deterministic order, and every path refused (too
        large, symlink, outside the root) with its reason. Reading nothing but metadata."""
        ...

    def read_bytes(self, item: SourceItem) -> bytes:
        """The document's content; raises ``InputRejectedError`` if it is no longer acceptable."""
        ...

    def labels_for(self, item: SourceItem, parsed_text: str | None) -> ResolvedLabel:
        """The document's access label (banners in ``parsed_text`` may raise its level)."""
        ...


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_label_file(name: str) -> bool:
    # Case-insensitive: a "report.pdf.LABELS.YAML" is a (refused) sidecar, never a document.
    folded = name.casefold()
    return folded == LABELS_FILE or folded.endswith((SIDECAR_SUFFIX, MISSPELT_SUFFIX))


class LocalFolderSource:
    """Every regular file under ``root``, recursively, sorted by relative path.

    Skips hidden files and directories and label files. Symlinks and anything resolving
    outside the root are refused, never followed; files over ``max_file_bytes`` are refused.
    Both appear in :attr:`DiscoveryResult.rejected`.
    """

    def __init__(
        self,
        root: Path,
        *,
        labels: LabelRules,
        max_file_bytes: int,
        name: str | None = None,
    ) -> None:
        if max_file_bytes < 1:
            raise ConfigurationError("max_file_bytes must be positive")
        self._root = Path(root).resolve()
        self._labels = labels
        self._max_file_bytes = max_file_bytes
        self._name = name or self._root.name or "root"

    @property
    def name(self) -> str:
        return self._name

    @property
    def root(self) -> Path:
        return self._root

    def iter_items(self) -> Iterator[SourceItem]:
        """Just the accepted items of :meth:`discover`."""
        yield from self.discover().items

    def discover(self) -> DiscoveryResult:
        if not self._root.is_dir():
            raise ConfigurationError(f"source folder does not exist: {self._root}")
        items: list[SourceItem] = []
        rejected: list[DocumentFailure] = []
        self._walk(self._root, items, rejected)
        log_event(
            logger,
            logging.INFO,
            "source.discovered",
            source=self._name,
            items=len(items),
            rejected=len(rejected),
        )
        return DiscoveryResult(items=tuple(items), rejected=tuple(rejected))

    def _walk(
        self, directory: Path, items: list[SourceItem], rejected: list[DocumentFailure]
    ) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            rejected.append(
                DocumentFailure(source_uri=directory.as_uri(), reason=f"unreadable: {exc}")
            )
            return
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                # Following a link could expose files outside the folder that was labelled.
                rejected.append(
                    DocumentFailure(source_uri=path.as_uri(), reason="symlink not followed")
                )
                continue
            if entry.is_dir(follow_symlinks=False):
                self._walk(path, items, rejected)
                continue
            if entry.name == LABELS_FILE and directory != self._root:
                # Only the root's labels file is read: a nested one would be silently ignored
                # and its documents labelled by the root's (possibly lower) rules.
                raise LabelError(
                    f"{path}: labels files are read only at the source folder's root "
                    f"({self._root / LABELS_FILE}); write these rules there as "
                    f"'{path.parent.relative_to(self._root).as_posix()}/**' rules"
                )
            if not entry.is_file(follow_symlinks=False) or _is_label_file(entry.name):
                continue
            try:
                self._check_inside(path)
                stat = entry.stat(follow_symlinks=False)
            except (InputRejectedError, OSError) as exc:
                rejected.append(DocumentFailure(source_uri=path.as_uri(), reason=str(exc)))
                continue
            if stat.st_size > self._max_file_bytes:
                rejected.append(
                    DocumentFailure(
                        source_uri=path.as_uri(),
                        reason=f"file too large ({stat.st_size} bytes > {self._max_file_bytes})",
                    )
                )
                continue
            items.append(
                SourceItem(
                    source=self._name,
                    source_uri=path.as_uri(),
                    relative_path=path.relative_to(self._root).as_posix(),
                    path=path,
                    size=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                    doc_type=path.suffix.lower().lstrip(".") or "txt",
                )
            )

    def _check_inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self._root):
            raise InputRejectedError(f"path resolves outside the source folder: {path}")
        return resolved

    def read_bytes(self, item: SourceItem) -> bytes:
        path = item.path
        if path.is_symlink():
            raise InputRejectedError("symlink not followed")
        self._check_inside(path)
        # Read at most one byte over the limit: the file may have grown since discovery.
        with path.open("rb") as handle:
            data = handle.read(self._max_file_bytes + 1)
        if len(data) > self._max_file_bytes:
            raise InputRejectedError(f"file too large (> {self._max_file_bytes} bytes)")
        return data

    def labels_for(self, item: SourceItem, parsed_text: str | None) -> ResolvedLabel:
        return self._labels.resolve(item.relative_path, item.path, parsed_text)
