"""BM25 scoring as plain functions over postings (no state, no access decisions).

Chunk scoring is exactly rank_bm25's ``BM25Okapi`` (Trotman et al., "Improvements to BM25 and
Language Models Examined"): ``idf = log(N - n + 0.5) - log(n + 0.5)``, negative idfs replaced by
``epsilon * mean(idf over the vocabulary)``, term weight ``idf * tf (k1 + 1) / (tf + k1 (1 - b +
b |d| / avgdl))``, summed over query tokens (a repeated query token counts each time).
Document scoring uses the same weight over whole documents with Lucene's non-negative idf
``log(1 + (N - n + 0.5) / (n + 0.5))``.

Postings are grouped by access class (:class:`ClassPostings`: rows in class order, so each
term's postings are one contiguous run per class), and the functions read only the runs of the
classes they are given: the caller passes the classes the scope may see, so the postings read for
a query (counted in :class:`SearchTrace`) never include a document the caller cannot see. Finding
the runs is a binary search per visible class in the term's postings (a few index reads each,
``log2`` of the term's postings: the only cost that depends on the rest of the index).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class SearchTrace:
    """Work done by one search, for tests and benchmarks: postings entries read."""

    postings_read: int = 0


@dataclass(frozen=True)
class ClassPostings:
    """Postings grouped by access class: ``matrix`` is (rows, terms) term counts in CSC form with
    sorted row indices, rows ordered by class (class ``c`` owns rows ``class_start[c]`` to
    ``class_start[c + 1]``), and ``row_slot[row]`` is the index-wide slot of each row."""

    matrix: sp.csc_matrix
    row_slot: IntArray
    class_start: IntArray

    def term(
        self, term: int, classes: IntArray, trace: SearchTrace | None = None
    ) -> tuple[IntArray, npt.NDArray[np.int32]]:
        """(slots, term counts) of the rows of ``classes`` that hold ``term``, reading only those
        postings (their runs are found by binary search)."""
        start, end = int(self.matrix.indptr[term]), int(self.matrix.indptr[term + 1])
        column = self.matrix.indices[start:end]
        low = np.searchsorted(column, self.class_start[classes])
        high = np.searchsorted(column, self.class_start[classes + 1])
        lengths = high - low
        total = int(lengths.sum())
        if trace is not None:
            trace.postings_read += total
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        # Positions of every run, concatenated: run i covers low[i] .. high[i] - 1.
        run_offsets = np.cumsum(lengths) - lengths
        positions = start + np.repeat(low - run_offsets, lengths) + np.arange(total)
        return self.row_slot[self.matrix.indices[positions]], self.matrix.data[positions]


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


def score_chunks(
    postings: ClassPostings,
    classes: IntArray,
    query_terms: Sequence[tuple[int, int]],
    stats: ScopeStats,
    lengths: FloatArray,
    n_slots: int,
    k1: float,
    b: float,
    trace: SearchTrace | None = None,
) -> FloatArray:
    """Okapi score per slot (0 where no query term occurs), from the given classes' postings.
    ``query_terms``: (term id, times in the query) in query-text order, so that each slot's sum
    is accumulated in the same order whatever else the index holds."""
    slot_parts: list[IntArray] = []
    weight_parts: list[FloatArray] = []
    for term, times in query_terms:
        idf = float(stats.idf[term])
        if idf == 0.0:
            continue
        slots, counts = postings.term(term, classes, trace)
        if slots.shape[0] == 0:
            continue
        tf = counts.astype(np.float64)
        slot_parts.append(slots)
        weight_parts.append(times * term_weight(idf, tf, lengths[slots], stats.avgdl, k1, b))
    if not slot_parts:
        return np.zeros(n_slots, dtype=np.float64)
    scores = np.bincount(
        np.concatenate(slot_parts), weights=np.concatenate(weight_parts), minlength=n_slots
    )
    return scores.astype(np.float64, copy=False)


def score_documents(
    postings: ClassPostings,
    classes: IntArray,
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
        slots, counts = postings.term(term, classes, trace)
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
