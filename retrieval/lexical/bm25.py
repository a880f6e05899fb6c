"""BM25 lexical index whose statistics are computed per access scope.

This module holds the index's state and its writes; scoring is in :mod:`.scoring` (exactly
rank_bm25's ``BM25Okapi``, parity-tested), which slots a search may touch in :mod:`.filtering`
(decisions from :mod:`retrieval.access`), persistence in :mod:`.storage`.

rank_bm25 itself is not used at query time: it scores every document for every query term
(38 ms/query at 50k documents), keeps no persistence and cannot compute statistics over a subset
of the corpus. Here the postings are scipy CSC matrices (term → chunks, and term → whole
documents, their counts summed over each document's chunks), rows grouped by access class.
Writers keep per-chunk arrays for incremental writes; a served version loads read-only and keeps
only the search structures.

Security: the N, document frequencies, average length and average idf used for a scope are those
of the chunks the scope can see, so an invisible document cannot change a caller's results or
scores (a rare term in a restricted document would otherwise shift idf). Chunks are grouped into
access classes (distinct ``(classification_rank, groups)``); per-class document frequencies,
counts and lengths are summed over the classes a scope can see and cached per visible-class set.
A search reads only the postings of those classes, and skips a query term the scope's chunks do
not contain before reading any, so its work does not depend on what the caller cannot see
either (the timing side channel of ``SECURITY.md``).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from citewell.core.errors import ConfigurationError, InvalidArgumentError, StoreUnavailableError
from citewell.core.logging import log_event
from citewell.core.models import AccessLabel, Chunk, SearchFilters
from citewell.retrieval.access import AccessScope, filter_values
from citewell.retrieval.lexical import storage
from citewell.retrieval.lexical.filtering import filter_mask, micros, visible_classes
from citewell.retrieval.lexical.scoring import (
    ClassPostings,
    QueryTerm,
    ScopeStats,
    SearchTrace,
    compile_kernels,
    okapi_stats,
    score_documents,
    score_rows,
)
from citewell.retrieval.lexical.tokenize import DEFAULT_TOKENIZER, Tokenizer, contextual_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = storage.FORMAT_VERSION
_MAX_CACHED_SCOPES = 256

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Compiled:
    """Immutable snapshot used by searches; writes build a new one instead of mutating."""

    postings: ClassPostings  # rows grouped by access class
    # Whole documents as rows (term counts summed over their chunks), grouped by class; None
    # when some document's chunks are in more than one class (then scored from the chunks).
    documents: ClassPostings | None
    document_length_sum: IntArray  # prefix sums of the document rows' lengths
    lengths: FloatArray
    classes: npt.NDArray[np.int32]
    sources: npt.NDArray[np.int32]
    doc_types: npt.NDArray[np.int32]
    modified: IntArray
    docs: npt.NDArray[np.int32]  # per slot: index into ``doc_names``
    doc_names: tuple[str, ...]


@dataclass(frozen=True)
class _Query:
    """What one search reads, taken together under the lock (writes and compaction replace
    these objects, never change them), and the query's terms the scope can see."""

    compiled: _Compiled
    visible: tuple[int, ...]
    stats: ScopeStats
    chunk_ids: list[str]
    doc_slots: IntArray | None  # the slots of the wanted documents; None: every document
    terms: list[tuple[int, int]]


class BM25Index:
    """In-memory BM25 over chunk text with per-scope statistics and atomic persistence.

    Writes (``add``, ``delete_documents``, ``relabel_document``) must come from one thread at a
    time; searches may run concurrently with each other and with writes.
    """

    def __init__(
        self,
        k1: float = 0.9,
        b: float = 0.4,
        epsilon: float = 0.25,
        tokenizer: Tokenizer = DEFAULT_TOKENIZER,
    ) -> None:
        if k1 <= 0 or not 0 <= b <= 1 or epsilon < 0:
            raise ConfigurationError(f"invalid BM25 parameters k1={k1} b={b} epsilon={epsilon}")
        self.k1 = float(k1)
        self.b = float(b)
        self.epsilon = float(epsilon)
        self.tokenizer = tokenizer
        self._query_tokenizer = tokenizer.uncached()
        self._lock = threading.RLock()
        self._vocab: dict[str, int] = {}
        # Per slot (a chunk position; deleted slots are compacted away on the next compile).
        self._chunk_ids: list[str] = []
        self._doc_ids: list[str] = []
        self._source_codes: list[int] = []
        self._doc_type_codes: list[int] = []
        self._modified: list[int] = []
        self._class_of: list[int] = []
        self._length: list[int] = []
        self._terms: list[npt.NDArray[np.int32]] = []
        self._counts: list[npt.NDArray[np.int32]] = []
        self._alive: list[bool] = []
        self._slot_of_chunk: dict[str, int] = {}
        self._slots_of_doc: dict[str, set[int]] = {}
        self._sources: dict[str, int] = {}
        self._doc_types: dict[str, int] = {}
        # Access classes and their statistics.
        self._class_ids: dict[tuple[int, frozenset[str]], int] = {}
        self._class_keys: list[tuple[int, frozenset[str]]] = []
        self._class_df: list[IntArray] = []
        self._class_docs: list[int] = []
        self._class_len: list[int] = []
        self._compiled: _Compiled | None = None
        self._stats_cache: dict[tuple[int, ...], ScopeStats] = {}
        self._read_only = False
        # The loaded file's term counts as one matrix, until the first write: the snapshot is
        # built from it instead of from a copy of every chunk's arrays.
        self._loaded: sp.csr_matrix | None = None

    # ------------------------------------------------------------------ writes

    def add(self, chunks: Sequence[Chunk], texts: Sequence[str] | None = None) -> None:
        """Index chunks (a chunk id already present is replaced). ``texts`` are what to index for
        each chunk; default: the chunk's contextual header and text (:func:`contextual_text`),
        the same text the embedder sees."""
        if texts is not None and len(texts) != len(chunks):
            raise InvalidArgumentError(f"got {len(texts)} texts for {len(chunks)} chunks")
        self._check_writable()
        with self._lock:
            for i, chunk in enumerate(chunks):
                old = self._slot_of_chunk.get(chunk.chunk_id)
                if old is not None:
                    self._kill(old)
                self._append(
                    chunk_id=chunk.chunk_id,
                    doc_id=chunk.doc_id,
                    source=chunk.source,
                    doc_type=chunk.doc_type,
                    modified=micros(chunk.modified_at),
                    class_id=self._class_id(chunk.classification_rank, frozenset(chunk.groups)),
                    tokens=self.tokenizer(
                        contextual_text(chunk.context, chunk.text) if texts is None else texts[i]
                    ),
                )
            self._invalidate()

    def delete_documents(self, doc_ids: Collection[str]) -> None:
        """Remove every chunk of these documents (unknown ids are ignored)."""
        self._check_writable()
        with self._lock:
            for doc_id in doc_ids:
                for slot in list(self._slots_of_doc.get(doc_id, ())):
                    self._kill(slot)
            self._invalidate()

    def relabel_document(self, doc_id: str, label: AccessLabel, classification_rank: int) -> None:
        """Move a document's chunks to another access class (no re-tokenizing)."""
        self._check_writable()
        with self._lock:
            target = self._class_id(classification_rank, frozenset(label.groups))
            for slot in self._slots_of_doc.get(doc_id, ()):
                self._class_stats_remove(slot)
                self._class_of[slot] = target
                self._class_stats_add(slot)
            self._invalidate()

    def __len__(self) -> int:
        return len(self._slot_of_chunk)

    def _check_writable(self) -> None:
        if self._read_only:
            raise InvalidArgumentError(
                "this lexical index was opened read-only (a served version); "
                "write through an IndexWriter"
            )

    def warm_up(self) -> None:
        """Build the search snapshot and compile the scoring loops now, not in the first
        search (at 1M chunks the snapshot takes seconds; the loops, seconds on a cold cache)."""
        with self._lock:
            self._compile()
        compile_kernels()

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str,
        scope: AccessScope,
        filters: SearchFilters,
        limit: int,
        *,
        trace: SearchTrace | None = None,
    ) -> list[tuple[str, float]]:
        """Top ``limit`` (chunk_id, score) with score > 0, best first (ties by insertion).
        ``trace`` counts the postings read (tests and benchmarks)."""
        prepared = self._prepare(query, scope, filters, limit, trace)
        if prepared is None or prepared.stats.n_docs == 0:
            return []
        compiled, stats, chunk_ids = prepared.compiled, prepared.stats, prepared.chunk_ids
        postings = compiled.postings
        rows, scores = score_rows(
            postings,
            postings.runs(np.asarray(prepared.visible, dtype=np.int64)),
            [QueryTerm(term, times, float(stats.idf[term])) for term, times in prepared.terms],
            stats.avgdl,
            self.k1,
            self.b,
            trace,
            limit=limit if filters.is_empty else None,  # filters first, then the best
        )
        slots = postings.row_slot[rows]
        if not filters.is_empty:
            kept = self._filter_mask(slots, compiled, filters, prepared.doc_slots)
            slots, scores = slots[kept], scores[kept]
        slots, scores = _best(slots, scores, limit)
        order = np.lexsort((slots, -scores))[:limit].tolist()
        return [(chunk_ids[int(slots[j])], float(scores[j])) for j in order]

    def document_search(
        self,
        query: str,
        scope: AccessScope,
        filters: SearchFilters,
        limit: int,
        *,
        trace: SearchTrace | None = None,
    ) -> list[tuple[str, float]]:
        """Top ``limit`` (doc_id, score) with score > 0, best first (ties by doc id): BM25 over
        whole documents, computed at query time from the chunk postings.

        A document's term frequency is the sum over its chunks, its length the sum of their
        lengths; N, document frequencies and the average length count documents. Only chunks the
        scope can see and the filters keep take part, so an invisible chunk cannot move any
        score, and a document with no such chunk does not exist for this query. Lets a term that
        is rare across documents (a company name in a filing's title) lift every chunk of the
        document that holds it, although most of its chunks never repeat it.

        idf is the non-negative ``log(1 + (N - n + 0.5) / (n + 0.5))`` (Lucene): rank_bm25's
        epsilon floor needs the mean idf over the whole vocabulary, a full pass per query here.
        """
        prepared = self._prepare(query, scope, filters, limit, trace)
        if prepared is None:
            return []
        documents = prepared.compiled.documents
        if documents is not None and filters.is_empty:
            codes, scores = self._score_whole_documents(documents, prepared, limit, trace)
        else:
            codes, scores = self._score_documents_from_chunks(prepared, filters, trace)
        codes, scores = _best(codes, scores, limit)
        names = prepared.compiled.doc_names
        pairs = zip(codes.tolist(), scores.tolist(), strict=True)
        ranked = sorted(((names[c], float(score)) for c, score in pairs), key=_by_score_then_id)
        return ranked[:limit]

    def _score_whole_documents(
        self, documents: ClassPostings, prepared: _Query, limit: int, trace: SearchTrace | None
    ) -> tuple[IntArray, FloatArray]:
        """Document BM25 from the per-document postings, when every document's chunks share one
        access class and no filter applies: a visible document is then a row of a visible class,
        N and the average length are sums over those rows, and a term's df is a count of its
        postings there (binary searches). Same scores as scoring from the chunks; MaxScore can
        prune because every idf is known before any postings are read."""
        runs = documents.runs(np.asarray(prepared.visible, dtype=np.int64))
        n_docs = int((runs.ends - runs.starts).sum())
        total = prepared.compiled.document_length_sum
        # Integer sums: exact, so the order chunks were added in cannot change a length.
        avgdl = float(int((total[runs.ends] - total[runs.starts]).sum())) / n_docs
        terms = []
        for term, times in prepared.terms:
            df = float(documents.count(term, runs))
            terms.append(QueryTerm(term, times, math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))))
        rows, scores = score_rows(documents, runs, terms, avgdl, self.k1, self.b, trace, limit)
        return documents.row_slot[rows], scores

    def _score_documents_from_chunks(
        self, prepared: _Query, filters: SearchFilters, trace: SearchTrace | None
    ) -> tuple[IntArray, FloatArray]:
        """Document BM25 grouped at query time from the chunks the filters keep."""
        compiled, visible = prepared.compiled, prepared.visible
        nothing = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        # Slots that take part: visible to the scope and kept by the filters (a pass over the
        # per-slot class column: its cost depends on the index's size, never on the query).
        class_visible = np.zeros(len(self._class_keys), dtype=bool)
        class_visible[list(visible)] = True
        slots = np.flatnonzero(class_visible[compiled.classes])
        slots = self._apply_filters(slots, compiled, filters, prepared.doc_slots)
        if slots.size == 0:
            return nothing
        included = np.zeros(compiled.classes.shape[0], dtype=bool)
        included[slots] = True
        n_names = len(compiled.doc_names)
        # Integer sums: exact, so the order chunks were added in cannot change a length.
        doc_len = np.bincount(
            compiled.docs[slots], weights=compiled.lengths[slots], minlength=n_names
        ).astype(np.float64, copy=False)
        present = np.bincount(compiled.docs[slots], minlength=n_names) > 0
        n_docs = int(present.sum())
        avgdl = float(doc_len[present].sum()) / n_docs
        scores = score_documents(
            compiled.postings,
            compiled.postings.runs(np.asarray(visible, dtype=np.int64)),
            prepared.terms,
            included,
            compiled.docs,
            doc_len,
            n_docs,
            avgdl,
            self.k1,
            self.b,
            trace,
        )
        codes = np.flatnonzero(scores > 0)
        return codes, scores[codes]

    def document_terms(
        self, text: str, scope: AccessScope, doc_ids: Collection[str]
    ) -> dict[str, frozenset[str]]:
        """For each of ``doc_ids``, the terms of ``text`` (as this index tokenizes them) that
        occur in a chunk of that document the scope can see; documents holding none are left
        out. Lets the agent ask whether a name its question needs appears anywhere in a
        retrieved document, not only in the retrieved chunk (a filing names its company on the
        cover page, not in every chunk). Reads only the visible classes' postings."""
        if not doc_ids:
            return {}
        # The same snapshot and visible-term check as a search restricted to those documents.
        query = self._prepare(text, scope, SearchFilters(doc_ids=frozenset(doc_ids)), 1)
        if query is None or query.doc_slots is None or query.doc_slots.size == 0:
            return {}
        vocab = self._vocab
        token_of = {vocab[t]: t for t in set(self._query_tokenizer(text)) if t in vocab}
        postings = query.compiled.postings
        runs = postings.runs(np.asarray(query.visible, dtype=np.int64))
        found: dict[str, set[str]] = {}
        for term, _ in query.terms:
            rows, _ = postings.term(term, runs)
            slots = postings.row_slot[rows]
            held = query.compiled.docs[slots[np.isin(slots, query.doc_slots)]]
            for doc in np.unique(held):
                found.setdefault(query.compiled.doc_names[int(doc)], set()).add(token_of[term])
        return {doc: frozenset(terms) for doc, terms in found.items()}

    def visible_documents(self, doc_ids: Collection[str], scope: AccessScope) -> frozenset[str]:
        """Those of ``doc_ids`` with a chunk the scope may see, at the same cost for an id the
        scope may not see as for one that does not exist (:meth:`_visible_slots`): the search
        narrows a caller's ``doc_ids`` filter here before any leg looks them up."""
        if scope.matches_nothing or not doc_ids:
            return frozenset()
        with self._lock:
            compiled = self._compile()
            shown = frozenset(self._visible_classes(scope))
            return frozenset(
                doc_id for doc_id in doc_ids if self._visible_slots(doc_id, compiled, shown)
            )

    def _prepare(
        self,
        query: str,
        scope: AccessScope,
        filters: SearchFilters,
        limit: int,
        trace: SearchTrace | None = None,
    ) -> _Query | None:
        """The snapshot and terms a search of ``query`` reads; None when nothing can match (the
        scope sees nothing, or no query term occurs in a chunk it can see)."""
        if limit < 1:
            raise InvalidArgumentError(f"limit must be at least 1, got {limit}")
        if scope.matches_nothing:
            return None
        tokens = self._query_tokenizer(query)
        with self._lock:
            compiled = self._compile()
            visible = self._visible_classes(scope)
            stats = self._scope_stats(visible)
            chunk_ids = self._chunk_ids  # compaction replaces the list, never mutates in place
            doc_slots = self._doc_filter_slots(
                filter_values(filters.doc_ids), compiled, visible, trace
            )
        terms = self._query_terms(tokens, stats)
        if not terms:
            return None
        return _Query(compiled, visible, stats, chunk_ids, doc_slots, terms)

    def _query_terms(self, tokens: Sequence[str], stats: ScopeStats) -> list[tuple[int, int]]:
        """(term id, times) for the query tokens that occur in a chunk the scope can see, in
        text order. A token that occurs only in invisible chunks is dropped here exactly like
        one that occurs nowhere, before any postings are read. Text order, not id order: term
        ids depend on what else was indexed, and the summation order must not, so invisible
        chunks cannot move a score by even one ulp."""
        vocab = self._vocab
        counts = Counter(tokens)
        terms: list[tuple[int, int]] = []
        for token in sorted(counts):
            term = vocab.get(token, -1)
            if 0 <= term < stats.df.shape[0] and stats.df[term] > 0:
                terms.append((term, counts[token]))
        return terms

    def _apply_filters(
        self,
        candidates: IntArray,
        compiled: _Compiled,
        filters: SearchFilters,
        doc_slots: IntArray | None,
    ) -> IntArray:
        if filters.is_empty:
            return candidates
        return candidates[self._filter_mask(candidates, compiled, filters, doc_slots)]

    def _filter_mask(
        self,
        slots: IntArray,
        compiled: _Compiled,
        filters: SearchFilters,
        doc_slots: IntArray | None,
    ) -> npt.NDArray[np.bool_]:
        return filter_mask(
            slots,
            filters,
            sources=compiled.sources,
            source_codes=self._sources,
            doc_types=compiled.doc_types,
            doc_type_codes=self._doc_types,
            modified=compiled.modified,
            doc_slots=doc_slots,
        )

    def _doc_filter_slots(
        self,
        doc_ids: frozenset[str] | None,
        compiled: _Compiled,
        visible: tuple[int, ...],
        trace: SearchTrace | None,
    ) -> IntArray | None:
        """The slots of the named documents that the scope may see (call under the lock)."""
        if doc_ids is None:
            return None
        shown = frozenset(visible)
        slots: list[int] = []
        for doc_id in doc_ids:
            slots.extend(self._visible_slots(doc_id, compiled, shown))
        if trace is not None:
            trace.document_filter_slots += len(slots)
        return np.asarray(slots, dtype=np.int64)

    def _visible_slots(
        self, doc_id: str, compiled: _Compiled, shown: frozenset[int]
    ) -> Collection[int]:
        """The slots of ``doc_id`` in the ``shown`` classes (call under the lock). A document
        the scope may not see is passed over after one look at its class, never by gathering
        its slots: that work grew with the size of a restricted document, so timing a guessed
        id told whether it exists. Only while some document is split across classes (a relabel
        caught part-way, see ``_Compiled.documents``) are its slots checked one by one."""
        held = self._slots_of_doc.get(doc_id)
        if not held:
            return ()
        class_of = self._class_of
        if compiled.documents is None:
            return [slot for slot in held if class_of[slot] in shown]
        return held if class_of[next(iter(held))] in shown else ()

    def _visible_classes(self, scope: AccessScope) -> tuple[int, ...]:
        return visible_classes(scope, self._class_keys, self._class_docs)

    def _scope_stats(self, visible: tuple[int, ...]) -> ScopeStats:
        cached = self._stats_cache.get(visible)
        if cached is not None:
            return cached
        stats = okapi_stats(
            self._class_df,
            self._class_docs,
            self._class_len,
            visible,
            len(self._vocab),
            self.epsilon,
        )
        if len(self._stats_cache) >= _MAX_CACHED_SCOPES:
            self._stats_cache.clear()
        self._stats_cache[visible] = stats
        return stats

    # ------------------------------------------------------------------ internals

    def _class_id(self, rank: int, groups: frozenset[str]) -> int:
        key = (rank, groups)
        class_id = self._class_ids.get(key)
        if class_id is None:
            class_id = len(self._class_keys)
            self._class_ids[key] = class_id
            self._class_keys.append(key)
            self._class_df.append(np.zeros(max(1024, len(self._vocab)), dtype=np.int64))
            self._class_docs.append(0)
            self._class_len.append(0)
        return class_id

    def _code(self, table: dict[str, int], value: str) -> int:
        code = table.get(value)
        if code is None:
            code = table[value] = len(table)
        return code

    def _append(
        self,
        *,
        chunk_id: str,
        doc_id: str,
        source: str,
        doc_type: str,
        modified: int,
        class_id: int,
        tokens: Sequence[str],
    ) -> None:
        ids = np.fromiter(
            (self._code(self._vocab, t) for t in tokens), dtype=np.int32, count=len(tokens)
        )
        terms, counts = np.unique(ids, return_counts=True)
        self._append_slot(
            chunk_id=chunk_id,
            doc_id=doc_id,
            source_code=self._code(self._sources, source),
            doc_type_code=self._code(self._doc_types, doc_type),
            modified=modified,
            class_id=class_id,
            terms=terms.astype(np.int32),
            counts=counts.astype(np.int32),
        )

    def _append_slot(
        self,
        *,
        chunk_id: str,
        doc_id: str,
        source_code: int,
        doc_type_code: int,
        modified: int,
        class_id: int,
        terms: npt.NDArray[np.int32],
        counts: npt.NDArray[np.int32],
    ) -> None:
        slot = len(self._chunk_ids)
        self._chunk_ids.append(chunk_id)
        self._doc_ids.append(doc_id)
        self._source_codes.append(source_code)
        self._doc_type_codes.append(doc_type_code)
        self._modified.append(modified)
        self._class_of.append(class_id)
        self._length.append(int(counts.sum()))
        self._terms.append(terms)
        self._counts.append(counts)
        self._alive.append(True)
        self._slot_of_chunk[chunk_id] = slot
        self._slots_of_doc.setdefault(doc_id, set()).add(slot)
        self._class_stats_add(slot)

    def _class_stats_add(self, slot: int, sign: int = 1) -> None:
        c = self._class_of[slot]
        terms = self._terms[slot]
        if terms.size and int(terms.max()) >= self._class_df[c].shape[0]:
            grown = np.zeros(max(2 * self._class_df[c].shape[0], len(self._vocab)), np.int64)
            grown[: self._class_df[c].shape[0]] = self._class_df[c]
            self._class_df[c] = grown
        self._class_df[c][terms] += sign
        self._class_docs[c] += sign
        self._class_len[c] += sign * self._length[slot]

    def _class_stats_remove(self, slot: int) -> None:
        self._class_stats_add(slot, sign=-1)

    def _kill(self, slot: int) -> None:
        self._class_stats_remove(slot)
        self._alive[slot] = False
        del self._slot_of_chunk[self._chunk_ids[slot]]
        doc_slots = self._slots_of_doc[self._doc_ids[slot]]
        doc_slots.discard(slot)
        if not doc_slots:
            del self._slots_of_doc[self._doc_ids[slot]]

    def _invalidate(self) -> None:
        self._compiled = None
        self._stats_cache.clear()
        self._loaded = None

    def _compact(self) -> None:
        """Drop deleted slots and renumber the rest (keeps insertion order)."""
        keep = [i for i, alive in enumerate(self._alive) if alive]
        if len(keep) == len(self._alive):
            return
        # New lists (not in-place edits) so that a concurrent search keeps a consistent view.
        self._chunk_ids = [self._chunk_ids[i] for i in keep]
        self._doc_ids = [self._doc_ids[i] for i in keep]
        self._source_codes = [self._source_codes[i] for i in keep]
        self._doc_type_codes = [self._doc_type_codes[i] for i in keep]
        self._modified = [self._modified[i] for i in keep]
        self._class_of = [self._class_of[i] for i in keep]
        self._length = [self._length[i] for i in keep]
        self._terms = [self._terms[i] for i in keep]
        self._counts = [self._counts[i] for i in keep]
        self._alive = [True] * len(keep)
        self._slot_of_chunk = {c: i for i, c in enumerate(self._chunk_ids)}
        slots_of_doc: dict[str, set[int]] = {}
        for i, d in enumerate(self._doc_ids):
            slots_of_doc.setdefault(d, set()).add(i)
        self._slots_of_doc = slots_of_doc

    def _csr(self) -> sp.csr_matrix:
        """(slots, terms) term counts of the live slots (call after ``_compact``)."""
        n_slots, n_terms = len(self._chunk_ids), len(self._vocab)
        indptr = np.zeros(n_slots + 1, dtype=np.int64)
        if n_slots:
            np.cumsum([t.shape[0] for t in self._terms], out=indptr[1:])
            indices = np.concatenate(self._terms).astype(np.int32, copy=False)
            data = np.concatenate(self._counts).astype(np.int32, copy=False)
        else:
            indices = np.zeros(0, dtype=np.int32)
            data = np.zeros(0, dtype=np.int32)
        return sp.csr_matrix((data, indices, indptr), shape=(n_slots, n_terms))

    def _compile(self) -> _Compiled:
        if self._compiled is not None:
            return self._compiled
        self._compact()
        csr = self._loaded if self._loaded is not None else self._csr()
        n_classes = len(self._class_keys)
        classes = np.asarray(self._class_of, dtype=np.int32)
        lengths = np.asarray(self._length, dtype=np.int64)
        doc_names, doc_codes = np.unique(
            np.asarray(self._doc_ids, dtype=np.str_), return_inverse=True
        )
        docs = doc_codes.astype(np.int32).reshape(-1)
        documents, document_length_sum = _document_postings(
            csr, docs, classes, lengths, len(doc_names), n_classes
        )
        self._compiled = _Compiled(
            postings=_class_postings(csr, classes, lengths, n_classes),
            documents=documents,
            document_length_sum=document_length_sum,
            lengths=lengths.astype(np.float64),
            classes=classes,
            sources=np.asarray(self._source_codes, dtype=np.int32),
            doc_types=np.asarray(self._doc_type_codes, dtype=np.int32),
            modified=np.asarray(self._modified, dtype=np.int64),
            docs=docs,
            doc_names=tuple(str(d) for d in doc_names),
        )
        return self._compiled

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        """Write the index atomically (see :mod:`.storage`): a crash at any point leaves the
        previously saved index loadable."""
        self._check_writable()  # the per-chunk arrays a snapshot is written from are gone
        directory = Path(directory)
        with self._lock:
            compiled = self._compile()
            arrays, meta = self._snapshot(compiled)
        try:
            version = storage.save_snapshot(directory, arrays, meta)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot save lexical index to {directory}: {exc}") from exc
        log_event(
            logger,
            logging.INFO,
            "lexical.saved",
            directory=str(directory),
            version=version,
            chunks=len(self),
            terms=int(meta["n_terms"]),
        )

    def _snapshot(self, compiled: _Compiled) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        csr = self._csr()
        terms = sorted(self._vocab, key=self._vocab.__getitem__)
        term_bytes, term_offsets = storage.pack_strings(terms)
        chunk_bytes, chunk_offsets = storage.pack_strings(self._chunk_ids)
        doc_bytes, doc_offsets = storage.pack_strings(self._doc_ids)
        arrays: dict[str, npt.NDArray[Any]] = {
            "term_bytes": term_bytes,
            "term_offsets": term_offsets,
            "chunk_bytes": chunk_bytes,
            "chunk_offsets": chunk_offsets,
            "doc_bytes": doc_bytes,
            "doc_offsets": doc_offsets,
            "indptr": csr.indptr.astype(np.int64),
            "indices": csr.indices.astype(np.int32),
            "counts": csr.data.astype(np.int32),
            "classes": compiled.classes,
            "sources": compiled.sources,
            "doc_types": compiled.doc_types,
            "modified": compiled.modified,
        }
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "tokenizer": self.tokenizer.name,
            "k1": self.k1,
            "b": self.b,
            "epsilon": self.epsilon,
            "n_chunks": len(self._chunk_ids),
            "n_terms": len(terms),
            "sources": sorted(self._sources, key=self._sources.__getitem__),
            "doc_types": sorted(self._doc_types, key=self._doc_types.__getitem__),
            "access_classes": [
                {"rank": rank, "groups": sorted(groups)} for rank, groups in self._class_keys
            ],
        }
        return arrays, meta

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        tokenizer: Tokenizer = DEFAULT_TOKENIZER,
        k1: float | None = None,
        b: float | None = None,
        read_only: bool = False,
    ) -> BM25Index:
        """Open a saved index. ``k1``/``b`` override the saved values (they only affect scoring).
        ``read_only``: for serving; the search structures are built now and the per-chunk
        arrays that writes need are dropped (at 1M chunks, ~1 GB), so writes and ``save`` raise.
        Raises ``StoreUnavailableError`` when files are missing, corrupt or were written with a
        different tokenizer."""
        directory = Path(directory)
        try:
            meta, arrays = storage.load_snapshot(directory)
            index = cls._from_snapshot(arrays, meta, tokenizer, k1, b)
        except StoreUnavailableError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError) as exc:
            # zipfile.BadZipFile and json.JSONDecodeError are OSError/ValueError subclasses.
            message = f"cannot load lexical index from {directory}: {exc}"
            raise StoreUnavailableError(message) from exc
        if read_only:
            index._freeze()
        return index

    def _freeze(self) -> None:
        """Build the search snapshot, then drop the per-chunk term arrays (the snapshot's
        postings hold the same counts) and refuse writes from now on."""
        with self._lock:
            self._compile()
            self._read_only = True
            self._terms, self._counts, self._loaded = [], [], None

    @classmethod
    def _from_snapshot(
        cls,
        arrays: dict[str, npt.NDArray[Any]],
        meta: dict[str, Any],
        tokenizer: Tokenizer,
        k1: float | None,
        b: float | None,
    ) -> BM25Index:
        if meta.get("format_version") != FORMAT_VERSION:
            raise StoreUnavailableError(f"unsupported format version {meta.get('format_version')}")
        if meta["tokenizer"] == tokenizer.legacy_stream().name != tokenizer.name:
            # Built before NFKC normalisation and CJK pairs: read (and refreshed) in the stream
            # it was built with, so its searches match as before; a fresh build applies them.
            tokenizer = tokenizer.legacy_stream()
            log_event(
                logger,
                logging.INFO,
                "bm25.tokenizer_legacy",
                tokenizer=tokenizer.name,
                note="built before NFKC and CJK pairs; a fresh build (ingest --fresh) applies them",
            )
        if meta["tokenizer"] != tokenizer.name:
            raise StoreUnavailableError(
                f"index was built with tokenizer {meta['tokenizer']!r}, not {tokenizer.name!r}"
            )
        index = cls(
            k1=meta["k1"] if k1 is None else k1,
            b=meta["b"] if b is None else b,
            epsilon=meta["epsilon"],
            tokenizer=tokenizer,
        )
        terms = storage.unpack_strings(arrays["term_bytes"], arrays["term_offsets"])
        chunk_ids = storage.unpack_strings(arrays["chunk_bytes"], arrays["chunk_offsets"])
        doc_ids = storage.unpack_strings(arrays["doc_bytes"], arrays["doc_offsets"])
        indptr, indices, counts = arrays["indptr"], arrays["indices"], arrays["counts"]
        n = len(chunk_ids)
        n_classes = len(meta["access_classes"])
        per_slot = ("classes", "sources", "doc_types", "modified")
        if (
            len(terms) != meta["n_terms"]
            or n != meta["n_chunks"]
            or len(doc_ids) != n
            or any(arrays[name].shape != (n,) for name in per_slot)
            or indptr.shape != (n + 1,)
            or indptr[0] != 0
            or np.any(np.diff(indptr) < 0)
            or indptr[-1] != indices.shape[0]
            or counts.shape != indices.shape
            or (indices.size and (indices.min() < 0 or indices.max() >= len(terms)))
            or (counts.size and counts.min() < 1)
            or (n and (arrays["classes"].min() < 0 or arrays["classes"].max() >= n_classes))
            or len(set(chunk_ids)) != n
        ):
            raise StoreUnavailableError("lexical index arrays are inconsistent")
        index._vocab = {t: i for i, t in enumerate(terms)}
        index._sources = {s: i for i, s in enumerate(meta["sources"])}
        index._doc_types = {t: i for i, t in enumerate(meta["doc_types"])}
        for entry in meta["access_classes"]:
            index._class_id(int(entry["rank"]), frozenset(entry["groups"]))
        index._restore(chunk_ids, doc_ids, arrays)
        return index

    def _restore(self, chunk_ids: list[str], doc_ids: list[str], arrays: dict[str, Any]) -> None:
        """The per-slot state and class statistics of saved (validated) arrays, in bulk: what
        ``_append_slot`` per slot makes (tested equal), without a million numpy calls (a 1M
        index opened in ~35 s that way)."""
        indptr = np.asarray(arrays["indptr"], dtype=np.int64)
        # Views of the loaded arrays, not copies: at 1M chunks the copies were ~0.8 GB.
        indices = np.asarray(arrays["indices"], dtype=np.int32)
        counts = np.asarray(arrays["counts"], dtype=np.int32)
        classes = np.asarray(arrays["classes"], dtype=np.int64)
        bounds = indptr.tolist()
        self._terms = [indices[a:b] for a, b in itertools.pairwise(bounds)]
        self._counts = [counts[a:b] for a, b in itertools.pairwise(bounds)]
        n_terms = len(self._vocab)
        matrix = sp.csr_matrix((counts, indices, indptr), shape=(len(chunk_ids), n_terms))
        self._loaded = matrix
        lengths = np.asarray(matrix.sum(axis=1, dtype=np.int64)).reshape(-1)
        self._chunk_ids = list(chunk_ids)
        self._doc_ids = list(doc_ids)
        self._source_codes = np.asarray(arrays["sources"]).tolist()
        self._doc_type_codes = np.asarray(arrays["doc_types"]).tolist()
        self._modified = np.asarray(arrays["modified"]).tolist()
        self._class_of = classes.tolist()
        self._length = lengths.tolist()
        self._alive = [True] * len(chunk_ids)
        self._slot_of_chunk = {chunk_id: slot for slot, chunk_id in enumerate(chunk_ids)}
        slots_of_doc: dict[str, set[int]] = {}
        for slot, doc_id in enumerate(doc_ids):
            slots_of_doc.setdefault(doc_id, set()).add(slot)
        self._slots_of_doc = slots_of_doc
        # Per class: chunks, tokens, and chunks holding each term (each slot's terms are
        # distinct, so a bincount of the class's postings), one contiguous slice per class.
        n_classes = len(self._class_keys)
        order = np.argsort(classes, kind="stable")
        grouped = matrix[order]
        class_start = np.searchsorted(classes[order], np.arange(n_classes + 1))
        for c in range(n_classes):
            first, stop = int(class_start[c]), int(class_start[c + 1])
            postings = grouped.indices[grouped.indptr[first] : grouped.indptr[stop]]
            self._class_df[c][:n_terms] += np.bincount(postings, minlength=n_terms)[:n_terms]
            self._class_docs[c] = stop - first
            self._class_len[c] = int(lengths[order[first:stop]].sum())


def _class_postings(
    matrix: sp.csr_matrix, classes: npt.NDArray[np.int32], lengths: IntArray, n_classes: int
) -> ClassPostings:
    """``matrix``'s rows grouped by class (stable), as CSC postings with sorted rows."""
    # Rows in class order, so a search reads only the runs of the classes its scope sees.
    row_slot = np.argsort(classes, kind="stable").astype(np.int64)
    # Term counts in the narrowest unsigned type that holds them (uint8 for chunks, as a rule),
    # before the copies below: at 1M chunks the int32 counts of both matrices were ~0.7 GB.
    top = int(matrix.data.max()) if matrix.nnz else 0
    for narrow in (np.uint8, np.uint16):
        if top <= np.iinfo(narrow).max:
            matrix = sp.csr_matrix(
                (matrix.data.astype(narrow), matrix.indices, matrix.indptr), shape=matrix.shape
            )
            break
    postings = matrix[row_slot].tocsc()
    postings.sort_indices()
    class_start = np.searchsorted(classes[row_slot], np.arange(n_classes + 1)).astype(np.int64)
    return ClassPostings(
        matrix=postings,
        row_slot=row_slot,
        class_start=class_start,
        row_length=lengths[row_slot].astype(np.int32),  # half the bytes a search reads
    )


def _document_postings(
    chunks: sp.csr_matrix,
    docs: npt.NDArray[np.int32],
    classes: npt.NDArray[np.int32],
    lengths: IntArray,
    n_docs: int,
    n_classes: int,
) -> tuple[ClassPostings | None, IntArray]:
    """Per-document postings (term counts and lengths summed over each document's chunks) and
    the prefix sums of their lengths in row order; None when a document's chunks are in more
    than one access class (relabelled part-way), which the document leg then groups per query."""
    doc_class = np.full(n_docs, -1, dtype=np.int32)
    doc_class[docs] = classes
    if n_docs and np.any(doc_class[docs] != classes):
        return None, np.zeros(1, dtype=np.int64)
    n_slots = docs.shape[0]
    membership = sp.csr_matrix(
        (np.ones(n_slots, dtype=np.int32), (docs, np.arange(n_slots))), shape=(n_docs, n_slots)
    )
    summed = (membership @ chunks).tocsr()
    doc_length = np.bincount(docs, weights=lengths, minlength=n_docs).astype(np.int64)
    postings = _class_postings(summed, doc_class, doc_length, n_classes)
    total = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(doc_length[postings.row_slot], out=total[1:])
    return postings, total


def _best(keys: IntArray, scores: FloatArray, limit: int) -> tuple[IntArray, FloatArray]:
    """The entries whose score is among the ``limit`` best, every tie at the cut included (the
    caller orders them and breaks those ties by its own key, so the cut does not depend on the
    order candidates were found in)."""
    if scores.shape[0] <= limit:
        return keys, scores
    cut = np.partition(scores, scores.shape[0] - limit)[scores.shape[0] - limit]
    wanted = scores >= cut
    return keys[wanted], scores[wanted]


def _by_score_then_id(pair: tuple[str, float]) -> tuple[float, str]:
    return (-pair[1], pair[0])
