"""Split a parsed document into chunks whose text is an exact span of the document text.

Structure first: elements are grouped into sections by title elements; small consecutive
sections share a chunk, a section that does not fit is split by llama-index's
``SentenceSplitter`` (paragraphs, then sentences, then words — never mid-word), and a table that
fits ``chunk_size_tokens`` stays one chunk. Each chunk's section and page are those of the
element it starts in.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import ModelError, ParseError
from ingestion.models import ChunkDraft, ParsedDocument

Tokenizer = Callable[[str], Sequence[int]]


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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(Path(model_path)), use_fast=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load tokenizer from {model_path}: {exc}") from exc

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False, verbose=False))

    return encode


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


def chunk_document(
    doc: ParsedDocument,
    chunk_size_tokens: int,
    chunk_overlap_tokens: int,
    tokenizer: Tokenizer | None = None,
) -> list[ChunkDraft]:
    """Chunks of at most ``chunk_size_tokens`` tokens (by ``tokenizer``; llama-index's default
    when None), overlapping by up to ``chunk_overlap_tokens`` inside long sections.

    ``text == doc.text[char_start:char_end]`` holds for every chunk. Deterministic.
    """
    if chunk_size_tokens < 1 or not 0 <= chunk_overlap_tokens < chunk_size_tokens:
        raise ValueError("need chunk_size_tokens >= 1 and 0 <= overlap < chunk_size_tokens")
    from llama_index.core.node_parser import SentenceSplitter

    count = tokenizer or _default_tokenizer()

    def tokens(start: int, end: int) -> int:
        return len(count(doc.text[start:end]))

    prose = SentenceSplitter(
        chunk_size=chunk_size_tokens,
        chunk_overlap=chunk_overlap_tokens,
        tokenizer=count,
        paragraph_separator="\n\n",
    )
    # Table rows are lines; split a large table between rows, without overlap.
    rows = SentenceSplitter(
        chunk_size=chunk_size_tokens, chunk_overlap=0, tokenizer=count, paragraph_separator="\n"
    )
    spans = _Spans(doc.text)
    out: list[tuple[int, int]] = []

    pending: tuple[int, int] | None = None  # consecutive small sections packed together
    for section in _sections(doc):
        if tokens(section.start, section.end) <= chunk_size_tokens:
            if pending is not None and tokens(pending[0], section.end) <= chunk_size_tokens:
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
            if tokens(element.char_start, element.char_end) <= chunk_size_tokens:
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
                embedding_text=_embedding_text(doc.title, section_title, text),
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


def _embedding_text(title: str, section: str | None, text: str) -> str:
    context = [title]
    if section and section != title and not text.startswith(section):
        context.append(section)
    return " / ".join(context) + "\n" + text
