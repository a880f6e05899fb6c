"""Where documents come from. A :class:`Source` lists documents and reads their bytes; the
pipeline parses, labels, chunks and writes them."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, runtime_checkable

from citewell.core.errors import (
    CitewellError,
    ConfigurationError,
    InputRejectedError,
    LabelError,
    SourceUnavailableError,
)
from citewell.core.logging import log_event
from citewell.core.models import AccessLabel, ClassificationScheme, DocumentFailure, Frozen
from citewell.ingestion.labels import (
    LABELS_FILE,
    MISSPELT_SUFFIX,
    SIDECAR_SUFFIX,
    LabelRules,
    combine_resolved,
    refused_label,
)
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

    def labels_at(
        self,
        relative_path: str,
        indexed_hash: str | None = None,
        indexed_label: AccessLabel | None = None,
    ) -> ResolvedLabel:
        """The label the source's labels give ``relative_path`` now, whether or not it was
        listed (for an indexed document refused at discovery, whose kept version must follow
        its current label). ``indexed_hash`` and ``indexed_label``: the kept version's content
        hash and label, for labels that belong to an object's content (its tags), not its path."""
        ...


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_labels_file_name(name: str) -> bool:
    """Any spelling of the root labels file: ``citewell.labels.yaml`` / ``.yml``, any case."""
    return name.casefold() in (LABELS_FILE, LABELS_FILE.replace(SIDECAR_SUFFIX, MISSPELT_SUFFIX))


def _is_utf8(name: str) -> bool:
    """Whether ``name`` (decoded from the file system, undecodable bytes as surrogates) is text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
            relative = path.relative_to(self._root).as_posix()
            # A name that is not UTF-8 cannot be stored as a path: such a file has only its URI.
            known = relative if _is_utf8(relative) else None
            if entry.is_symlink():
                # Following a link could expose files outside the folder that was labelled.
                rejected.append(
                    DocumentFailure(
                        source_uri=path.as_uri(),
                        reason="symlink not followed",
                        relative_path=known,
                    )
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
            if _is_labels_file_name(entry.name) and entry.name != LABELS_FILE:
                # Another spelling (".yml", another case) would be just as silently ignored.
                raise LabelError(
                    f"{path}: the labels file must be named {LABELS_FILE}, at the source "
                    f"folder's root ({self._root / LABELS_FILE})"
                )
            if _is_label_file(entry.name):
                continue
            if not entry.is_file(follow_symlinks=False):
                # A FIFO would block the reader, a socket or device is no document: reported,
                # so that a file replaced by one is not taken for a deleted document unseen.
                rejected.append(
                    DocumentFailure(
                        source_uri=path.as_uri(),
                        reason="not a regular file (a FIFO, socket or device); not read",
                        relative_path=known,
                    )
                )
                continue
            if known is None:
                # The name (or a folder's) holds bytes that are not UTF-8 (a Latin-1 name from an
                # old share): it cannot be stored, shown or cited as a path, so it is reported.
                rejected.append(
                    DocumentFailure(
                        source_uri=path.as_uri(),
                        reason="file name is not valid UTF-8; rename the file to index it",
                    )
                )
                continue
            try:
                self._check_inside(path)
                stat = entry.stat(follow_symlinks=False)
            except (InputRejectedError, OSError) as exc:
                rejected.append(
                    DocumentFailure(source_uri=path.as_uri(), reason=str(exc), relative_path=known)
                )
                continue
            if stat.st_size > self._max_file_bytes:
                rejected.append(
                    DocumentFailure(
                        source_uri=path.as_uri(),
                        reason=f"file too large ({stat.st_size} bytes > {self._max_file_bytes})",
                        relative_path=known,
                    )
                )
                continue
            items.append(
                SourceItem(
                    source=self._name,
                    source_uri=path.as_uri(),
                    relative_path=relative,
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

    def labels_at(
        self,
        relative_path: str,
        indexed_hash: str | None = None,
        indexed_label: AccessLabel | None = None,
    ) -> ResolvedLabel:
        # Rules and sidecars label the path: they hold for whatever version is indexed.
        return self._labels.resolve(relative_path, self._root / relative_path)


# --- S3-compatible object stores --------------------------------------------------------------
ObjectLabelSource = Literal["tags", "metadata"]
_S3_URI = re.compile(r"^s3://(?P<bucket>[A-Za-z0-9][A-Za-z0-9.\-_]{1,254})(?:/(?P<prefix>.*))?$")


@dataclass(frozen=True)
class S3Access:
    """How to reach a store when not through the standard AWS chain: a ``boto3`` session the
    caller built (the DAGs build one from an Airflow connection) and the endpoint it names."""

    session: Any | None = None
    endpoint_url: str | None = None


class S3Location(Frozen):
    """``s3://bucket/prefix``. The prefix is a folder: ``docs`` means ``docs/``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        match = _S3_URI.match(uri.strip())
        if match is None:
            raise ConfigurationError(f"not an s3://bucket/prefix URI: {uri!r}")
        return cls(bucket=match.group("bucket"), prefix=match.group("prefix") or "")

    @property
    def key_prefix(self) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"


def _safe_relative(relative: str) -> bool:
    """A key below the prefix that maps onto a relative path without surprises: no empty, '.'
    or '..' components, no backslashes or control characters (label globs and the label
    mirror folder must mean what they say)."""
    if not relative or relative.startswith("/") or "\\" in relative:
        return False
    if any(ord(c) < 32 for c in relative):
        return False
    return all(part not in ("", ".", "..") for part in relative.split("/"))


class S3Source:
    """Every object under ``s3://bucket/prefix`` of an S3-compatible store, sorted by key.

    Credentials come from the standard AWS chain (environment, profile, instance role) or a
    ``boto3`` session the caller passes in (the DAGs build one from an Airflow connection);
    never from Citewell's files. The endpoint is ``endpoint_url``, else ``AWS_ENDPOINT_URL`` /
    ``AWS_ENDPOINT_URL_S3`` as the AWS tools read them. Requests are retried with backoff
    (botocore's ``standard`` retry mode).

    Labels work as in folders: ``citewell.labels.yaml`` at the prefix root and
    ``<key>.labels.yaml`` sidecars, read into a private mirror folder at discovery. Object tags
    and user metadata (``classification``, ``groups``) count only when listed in
    ``object_labels``; they combine with the rest, most restrictive wins.

    A listing that fails raises :class:`SourceUnavailableError` (nothing is withdrawn); a
    download that fails is that document's failure. Objects over ``max_file_bytes`` are
    refused at listing time and downloads are capped, streamed to a temporary file.
    """

    def __init__(
        self,
        location: S3Location,
        *,
        scheme: ClassificationScheme,
        max_file_bytes: int,
        name: str | None = None,
        session: Any | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        object_labels: frozenset[ObjectLabelSource] = frozenset(),
        default_groups: frozenset[str] = frozenset(),
        max_attempts: int = 5,
        timeout_s: float = 60.0,
        page_size: int = 1000,
    ) -> None:
        if max_file_bytes < 1:
            raise ConfigurationError("max_file_bytes must be positive")
        import boto3
        from botocore.config import Config

        self._location = location
        self._scheme = scheme
        self._max_file_bytes = max_file_bytes
        self._name = name or location.bucket
        self._object_labels = object_labels
        self._default_groups = default_groups
        self._page_size = page_size
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
        )
        session = session or boto3.session.Session()
        self._client = session.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
        )
        self._mirror = Path(tempfile.mkdtemp(prefix="citewell-s3-labels-"))
        self._labels = LabelRules(scheme)
        # _document_key of a document -> why its sidecar could not be read.
        self._unreadable_sidecars: dict[str, str] = {}

    # --- Source protocol -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def location(self) -> S3Location:
        return self._location

    @property
    def labels(self) -> LabelRules:
        """The label rules read at the last :meth:`discover`."""
        return self._labels

    def close(self) -> None:
        shutil.rmtree(self._mirror, ignore_errors=True)

    def __enter__(self) -> S3Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _list(self) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        objects: list[dict[str, Any]] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self._location.bucket,
                Prefix=self._location.key_prefix,
                PaginationConfig={"PageSize": self._page_size},
            )
            for page in pages:
                objects.extend(page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise SourceUnavailableError(
                f"cannot list {self._location.uri}: {_s3_reason(exc)}"
            ) from exc
        return objects

    def discover(self) -> DiscoveryResult:
        """List the prefix (every page), read the labels files, and return the documents."""
        objects = self._list()
        prefix = self._location.key_prefix
        items: list[SourceItem] = []
        rejected: list[DocumentFailure] = []
        label_files: list[tuple[str, str]] = []  # (key, relative path)
        for obj in sorted(objects, key=lambda o: str(o["Key"])):
            key = str(obj["Key"])
            relative = key[len(prefix) :]
            uri = f"s3://{self._location.bucket}/{key}"
            if key.endswith("/") and int(obj.get("Size", 0)) == 0:
                continue  # a "folder" placeholder
            if any(_is_hidden(part) for part in relative.split("/")):
                continue
            if not _safe_relative(relative):
                rejected.append(DocumentFailure(source_uri=uri, reason="unsafe object key"))
                continue
            leaf = relative.rsplit("/", 1)[-1]
            if leaf == LABELS_FILE and relative != LABELS_FILE:
                # As in folders: a nested labels file would be silently ignored and its
                # documents labelled by the root's (possibly lower) rules.
                raise LabelError(
                    f"{uri}: labels files are read only at the prefix root "
                    f"({self._location.uri}{LABELS_FILE}); write these rules there as "
                    f"'{relative.rsplit('/', 1)[0]}/**' rules"
                )
            if _is_labels_file_name(leaf) and relative != LABELS_FILE:
                # Another spelling (".yml", another case) would be silently ignored too.
                raise LabelError(
                    f"{uri}: the labels file must be named {LABELS_FILE}, at the prefix root "
                    f"({self._location.uri}{LABELS_FILE})"
                )
            if _is_label_file(leaf):
                # Misspelt ones too (".labels.yml", ".LABELS.YAML"): the label rules refuse
                # them by name, as in folders, instead of ingesting them as documents.
                label_files.append((key, relative))
                continue
            size = int(obj.get("Size", 0))
            if size > self._max_file_bytes:
                rejected.append(
                    DocumentFailure(
                        source_uri=uri,
                        reason=f"file too large ({size} bytes > {self._max_file_bytes})",
                        relative_path=relative,
                    )
                )
                continue
            suffix = PurePosixPath(leaf).suffix.lower().lstrip(".")
            items.append(
                SourceItem(
                    source=self._name,
                    source_uri=uri,
                    relative_path=relative,
                    path=Path(relative),
                    size=size,
                    modified_at=_utc(obj.get("LastModified")),
                    doc_type=suffix or "txt",
                    etag=str(obj.get("ETag", "")).strip('"') or None,
                )
            )
        self._load_labels(label_files, {item.relative_path for item in items})
        log_event(
            logger,
            logging.INFO,
            "source.discovered",
            source=self._name,
            items=len(items),
            rejected=len(rejected),
        )
        return DiscoveryResult(items=tuple(items), rejected=tuple(rejected))

    def _load_labels(self, label_files: list[tuple[str, str]], documents: set[str]) -> None:
        """Mirror the labels file and sidecars into a private folder and read them there, with
        the same code (and the same errors, naming the object) as folders. The root labels
        file decides for every document: unreadable, it fails the run. An unreadable sidecar
        (gone since the listing, access denied, too large) fails only its document's labels."""
        shutil.rmtree(self._mirror, ignore_errors=True)
        self._mirror.mkdir(parents=True)
        self._unreadable_sidecars = {}
        for key, relative in label_files:
            root_file = "/" not in relative and relative.casefold().startswith("citewell.labels.")
            try:
                data = self._get_small(key)
            except (SourceUnavailableError, LabelError) as exc:
                if root_file:
                    raise
                self._unreadable_sidecars[_sidecar_document(relative)] = str(exc)
                continue
            target = self._mirror / relative
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            except OSError as exc:
                # A key no local file can stand for (a name over 255 bytes, a key that is also
                # a "folder" of other keys): that document's labels cannot be read.
                reason = (
                    f"cannot read labels object s3://{self._location.bucket}/{key}: "
                    f"{exc.strerror or type(exc).__name__}"
                )
                if root_file:
                    raise SourceUnavailableError(reason) from exc
                self._unreadable_sidecars[_sidecar_document(relative)] = reason
                continue
            document = relative.removesuffix(SIDECAR_SUFFIX)
            if document != relative and document in documents:
                # An empty stand-in for the listed document, as a folder would hold it: a
                # sidecar of "report.md" is then its own, not a misspelt one of "Report.md".
                with contextlib.suppress(OSError):  # a key that is also a "folder": no stand-in
                    (self._mirror / document).touch()
        try:
            self._labels = LabelRules.load(self._mirror, self._scheme)
        except LabelError as exc:
            # Name the object, not the private mirror path.
            raise LabelError(
                str(exc).replace(str(self._mirror), self._location.uri.rstrip("/"))
            ) from exc

    def _get_small(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        limit = 1024 * 1024  # labels files are small; anything bigger is a mistake or an attack
        try:
            body = self._client.get_object(Bucket=self._location.bucket, Key=key)["Body"]
            data = body.read(limit + 1)
        except (BotoCoreError, ClientError) as exc:
            # Labels decide who sees what: without them nothing may be refreshed.
            raise SourceUnavailableError(
                f"cannot read labels object s3://{self._location.bucket}/{key}: {_s3_reason(exc)}"
            ) from exc
        if len(data) > limit:
            raise LabelError(f"s3://{self._location.bucket}/{key}: labels file too large")
        return bytes(data)

    def item_for(self, relative_path: str) -> SourceItem:
        """One object as :meth:`discover` would list it (HEAD, no listing), for work on a batch
        of known keys. Raises ``InputRejectedError`` when it is gone, unsafe or too large."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not _safe_relative(relative_path):
            raise InputRejectedError("unsafe object key")
        key = self._location.key_prefix + relative_path
        try:
            head = self._client.head_object(Bucket=self._location.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise InputRejectedError(f"cannot read object: {_s3_reason(exc)}") from exc
        size = int(head.get("ContentLength", 0))
        if size > self._max_file_bytes:
            raise InputRejectedError(f"file too large ({size} bytes > {self._max_file_bytes})")
        leaf = relative_path.rsplit("/", 1)[-1]
        return SourceItem(
            source=self._name,
            source_uri=f"s3://{self._location.bucket}/{key}",
            relative_path=relative_path,
            path=Path(relative_path),
            size=size,
            modified_at=_utc(head.get("LastModified")),
            doc_type=PurePosixPath(leaf).suffix.lower().lstrip(".") or "txt",
            etag=str(head.get("ETag", "")).strip('"') or None,
        )

    def download(self, item: SourceItem, target: Path) -> None:
        """Stream the object to ``target``; the object must still be the one listed (same ETag)
        and within the size limit. Raises ``InputRejectedError`` otherwise."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._location.key_prefix + item.relative_path
        arguments: dict[str, Any] = {"Bucket": self._location.bucket, "Key": key}
        if item.etag:
            arguments["IfMatch"] = f'"{item.etag}"'
        written = 0
        try:
            body = self._client.get_object(**arguments)["Body"]
            with target.open("wb") as handle:
                for chunk in body.iter_chunks(1024 * 1024):
                    written += len(chunk)
                    if written > self._max_file_bytes:
                        raise InputRejectedError(f"file too large (> {self._max_file_bytes} bytes)")
                    handle.write(chunk)
        except (BotoCoreError, ClientError) as exc:
            raise InputRejectedError(f"download failed: {_s3_reason(exc)}") from exc

    def read_bytes(self, item: SourceItem) -> bytes:
        with tempfile.TemporaryDirectory(prefix="citewell-s3-") as folder:
            target = Path(folder) / "object"
            self.download(item, target)
            return target.read_bytes()

    def labels_for(self, item: SourceItem, parsed_text: str | None) -> ResolvedLabel:
        """The listed object's labels; with tags or metadata trusted, raises
        ``InputRejectedError`` when the object was replaced since the listing (the new
        object's tags do not label the listed content)."""
        return self._resolve(item.relative_path, parsed_text, item.etag)

    def labels_at(
        self,
        relative_path: str,
        indexed_hash: str | None = None,
        indexed_label: AccessLabel | None = None,
    ) -> ResolvedLabel:
        """Labels file, sidecar and (when trusted) the object's tags and metadata as they are
        now; raises ``InputRejectedError`` when the object's labels cannot be read. When tags
        or metadata are trusted and the object is no longer the version indexed as
        ``indexed_hash``, they label the replacement, not the text kept in the index: they may
        raise the kept version's ``indexed_label``, never lower it."""
        if not _safe_relative(relative_path):
            raise InputRejectedError("unsafe object key")
        resolved = self._resolve(relative_path, None)
        if not self._object_labels or indexed_hash is None or not resolved.labelled:
            return resolved
        if self._current_hash(relative_path) == indexed_hash:
            return resolved
        if indexed_label is None:
            raise InputRejectedError(
                "object replaced since its indexed version; its tags and metadata do not "
                "label the indexed text"
            )
        return combine_resolved(
            resolved, indexed_label, "indexed-version", self._scheme, self._default_groups
        )

    def _current_hash(self, relative_path: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._location.key_prefix + relative_path
        try:
            head = self._client.head_object(Bucket=self._location.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise InputRejectedError(f"cannot read object labels: {_s3_reason(exc)}") from exc
        etag = str(head.get("ETag", "")).strip('"') or None
        size = int(head.get("ContentLength", 0))
        return _content_hash(etag, size, _utc(head.get("LastModified")))

    def _resolve(
        self, relative_path: str, parsed_text: str | None, etag: str | None = None
    ) -> ResolvedLabel:
        unreadable = self._unreadable_sidecars.get(_document_key(relative_path))
        if unreadable is not None:
            raise LabelError(f"labels sidecar unreadable: {unreadable}")
        try:
            base = self._labels.resolve(relative_path, self._mirror / relative_path, parsed_text)
        except LabelError as exc:
            # Name the object, not the private mirror path.
            raise LabelError(
                str(exc).replace(str(self._mirror), self._location.uri.rstrip("/"))
            ) from exc
        if not self._object_labels:
            return base
        return self._with_object_labels(relative_path, base, etag)

    def _with_object_labels(
        self, relative_path: str, base: ResolvedLabel, etag: str | None
    ) -> ResolvedLabel:
        """``base`` with the object's trusted tags and metadata; when ``etag`` is given, they
        must be those of that object (tags read first, then a conditional HEAD: an object
        replaced since the listing is refused, not labelled by its replacement's tags)."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._location.key_prefix + relative_path
        found: list[tuple[str, list[tuple[str, str]]]] = []
        try:
            if "tags" in self._object_labels:
                tags = self._client.get_object_tagging(Bucket=self._location.bucket, Key=key)
                found.append(("tags", [(t["Key"], t["Value"]) for t in tags["TagSet"]]))
            if "metadata" in self._object_labels or etag:
                arguments: dict[str, Any] = {"Bucket": self._location.bucket, "Key": key}
                if etag:
                    arguments["IfMatch"] = f'"{etag}"'
                head = self._client.head_object(**arguments)
                if "metadata" in self._object_labels:
                    found.append(("metadata", list(head["Metadata"].items())))
        except ClientError as exc:
            if _http_status(exc) == 412:
                raise InputRejectedError(
                    "object changed since it was listed; its labels are read again on the "
                    "next refresh"
                ) from exc
            raise InputRejectedError(f"cannot read object labels: {_s3_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise InputRejectedError(f"cannot read object labels: {_s3_reason(exc)}") from exc
        resolved = base
        for where, pairs in found:
            values: dict[str, str] = {}
            for name, value in pairs:
                folded = name.lower()
                # Tag keys are case-sensitive: "classification" and "Classification" are two
                # tags; when they disagree, neither may decide who reads the object.
                if values.get(folded, value) != value:
                    return refused_label(
                        f"object-{where}: conflicting {folded!r} values", self._scheme
                    )
                values[folded] = value
            level = values.get("classification", "").strip().lower() or None
            raw_groups = values.get("groups")
            groups = (
                frozenset(g for g in re.split(r"[\s,+]+", raw_groups) if g)
                if raw_groups is not None
                else None
            )
            if level is None and groups is None:
                continue
            if level is not None:
                try:
                    self._scheme.rank(level)
                except CitewellError:
                    return refused_label(f"object-{where}: unknown level {level!r}", self._scheme)
            if level is None or groups is None:
                if not resolved.labelled:
                    continue  # half a label: rules and sidecars must supply the rest
                level = level or resolved.label.classification
                groups = groups if groups is not None else resolved.label.groups
            label = AccessLabel(classification=level, groups=groups)
            resolved = combine_resolved(
                resolved, label, f"object-{where}", self._scheme, self._default_groups
            )
        return resolved


def object_content_hash(item: SourceItem) -> str:
    """What stands for an object's content without downloading it: its ETag (an MD5 or a
    multipart digest; it changes whenever the bytes do) and size, from the listing. A store
    that lists no ETag: its modification time, which every rewrite changes (size alone would
    call a same-size rewrite unchanged)."""
    return _content_hash(item.etag, item.size, item.modified_at)


def _content_hash(etag: str | None, size: int, modified: datetime) -> str:
    material = f"s3-etag:{etag}|{size}" if etag else f"s3-modified:{modified.isoformat()}|{size}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _document_key(relative: str) -> str:
    """A document's relative path as sidecars are matched to it: any case, any Unicode form
    (a sidecar that differs so is a misspelt one, which refuses its document)."""
    return unicodedata.normalize("NFC", relative).casefold()


def _sidecar_document(relative: str) -> str:
    """The :func:`_document_key` of the document a sidecar object labels."""
    folded = _document_key(relative)
    for suffix in (SIDECAR_SUFFIX, MISSPELT_SUFFIX):
        if folded.endswith(suffix):
            return folded[: -len(suffix)]
    return folded


def _s3_reason(exc: BaseException) -> str:
    """A short reason from a botocore error: the error code (never request signatures or
    credentials)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = error.get("Code") or "error"
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{code} (HTTP {status})" if status else str(code)
    return type(exc).__name__


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(0, UTC)
