"""Split a parsed document into chunks whose text is an exact span of the document text.

Structure first: elements are grouped into sections by title elements; small consecutive
sections share a chunk, a section that does not fit is split by llama-index's
``SentenceSplitter`` (paragraphs, then sentences, then words — never mid-word), and a table that
fits ``chunk_size_tokens`` stays one chunk. Each chunk's section and page are those of the
element it starts in.

Contextual headers: most chunks of a long document never name it ("Services revenue rose 8%" —
whose, and when?). Each chunk therefore carries a short header — the document title, the file
name when it says something the title does not ("2023 Q3 AAPL"), and the nearest section
heading — that is embedded and BM25-indexed with it. The header is capped at
:data:`HEADER_MAX_TOKENS` and counted in the token budget, so header plus text never exceed the
embedder's sequence length (it would silently cut the text's tail).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from citewell.core.errors import InvalidArgumentError, ModelError, ParseError
from citewell.ingestion.models import ChunkDraft, ParsedDocument
from citewell.ingestion.parsing import stem_title, usable_title

Tokenizer = Callable[[str], Sequence[int]]

# Bump whenever chunk boundaries, headers or title choice change for the same settings: the
# recipe fingerprint then differs and the next refresh re-chunks every document.
CHUNK_RECIPE_VERSION = 2
HEADER_MAX_TOKENS = 40
_SPECIAL_TOKENS = 2  # [CLS] and [SEP], added by the embedder around every text
_HEADER_SEPARATOR = " | "
_LETTER = re.compile(r"[^\W\d_]")  # a heading of only "$" or "☑" says nothing


def chunk_recipe(
    chunk_size_tokens: int,
    chunk_overlap_tokens: int,
    context: bool,
    max_sequence_tokens: int | None,
) -> str:
    """Fingerprint of everything that decides chunk texts and headers besides the document and
    the embedding model (the index refuses another model). Stored with each index version."""
    material = {
        "version": CHUNK_RECIPE_VERSION,
        "chunk_size_tokens": chunk_size_tokens,
        "chunk_overlap_tokens": chunk_overlap_tokens,
        "context": context,
        "header_max_tokens": HEADER_MAX_TOKENS if context else 0,
        "max_sequence_tokens": max_sequence_tokens,
    }
    blob = json.dumps(material, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class _Section:
    title: str | None
    start: int
    end: int
    element_indexes: tuple[int, ...]


@lru_cache(maxsize=4)
def embedding_tokenizer(model_path: str) -> Tokenizer:
    """Token counter of a Hugging Face model (e.g. the bundled MiniLM), so chunk sizes match
    what the embedder sees. Loads offline; cached per path."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            str(Path(model_path)), use_fast=True, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load tokenizer from {model_path}: {exc}") from exc
    if not tokenizer.is_fast:
        slow = tokenizer

        def encode_slow(text: str) -> list[int]:
            return list(slow.encode(text, add_special_tokens=False, verbose=False))

        return encode_slow
    # The Rust tokenizer itself, without transformers' per-call wrapping (a fifth of the
    # chunking time on the SEC filings); truncation and padding off, as transformers' encode
    # turns them off, so the ids are the same.
    from tokenizers import Tokenizer as RustTokenizer

    backend = RustTokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()

    def encode(text: str) -> list[int]:
        return list(backend.encode(text, add_special_tokens=False).ids)

    return encode


def _remembered(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer`` with its answers kept for one document. llama-index's ``SentenceSplitter``
    counts every piece it cannot keep whole and then, recursing into it, counts the same text
    again; with the sections counted here first, each text of a long section was tokenized
    three to four times (most of the chunking time on the SEC filings)."""
    seen: dict[str, Sequence[int]] = {}

    def count(text: str) -> Sequence[int]:
        tokens = seen.get(text)
        if tokens is None:
            tokens = seen[text] = tokenizer(text)
        return tokens

    return count


def _default_tokenizer() -> Tokenizer:
    from llama_index.core.utils import get_tokenizer

    tokenizer: Tokenizer = get_tokenizer()
    return tokenizer


def _sections(doc: ParsedDocument) -> list[_Section]:
    sections: list[_Section] = []
    current: list[int] = []
    title: str | None = None
    for index, element in enumerate(doc.elements):
        if element.kind == "title" and current:
            sections.append(_make_section(doc, title, current))
            current = []
        if element.kind == "title":
            title = element.text
        current.append(index)
    if current:
        sections.append(_make_section(doc, title, current))
    return sections


def _make_section(doc: ParsedDocument, title: str | None, indexes: list[int]) -> _Section:
    first, last = doc.elements[indexes[0]], doc.elements[indexes[-1]]
    return _Section(title, first.char_start, last.char_end, tuple(indexes))


class _Spans:
    """Maps chunk strings produced by a splitter back to exact spans of the document."""

    def __init__(self, text: str) -> None:
        self._text = text

    def locate(self, pieces: Sequence[str], start: int, end: int) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        cursor = start
        for piece in pieces:
            piece = piece.strip()
            if not piece:
                continue
            found = self._text.find(piece, cursor, end)
            if found == -1:
                # The splitter normalised whitespace; fall back to the words it kept.
                found, piece_end = self._locate_words(piece, cursor, end)
            else:
                piece_end = found + len(piece)
            spans.append((found, piece_end))
            cursor = found + 1
        return spans

    def _locate_words(self, piece: str, cursor: int, end: int) -> tuple[int, int]:
        words = piece.split()
        first = self._text.find(words[0], cursor, end)
        last = self._text.find(words[-1], max(first, 0), end)
        if first == -1 or last == -1:
            raise ParseError("chunking failed: chunk text is not a span of the document")
        return first, last + len(words[-1])


class _Headers:
    """Contextual headers of one document's chunks, capped at ``max_tokens`` tokens."""

    def __init__(
        self, doc: ParsedDocument, file_name: str | None, count: Tokenizer, max_tokens: int
    ) -> None:
        self._title = " ".join(doc.title.split())
        self._count = count
        self._max_tokens = max_tokens
        self._stem: str | None = None
        if file_name:
            stem = stem_title(file_name)
            # Only a file name that says something the title does not: "2023 Q3 AAPL" next to
            # "Form 10-Q for Apple Inc.", not "a1b2c3" or the title again.
            if usable_title(stem) and stem.lower() not in self._title.lower():
                self._stem = stem
        self._cache: dict[tuple[str, ...], str] = {}

    def parts(self, section: str | None) -> tuple[str, ...]:
        parts = [self._title] if self._title else []
        if self._stem:
            parts.append(self._stem)
        heading = " ".join((section or "").split())
        if heading and _LETTER.search(heading):
            known = {part.lower() for part in parts}
            if heading.lower() not in known:
                parts.append(heading)
        return tuple(parts)

    def header(self, section: str | None, text: str) -> str:
        """The header for a chunk starting in ``section``, without the parts ``text`` already
        starts with (a section's first chunk begins with its heading)."""
        parts = tuple(p for p in self.parts(section) if not text.startswith(p))
        return self._capped(parts)

    def max_tokens(self, sections: Sequence[str | None]) -> int:
        """Tokens of the longest header any chunk of these sections can get."""
        return max((len(self._count(self._capped(self.parts(s)))) for s in sections), default=0)

    def _capped(self, parts: tuple[str, ...]) -> str:
        cached = self._cache.get(parts)
        if cached is not None:
            return cached
        header = _HEADER_SEPARATOR.join(parts)
        if header and len(self._count(header)) > self._max_tokens:
            # Longest word prefix that fits: the title survives, the section goes first.
            words = header.split(" ")
            low, high = 0, len(words)
            while low < high:
                mid = (low + high + 1) // 2
                if len(self._count(" ".join(words[:mid]))) <= self._max_tokens:
                    low = mid
                else:
                    high = mid - 1
            header = " ".join(words[:low]).rstrip(" |")
        self._cache[parts] = header
        return header


def chunk_document(
    doc: ParsedDocument,
    chunk_size_tokens: int,
    chunk_overlap_tokens: int,
    tokenizer: Tokenizer | None = None,
    *,
    context: bool = True,
    file_name: str | None = None,
    max_sequence_tokens: int | None = None,
) -> list[ChunkDraft]:
    """Chunks of at most ``chunk_size_tokens`` tokens (by ``tokenizer``; llama-index's default
    when None), overlapping by up to ``chunk_overlap_tokens`` inside long sections.

    With ``context`` each chunk gets a contextual header (see the module docstring; ``file_name``
    is the file's stem, None for documents without one). With ``max_sequence_tokens`` (the
    embedder's limit) chunks shrink so that header, text and special tokens fit in it.

    ``text == doc.text[char_start:char_end]`` holds for every chunk. Deterministic.
    """
    if chunk_size_tokens < 1 or not 0 <= chunk_overlap_tokens < chunk_size_tokens:
        raise InvalidArgumentError(
            "need chunk_size_tokens >= 1 and 0 <= overlap < chunk_size_tokens"
        )
    from llama_index.core.node_parser import SentenceSplitter

    count = _remembered(tokenizer or _default_tokenizer())

    def tokens(start: int, end: int) -> int:
        return len(count(doc.text[start:end]))

    sections = _sections(doc)
    header_cap = HEADER_MAX_TOKENS
    if max_sequence_tokens is not None:
        # A small model limit must still leave most of the window to the text itself.
        header_cap = min(header_cap, max(0, (max_sequence_tokens - _SPECIAL_TOKENS) // 4))
    headers = _Headers(doc, file_name, count, header_cap) if context else None
    size = chunk_size_tokens
    if max_sequence_tokens is not None:
        reserved = _SPECIAL_TOKENS
        if headers is not None:
            # +1: a header's last word and the text's first are counted apart, not merged.
            reserved += headers.max_tokens([s.title for s in sections]) + 1
        size = max(1, min(size, max_sequence_tokens - reserved))
    overlap = min(chunk_overlap_tokens, size // 2)

    prose = SentenceSplitter(
        chunk_size=size,
        chunk_overlap=overlap,
        tokenizer=count,
        paragraph_separator="\n\n",
    )
    # Table rows are lines; split a large table between rows, without overlap.
    rows = SentenceSplitter(
        chunk_size=size, chunk_overlap=0, tokenizer=count, paragraph_separator="\n"
    )
    spans = _Spans(doc.text)
    out: list[tuple[int, int]] = []

    pending: tuple[int, int] | None = None  # consecutive small sections packed together
    for section in sections:
        if tokens(section.start, section.end) <= size:
            if pending is not None and tokens(pending[0], section.end) <= size:
                pending = (pending[0], section.end)
                continue
            if pending is not None:
                out.append(pending)
            pending = (section.start, section.end)
            continue
        if pending is not None:
            out.append(pending)
            pending = None
        run_start: int | None = None
        run_end = 0
        for index in section.element_indexes:
            element = doc.elements[index]
            if element.kind != "table":
                run_start = element.char_start if run_start is None else run_start
                run_end = element.char_end
                continue
            if run_start is not None:
                pieces = prose.split_text(doc.text[run_start:run_end])
                out.extend(spans.locate(pieces, run_start, run_end))
                run_start = None
            if tokens(element.char_start, element.char_end) <= size:
                out.append((element.char_start, element.char_end))
            else:
                pieces = rows.split_text(element.text)
                out.extend(spans.locate(pieces, element.char_start, element.char_end))
        if run_start is not None:
            pieces = prose.split_text(doc.text[run_start:run_end])
            out.extend(spans.locate(pieces, run_start, run_end))
    if pending is not None:
        out.append(pending)

    starts = [e.char_start for e in doc.elements]
    section_of = _section_titles(doc)
    drafts: list[ChunkDraft] = []
    for start, end in out:
        at = max(bisect.bisect_right(starts, start) - 1, 0)
        element = doc.elements[at]
        section_title = section_of[at]
        text = doc.text[start:end]
        drafts.append(
            ChunkDraft(
                chunk_index=len(drafts),
                text=text,
                section=section_title,
                page=element.page,
                char_start=start,
                char_end=end,
                context=headers.header(section_title, text) if headers else "",
            )
        )
    return drafts


def _section_titles(doc: ParsedDocument) -> list[str | None]:
    titles: list[str | None] = []
    current: str | None = None
    for element in doc.elements:
        if element.kind == "title":
            current = element.text
        titles.append(current)
    return titles
