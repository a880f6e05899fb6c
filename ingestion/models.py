"""Frozen models passed between the ingestion steps (sources → parsing → chunking → pipeline)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import Field, model_validator

from citewell.core.models import AccessLabel, DocumentFailure, Frozen
from citewell.retrieval.lexical.tokenize import contextual_text


class SourceItem(Frozen):
    """One discovered document, before it is read."""

    source: str  # the source's configured name
    # file:// URI of the absolute path, or s3://bucket/key; stable identity of the document
    source_uri: str
    relative_path: str  # POSIX path relative to the source root (what label globs match)
    path: Path  # the local file; for object stores the key relative to the prefix (no file)
    size: int
    modified_at: datetime
    doc_type: str  # lower-case extension without the dot, e.g. "pdf"
    # Object stores: the object's ETag (and version id), what decides unchanged without a
    # download. None for local files (their bytes are hashed).
    etag: str | None = None


class DiscoveryResult(Frozen):
    """What a source found: items to ingest, in deterministic order, and what it refused
    (too large, symlinks, paths outside the root), each with a reason for the report."""

    items: tuple[SourceItem, ...] = ()
    rejected: tuple[DocumentFailure, ...] = ()


class Element(Frozen):
    """A structural piece of a parsed document. ``[char_start, char_end)`` indexes
    :attr:`ParsedDocument.text`."""

    kind: str  # "title", "text", "list", "table", "email_header", "code", "header", "footer"
    text: str
    page: int | None = None  # PDF page, PPTX slide, XLSX sheet index (1-based)
    char_start: int = Field(ge=0)
    char_end: int = Field(ge=0)


class SourceLines(Frozen):
    """A markup or plain-text file's lines as written (HTML ``<header>``/``<footer>`` lines in
    ``edges``), where banners its parse drops are read. Lines too long to be a banner are kept
    empty, so that every line keeps its place."""

    edges: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()


class ParsedDocument(Frozen):
    """A document's text (elements joined by a blank line) with its structure."""

    title: str
    # No title of its own: ``title`` is the parsed file's name, which a parse cached by content
    # and reused for another file, or made from a download's temporary file, must not keep.
    named_after_file: bool = False
    doc_type: str
    text: str
    elements: tuple[Element, ...]
    pages: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    document_date: datetime | None = None  # the date the document states (ingestion/dates.py)
    # Read from the bytes that were parsed, so a parse taken from the cache (an object's, with
    # no copy at hand) is marked as the file it came from.
    source_lines: SourceLines | None = None

    @model_validator(mode="after")
    def _spans_index_text(self) -> ParsedDocument:
        for element in self.elements:
            if self.text[element.char_start : element.char_end] != element.text:
                raise ValueError(
                    f"element span [{element.char_start}, {element.char_end}) does not match text"
                )
        return self


class ChunkDraft(Frozen):
    """A chunk before embedding. ``text == document.text[char_start:char_end]`` always holds, so a
    citation span can be shown verbatim."""

    chunk_index: int = Field(ge=0)
    text: str
    section: str | None = None  # title of the section the chunk starts in
    page: int | None = None  # page of the element the chunk starts in
    char_start: int = Field(ge=0)
    char_end: int = Field(ge=0)
    # Contextual header (title, file name, section) the chunk's text does not already start
    # with; embedded and BM25-indexed with the text, never shown as part of a citation.
    context: str = ""

    @property
    def embedding_text(self) -> str:
        """What is embedded and BM25-indexed: ``context`` on a line before ``text``."""
        return contextual_text(self.context, self.text)


class ResolvedLabel(Frozen):
    """The access label a document gets, and how it was decided.

    ``labelled=False`` means no default, rule or sidecar applied: the label is fail-closed
    (most restrictive level, no groups) and the pipeline reports the document as unlabelled.
    ``fingerprint`` changes whenever the effective label changes, so the pipeline can detect
    relabels without re-embedding.
    """

    label: AccessLabel
    labelled: bool
    origin: str  # "sidecar:<path>", "rule:<file>:<line>", "default:<file>", or "none"
    banner: str | None = None  # the banner text that raised the level, if any
    fingerprint: str
    # A source said "visible to nobody" (an unknown level in object tags, an unmapped sensitivity
    # label): unlike a document nothing labelled, no other source's label may replace it.
    refused: bool = False
