"""Sentence-level relevance: split retrieved chunks into sentences with their spans and score
each against the question with the retrieval embedder. The best score is the refusal signal,
the ranking feeds the extractive answerer, and the spans become citation quotes."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from citewell.agent.injection import instruction_ranges
from citewell.core.errors import InvalidArgumentError
from citewell.core.models import Chunk, Frozen
from citewell.retrieval.lexical import contextual_text
from citewell.retrieval.protocols import Embedder, Matrix

_MIN_WORDS = 4
_MAX_CHARS = 400
# Sentence ends, or line breaks (PDF tables and lists have no full stops).
_DIGIT_RE = re.compile(r"\d")
_BOUNDARY_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[$•-])|\s*\n\s*")


class SentenceSpan(Frozen):
    """A sentence of a chunk: ``start``/``end`` are offsets within ``chunk.text``."""

    chunk_id: str
    start: int
    end: int
    text: str
    instruction_like: bool = False
    heading: bool = False  # a title or heading line: never an answer sentence
    # It asks rather than states (an FAQ's question, a snippet's teaser): never an answer.
    question: bool = False

    @property
    def answerable(self) -> bool:
        """Whether the sentence may be quoted as an answer (it may still be a source)."""
        return not (self.instruction_like or self.heading or self.question)


class ScoredSentence(Frozen):
    source_n: int  # 1-based position of the chunk among the sources
    chunk: Chunk
    span: SentenceSpan
    score: float

    @property
    def doc_start(self) -> int:
        return self.chunk.char_start + self.span.start

    @property
    def doc_end(self) -> int:
        return self.chunk.char_start + self.span.end


def _heading_lines(chunk: Chunk) -> frozenset[str]:
    names = [chunk.title, chunk.section or "", *chunk.context.splitlines()]
    return frozenset(" ".join(n.lower().split()).strip(" #:") for n in names if n.strip())


def looks_like_heading(text: str, own_line: bool, headings: frozenset[str] = frozenset()) -> bool:
    """A title or heading rather than a statement: a Markdown heading, the document's title or
    section, or a short line of its own without end punctuation that is in Title Case or
    capitals. Table rows (figures, lower-case words) are statements."""
    bare = " ".join(text.split())
    if bare.startswith("#") or bare.lower().strip(" #:") in headings:
        return True
    if not own_line or bare[-1:] in ".!?;," or len(bare.split()) > 14 or _DIGIT_RE.search(bare):
        return False
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'\u2019-]*", bare) if len(w) > 3]
    return bool(words) and sum(w[0].isupper() for w in words) / len(words) >= 0.75


def sentence_spans(chunk: Chunk) -> list[SentenceSpan]:
    """Candidate sentences of a chunk with at least a few words; long runs are cut at
    whitespace so one table does not become a single 3,000-character "sentence". Sentences
    inside an instruction-like passage (matched across line breaks), headings and questions
    are marked."""
    text = chunk.text
    injected = instruction_ranges(text)
    headings = _heading_lines(chunk)
    spans: list[SentenceSpan] = []
    pos = 0
    for boundary in [*_BOUNDARY_RE.finditer(text), None]:
        end = boundary.start() if boundary else len(text)
        for start, stop in _windows(text, pos, end):
            piece = text[start:stop]
            stripped = piece.strip()
            if len(stripped.split()) < _MIN_WORDS:
                continue
            lead = len(piece) - len(piece.lstrip())
            s, e = start + lead, start + lead + len(stripped)
            own_line = _line_start(text, s) and _line_end(text, e)
            spans.append(
                SentenceSpan(
                    chunk_id=chunk.chunk_id,
                    start=s,
                    end=e,
                    text=stripped,
                    instruction_like=any(a < e and s < b for a, b in injected),
                    heading=looks_like_heading(stripped, own_line, headings),
                    question=stripped.rstrip("\"')]\u201d\u2019").endswith("?"),
                )
            )
        if boundary:
            pos = boundary.end()
    return spans


def _line_start(text: str, pos: int) -> bool:
    return text[:pos].rstrip(" \t").endswith("\n") or not text[:pos].strip()


def _line_end(text: str, pos: int) -> bool:
    return text[pos:].lstrip(" \t").startswith("\n") or not text[pos:].strip()


def _windows(text: str, start: int, end: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    while end - start > _MAX_CHARS:
        cut = text.rfind(" ", start, start + _MAX_CHARS)
        cut = cut if cut > start else start + _MAX_CHARS
        out.append((start, cut))
        start = cut + 1
    out.append((start, end))
    return out


_CacheKey = tuple[str, str, str]  # chunk id, header, text
_Sentences = tuple[list[SentenceSpan], Matrix]


def _cache_key(chunk: Chunk) -> _CacheKey:
    return (chunk.chunk_id, chunk.context, chunk.text)


class SentenceScorer:
    """Scores chunk sentences (with their chunk's header) against a question. Sentence vectors
    are cached per chunk id, header and text, so a cached entry never goes stale. Thread-safe."""

    def __init__(self, embedder: Embedder, cache_chunks: int = 4096) -> None:
        if cache_chunks < 0:
            raise InvalidArgumentError("cache_chunks must be >= 0")
        self._embedder = embedder
        # Keyed by chunk id, header and text: a retitled document keeps its chunk texts (and
        # ids) but changes what its sentences are scored with, and the text is in the key
        # because only our own ingestion guarantees that an id names one text (a store
        # written by another tool, or an in-memory knowledge base, may reuse ids).
        self._cache: OrderedDict[_CacheKey, _Sentences] = OrderedDict()
        self._cache_chunks = cache_chunks
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _sentences(self, chunks: Sequence[Chunk]) -> list[_Sentences]:
        results: dict[_CacheKey, _Sentences] = {}
        missing: dict[_CacheKey, Chunk] = {}
        with self._lock:
            for chunk in chunks:
                key = _cache_key(chunk)
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    results[key] = hit
                else:
                    missing.setdefault(key, chunk)
        if missing:
            spans_per_chunk = [sentence_spans(c) for c in missing.values()]
            # A sentence is scored with its chunk's header (title, file name, section), as the
            # chunk was embedded: "Services net sales rose" answers "Apple's Services revenue in
            # Q3 2023" only in the context of that filing.
            texts = [
                contextual_text(c.context, s.text)
                for c, spans in zip(missing.values(), spans_per_chunk, strict=True)
                for s in spans
            ]
            vectors = (
                self._embedder.embed_documents(texts)
                if texts
                else np.zeros((0, 1), dtype=np.float32)
            )
            offset = 0
            with self._lock:
                for key, spans in zip(missing, spans_per_chunk, strict=True):
                    entry = (spans, vectors[offset : offset + len(spans)])
                    offset += len(spans)
                    results[key] = entry
                    if self._cache_chunks:
                        self._cache[key] = entry
                        while len(self._cache) > self._cache_chunks:
                            self._cache.popitem(last=False)
        return [results[_cache_key(c)] for c in chunks]

    def score(self, question: str, chunks: Sequence[Chunk]) -> list[ScoredSentence]:
        """Every candidate sentence of ``chunks`` (source n = position + 1), best first."""
        if not chunks:
            return []
        query = self._embedder.embed_query(question)
        scored: list[ScoredSentence] = []
        for n, (chunk, (spans, vectors)) in enumerate(
            zip(chunks, self._sentences(chunks), strict=True), start=1
        ):
            if not spans:
                continue
            sims = vectors @ query
            scored.extend(
                ScoredSentence(source_n=n, chunk=chunk, span=span, score=float(sim))
                for span, sim in zip(spans, sims, strict=True)
            )
        scored.sort(key=lambda s: s.score, reverse=True)
        return scored

    def best_match(self, text: str, candidates: Sequence[ScoredSentence]) -> ScoredSentence | None:
        """The sentence of the candidates' chunks most similar to ``text`` (for checking and
        quoting an LLM's sentence). Only sentences that may be an answer: an injected
        instruction or a question repeats a claim word for word and supports nothing."""
        if not candidates:
            return None
        vector = self._embedder.embed_query(text)
        by_chunk = {_cache_key(c.chunk): c for c in candidates}
        best: ScoredSentence | None = None
        best_sim = -np.inf
        for candidate in by_chunk.values():
            spans, vectors = self._sentences([candidate.chunk])[0]
            usable = [i for i, span in enumerate(spans) if span.answerable]
            if not usable:
                continue
            sims = vectors[usable] @ vector
            top = int(np.argmax(sims))
            if sims[top] > best_sim:
                best_sim = float(sims[top])
                best = ScoredSentence(
                    source_n=candidate.source_n,
                    chunk=candidate.chunk,
                    span=spans[usable[top]],
                    score=best_sim,
                )
        return best
