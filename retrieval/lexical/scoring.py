"""BM25 scoring as plain functions over postings (no state, no access decisions).

Chunk scoring is exactly rank_bm25's ``BM25Okapi`` (Trotman et al., "Improvements to BM25 and
Language Models Examined"): ``idf = log(N - n + 0.5) - log(n + 0.5)``, negative idfs replaced by
``epsilon * mean(idf over the vocabulary)``, term weight ``idf * tf (k1 + 1) / (tf + k1 (1 - b +
b |d| / avgdl))``, summed over query tokens (a repeated query token counts each time).
Document scoring uses the same weight over whole documents with Lucene's non-negative idf
``log(1 + (N - n + 0.5) / (n + 0.5))``.

Postings are grouped by access class (:class:`ClassPostings`: rows in class order, so each
term's postings are one contiguous run per class; rows are chunks, or whole documents), and the
functions read only the runs of the classes they are given: the caller passes the classes the
scope may see, so the postings read for a query (counted in :class:`SearchTrace`) never include
a document the caller cannot see. Finding the runs is a binary search per visible class in the
term's postings (a few index reads each, ``log2`` of the term's postings: the only cost that
depends on the rest of the index). The per-posting arithmetic is one numba-compiled loop
(:func:`score_rows`), with the same IEEE operations in the same order as the numpy formula.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
CountArray = npt.NDArray[np.integer[Any]]  # term counts: uint8, uint16 or int32
_Function = TypeVar("_Function", bound=Callable[..., Any])


@dataclass
class SearchTrace:
    """Work done by one search, for tests and benchmarks: postings entries read, and slots of
    the documents a ``doc_ids`` filter names that were gathered to filter by."""

    postings_read: int = 0
    document_filter_slots: int = 0


@dataclass(frozen=True)
class RowRuns:
    """The row ranges of a set of access classes, adjacent ranges merged (a broad scope's
    classes are mostly neighbours, so a term's visible postings are then one slice)."""

    starts: IntArray
    ends: IntArray


@dataclass(frozen=True)
class ClassPostings:
    """Postings grouped by access class: ``matrix`` is (rows, terms) term counts in CSC form with
    sorted row indices, rows ordered by class (class ``c`` owns rows ``class_start[c]`` to
    ``class_start[c + 1]``), ``row_slot[row]`` is the index-wide position each row stands for
    (a chunk's slot, or a document's code) and ``row_length[row]`` its length in tokens."""

    matrix: sp.csc_matrix
    row_slot: IntArray
    class_start: IntArray
    row_length: npt.NDArray[np.int32]

    @property
    def n_rows(self) -> int:
        return int(self.matrix.shape[0])

    def runs(self, classes: IntArray) -> RowRuns:
        """The rows of ``classes`` (ascending class ids) as merged ranges."""
        starts = self.class_start[classes]
        ends = self.class_start[classes + 1]
        if starts.size < 2:
            return RowRuns(starts, ends)
        opens = np.ones(starts.size, dtype=bool)
        opens[1:] = starts[1:] != ends[:-1]
        first = np.flatnonzero(opens)
        last = np.append(first[1:] - 1, starts.size - 1)
        return RowRuns(starts[first], ends[last])

    def _bounds(self, term: int, runs: RowRuns) -> tuple[int, IntArray, IntArray]:
        start = int(self.matrix.indptr[term])
        column = self.matrix.indices[start : int(self.matrix.indptr[term + 1])]
        return start, np.searchsorted(column, runs.starts), np.searchsorted(column, runs.ends)

    def ranges(self, term: int, runs: RowRuns) -> tuple[IntArray, IntArray]:
        """Positions in ``matrix.indices`` / ``matrix.data`` of the postings of ``term`` in
        ``runs``: one [start, end) range per run (binary searches, nothing read)."""
        start, low, high = self._bounds(term, runs)
        return start + low, start + high

    def count(self, term: int, runs: RowRuns) -> int:
        """How many rows of ``runs`` hold ``term`` (binary searches only, no postings read)."""
        _, low, high = self._bounds(term, runs)
        return int((high - low).sum())

    def term(
        self, term: int, runs: RowRuns, trace: SearchTrace | None = None
    ) -> tuple[IntArray, CountArray]:
        """(rows, term counts) of the rows of ``runs`` that hold ``term``, ascending, reading only
        those postings (their ranges are found by binary search)."""
        start, low, high = self._bounds(term, runs)
        lengths = high - low
        total = int(lengths.sum())
        if trace is not None:
            trace.postings_read += total
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        ranges = [(start + int(a), start + int(z)) for a, z in zip(low, high, strict=True) if z > a]
        if len(ranges) == 1:  # one range: a view, nothing copied
            first, stop = ranges[0]
            return self.matrix.indices[first:stop], self.matrix.data[first:stop]
        indices, data = self.matrix.indices, self.matrix.data
        return (
            np.concatenate([indices[a:z] for a, z in ranges]),
            np.concatenate([data[a:z] for a, z in ranges]),
        )


@dataclass(frozen=True)
class ScopeStats:
    """Okapi statistics of the chunks one scope can see."""

    n_docs: int
    avgdl: float
    df: IntArray  # per term id: visible chunks holding it
    idf: FloatArray  # per term id; 0 for terms the scope's chunks do not contain


def okapi_stats(
    df_per_class: Sequence[IntArray],
    docs_per_class: Sequence[int],
    length_per_class: Sequence[int],
    visible: Sequence[int],
    n_terms: int,
    epsilon: float,
) -> ScopeStats:
    """N, df, average length and idf over the ``visible`` classes (integer sums: exact, so the
    order classes were created in cannot change a value)."""
    n_docs = sum(docs_per_class[c] for c in visible)
    total_len = sum(length_per_class[c] for c in visible)
    df = np.zeros(n_terms, dtype=np.int64)
    for c in visible:
        # A class's array grows only when its own chunks bring new terms, so it may be shorter
        # than the vocabulary that other classes grew (the missing tail is zeros).
        counts = df_per_class[c][:n_terms]
        df[: counts.shape[0]] += counts
    present = df > 0
    idf = np.zeros(n_terms, dtype=np.float64)
    if n_docs and present.any():
        n = df[present].astype(np.float64)
        raw = np.log(n_docs - n + 0.5) - np.log(n + 0.5)
        # fsum is exact, so the mean does not depend on the order of term ids.
        floor = epsilon * (math.fsum(raw.tolist()) / raw.shape[0])
        idf[present] = np.where(raw < 0, floor, raw)
        avgdl = total_len / n_docs
    else:
        n_docs, avgdl = 0, 0.0  # no vocabulary: rank_bm25 cannot score this corpus either
    return ScopeStats(n_docs=n_docs, avgdl=avgdl, df=df, idf=idf)


def term_weight(
    idf: float, tf: FloatArray, length: FloatArray, avgdl: float, k1: float, b: float
) -> FloatArray:
    return idf * (tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * length / avgdl)))


@dataclass(frozen=True)
class QueryTerm:
    """One query term as scored: its id, times it occurs in the query, and its idf."""

    term: int
    times: int
    idf: float


def score_rows(
    postings: ClassPostings,
    runs: RowRuns,
    terms: Sequence[QueryTerm],
    avgdl: float,
    k1: float,
    b: float,
    trace: SearchTrace | None = None,
    limit: int | None = None,
) -> tuple[IntArray, FloatArray]:
    """(rows, Okapi scores) of the rows of ``runs`` whose score is positive (in no particular
    order), from those rows' postings of ``terms``; with ``limit``, only those whose score is
    among the ``limit`` best (every tie at the cut included, so the caller's tie-break decides).

    ``terms`` in query-text order: each row's score is accumulated in that order starting at
    0.0, so it does not depend on what else the index holds. The per-posting work is one
    compiled loop (:func:`_accumulate`): the same IEEE operations, in the same order, as
    :func:`term_weight` over numpy arrays, without numpy's temporary array per operation (at
    1M chunks a broad query reads up to ~1.5M postings; numpy's passes took 28 / 55 ms p50 /
    p95 of CPU, the loop a few ms).
    """
    terms = [t for t in terms if t.idf != 0.0]
    starts: list[IntArray] = []
    ends: list[IntArray] = []
    for t in terms:
        low, high = postings.ranges(t.term, runs)
        starts.append(low)
        ends.append(high)
    if not terms:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    n_ranges = np.array([low.shape[0] for low in starts], dtype=np.int64)
    start = np.concatenate(starts).astype(np.int64)
    end = np.concatenate(ends).astype(np.int64)
    total = int((end - start).sum())
    if trace is not None:
        trace.postings_read += total
    scores = np.zeros(postings.n_rows, dtype=np.float64)
    seen = np.zeros(postings.n_rows, dtype=np.bool_)
    touched = np.empty(total, dtype=np.int64)
    found = _accumulate(
        postings.matrix.indices,
        postings.matrix.data,
        start,
        end,
        n_ranges,
        np.array([t.idf for t in terms], dtype=np.float64),
        np.array([t.times for t in terms], dtype=np.float64),
        postings.row_length,
        float(avgdl),
        float(k1),
        float(b),
        scores,
        seen,
        touched,
    )
    if limit is not None and limit < found:
        rows = _best_rows(scores, touched, found, limit)
        return rows, scores[rows]
    rows = touched[:found]
    values = scores[rows]
    positive = values > 0
    return rows[positive], values[positive]


def _compiled(function: _Function) -> _Function:
    """``function`` compiled by numba, cached on disk where numba finds a writable place (next to
    this module, else the user's cache directory); where it finds none (a read-only install and
    home), compiled in each process instead of failing the import."""
    try:
        return cast(_Function, numba.njit(cache=True, nogil=True)(function))
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return cast(_Function, numba.njit(nogil=True)(function))


def compile_kernels() -> None:
    """Compile the scoring loops (or load them from numba's cache) now, for each type term
    counts are stored in, so that the first search does not pay for it (seconds when cold)."""
    for count_type in (np.uint8, np.uint16, np.int32):
        counts = sp.csc_matrix(np.ones((2, 1), dtype=count_type))
        counts.sort_indices()
        postings = ClassPostings(
            matrix=counts,
            row_slot=np.arange(2, dtype=np.int64),
            class_start=np.array([0, 2], dtype=np.int64),
            row_length=np.ones(2, dtype=np.int32),
        )
        runs = postings.runs(np.zeros(1, dtype=np.int64))
        score_rows(postings, runs, [QueryTerm(0, 1, 1.0)], 1.0, 0.9, 0.4, limit=1)


@_compiled
def _accumulate(  # pragma: no cover - compiled; covered through score_rows
    indices: npt.NDArray[np.int32],
    data: CountArray,
    start: IntArray,
    end: IntArray,
    n_ranges: IntArray,
    idf: FloatArray,
    times: FloatArray,
    row_length: npt.NDArray[np.int32],
    avgdl: float,
    k1: float,
    b: float,
    scores: FloatArray,
    seen: npt.NDArray[np.bool_],
    touched: IntArray,
) -> int:
    """Add each term's weight to the score of every row in its ranges, term by term in the
    given order; ``touched`` receives each row once. Returns how many rows were touched."""
    found = 0
    first = 0
    for t in range(idf.shape[0]):
        for r in range(first, first + n_ranges[t]):
            for p in range(start[r], end[r]):
                row = indices[p]
                tf = float(data[p])
                length = float(row_length[row])
                weight = times[t] * (
                    idf[t] * (tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * length / avgdl)))
                )
                if not seen[row]:
                    seen[row] = True
                    touched[found] = row
                    found += 1
                scores[row] += weight
        first += n_ranges[t]
    return found


def score_documents(
    postings: ClassPostings,
    runs: RowRuns,
    query_terms: Sequence[tuple[int, int]],
    included: npt.NDArray[np.bool_],
    doc_of_slot: npt.NDArray[np.int32],
    doc_len: FloatArray,
    n_docs: int,
    avgdl: float,
    k1: float,
    b: float,
    trace: SearchTrace | None = None,
) -> FloatArray:
    """BM25 per document over the ``included`` slots of the given classes: a document's term
    frequency is the sum over its included chunks, its length the sum of their lengths, N and
    df count documents."""
    doc_parts: list[IntArray] = []
    weight_parts: list[FloatArray] = []
    for term, times in query_terms:
        rows, counts = postings.term(term, runs, trace)
        slots = postings.row_slot[rows]
        keep = included[slots]
        if not keep.any():
            continue
        docs, inverse = np.unique(doc_of_slot[slots[keep]], return_inverse=True)
        tf = np.bincount(inverse.reshape(-1), weights=counts[keep].astype(np.float64)).astype(
            np.float64, copy=False
        )
        df = float(docs.shape[0])
        idf = math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
        doc_parts.append(docs.astype(np.int64))
        weight_parts.append(times * term_weight(idf, tf, doc_len[docs], avgdl, k1, b))
    if not doc_parts:
        return np.zeros(doc_len.shape[0], dtype=np.float64)
    # One entry per (term, document), in query-term order: each document's sum is accumulated
    # in the same order whatever else the index holds.
    scores = np.bincount(
        np.concatenate(doc_parts), weights=np.concatenate(weight_parts), minlength=doc_len.shape[0]
    )
    return scores.astype(np.float64, copy=False)


@_compiled
def _best_rows(  # pragma: no cover - compiled; covered through score_rows
    scores: FloatArray, touched: IntArray, found: int, limit: int
) -> IntArray:
    """The touched rows with a positive score among the ``limit`` best, ties at the cut
    included: a min-heap of the ``limit`` best scores finds the cut in one pass."""
    heap = [np.inf for _ in range(0)]
    for i in range(found):
        value = scores[touched[i]]
        if value <= 0.0:
            continue
        if len(heap) < limit:
            heapq.heappush(heap, value)
        elif value > heap[0]:
            heapq.heapreplace(heap, value)
    cut = heap[0] if len(heap) == limit else 0.0
    count = 0
    for i in range(found):
        value = scores[touched[i]]
        if value > 0.0 and value >= cut:
            count += 1
    rows = np.empty(count, dtype=np.int64)
    count = 0
    for i in range(found):
        value = scores[touched[i]]
        if value > 0.0 and value >= cut:
            rows[count] = touched[i]
            count += 1
    return rows
