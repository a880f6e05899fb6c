"""One search request over one opened index version, as named steps.

``ServingIndex.search`` calls them in this order:

1. ``embed_query``: the query vector (dense and hybrid modes);
2. ``search_legs``: dense, BM25 chunk and BM25 document legs, each with the caller's scope
   applied inside the store or index, before its top-k (never filtered afterwards only), and
   a ``doc_ids`` filter first narrowed to the documents the scope may see;
3. ``hydrate``: the chunks of BM25 hits the dense leg did not return (a hit that cannot be
   hydrated is an integrity error, never a silently dropped result). Fusion needs each hit's
   document and date, and the reranker its text, so this comes before them;
4. ``fuse``: one ranking from the legs (``retrieval.fusion``), plus the recency leg if asked;
5. ``rerank``: the cross-encoder reorders the head of that ranking;
6. ``top_k`` then ``enforce_access``: the first k hits with their score breakdowns, each checked
   against the scope again on the way out (``retrieval.access.enforce``);
7. ``result``: the response, with timings per step (and, when the request names a text in
   ``document_terms_of``, which of its terms each result document's visible chunks hold).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from citewell.core.errors import IndexIntegrityError, ModelError
from citewell.core.logging import log_event
from citewell.core.models import (
    Chunk,
    ScoreBreakdown,
    ScoredChunk,
    SearchFilters,
    SearchMode,
    SearchRequest,
    SearchResult,
)
from citewell.core.settings import Settings
from citewell.retrieval.access import AccessScope, enforce, filter_values
from citewell.retrieval.fusion import FusionChoice
from citewell.retrieval.index import OpenedVersion
from citewell.retrieval.protocols import Embedder, Reranker, Vector

logger = logging.getLogger(__name__)

Ranking = list[tuple[str, float]]  # chunk ids, best first
_TAIL_GAP = 1e-3  # between the reranked head's last score and the first hit after it


@dataclass(frozen=True)
class Legs:
    """What each leg found, best first; every leg saw only what the scope allows."""

    dense: list[tuple[Chunk, float]]
    bm25_chunks: Ranking
    bm25_documents: list[tuple[str, float]]  # document ids


@dataclass(frozen=True)
class Candidates:
    """Every chunk the legs found, with what fusion and the recency leg need to know of it."""

    chunks: dict[str, Chunk]
    document_of: dict[str, str]  # chunk id -> document id
    dates: dict[str, datetime]  # document id -> stated date (only when recency is asked for)


class HybridSearch:
    """The steps of one request (see the module docstring), with the request's scope, depth,
    reranker and fusion fixed at the start."""

    def __init__(
        self,
        opened: OpenedVersion,
        scope: AccessScope,
        request: SearchRequest,
        settings: Settings,
        *,
        reranker: tuple[Reranker | None, str | None],
        fusion: FusionChoice,
    ) -> None:
        self._started = time.perf_counter()
        self.opened, self.scope, self.request, self.fusion = opened, scope, request, fusion
        self.filters = request.filters  # narrowed by ``search_legs``
        self.rerank_candidates = settings.rerank_candidates
        self.reranker = reranker[0] if request.rerank else None
        self.rerank_note = None
        if request.rerank and self.reranker is None:
            self.rerank_note = reranker[1] or "no reranker available"
        self.depth = max(request.k, settings.candidates_per_leg)
        if self.reranker is not None:
            self.depth = max(self.depth, settings.rerank_candidates)
        self.recency = settings.recency_weight if request.prefer_recent else 0.0
        self.reranked = False
        # Set when the reranker could not be loaded: the service stops trying it (see rerank).
        self.reranker_unloadable: ModelError | None = None
        self.timings: dict[str, float] = {}
        self.breakdown: dict[str, dict[str, float | int]] = {}

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        tick = time.perf_counter()
        yield
        self.timings[step] = _ms(tick)

    def nothing_visible(self) -> SearchResult:
        """The answer for a scope that matches nothing: no leg runs."""
        self.timings = {"total": 0.0}
        return self._response([])

    # --- 1. embed query -------------------------------------------------------------------
    def embed_query(self, embedder: Embedder) -> Vector | None:
        if self.request.mode not in (SearchMode.DENSE, SearchMode.HYBRID):
            return None
        with self._timed("embed"):
            return embedder.embed_query(self.request.query)

    # --- 2. legs (the scope is applied inside each) ---------------------------------------
    def search_legs(self, vector: Vector | None) -> Legs:
        mode = self.request.mode
        filters = self._narrowed_filters()
        if filters is None:
            return Legs(dense=[], bm25_chunks=[], bm25_documents=[])
        self.filters = filters
        legs = Legs(
            dense=self._dense_leg(vector) if vector is not None else [],
            bm25_chunks=self._bm25_chunk_leg() if mode != SearchMode.DENSE else [],
            bm25_documents=self._bm25_document_leg()
            if mode == SearchMode.HYBRID and self.fusion.document_share > 0
            else [],
        )
        for rank, (chunk, score) in enumerate(legs.dense, start=1):
            self.breakdown.setdefault(chunk.chunk_id, {}).update(dense_rank=rank, dense_score=score)
        for rank, (cid, score) in enumerate(legs.bm25_chunks, start=1):
            self.breakdown.setdefault(cid, {}).update(bm25_rank=rank, bm25_score=score)
        return legs

    def _narrowed_filters(self) -> SearchFilters | None:
        """The request's filters with ``doc_ids`` narrowed to the named documents the scope may
        see; None when it names none of those (an empty set would mean "no filter"). Passed on
        as written, a restricted document's id made the vector store check each of its points
        against the access filter, so the search's time told whether that document exists."""
        filters = self.request.filters
        named = filter_values(filters.doc_ids)
        if named is None:
            return filters
        visible = self.opened.lexical.visible_documents(named, self.scope)
        if not visible:
            return None
        return filters.model_copy(update={"doc_ids": visible})

    def _dense_leg(self, vector: Vector) -> list[tuple[Chunk, float]]:
        with self._timed("dense"):
            return self.opened.vectors.search(vector, self.scope, self.filters, self.depth)

    def _bm25_chunk_leg(self) -> Ranking:
        with self._timed("bm25"):
            return self.opened.lexical.search(
                self.request.query, self.scope, self.filters, self.depth
            )

    def _bm25_document_leg(self) -> list[tuple[str, float]]:
        # Document-level BM25 under the same scope and filters as the chunk legs.
        with self._timed("bm25_documents"):
            return self.opened.lexical.document_search(
                self.request.query, self.scope, self.filters, self.depth
            )

    # --- 3. hydrate -----------------------------------------------------------------------
    def hydrate(self, legs: Legs) -> Candidates:
        chunks = {chunk.chunk_id: chunk for chunk, _ in legs.dense}
        missing = [cid for cid, _ in legs.bm25_chunks if cid not in chunks]
        if missing:
            with self._timed("hydrate"):
                found = self.opened.vectors.get_chunks(missing)
            chunks.update((chunk.chunk_id, chunk) for chunk in found)
            self._refuse_unhydrated([cid for cid in missing if cid not in chunks])
        dates = _document_dates(chunks.values()) if self.recency > 0 else {}
        return Candidates(chunks, {cid: c.doc_id for cid, c in chunks.items()}, dates)

    def _refuse_unhydrated(self, lost: list[str]) -> None:
        """The BM25 index and the vector store disagree: dropping the hits would serve a
        silently partial answer from a damaged version."""
        if not lost:
            return
        meta = self.opened.meta
        where = {"index": meta.index, "version": meta.version}
        log_event(logger, logging.ERROR, "index.unhydratable_hits", **where, chunk_ids=lost[:20])
        problem = f"{len(lost)} BM25 hit(s) have no chunk in the vector store"
        raise IndexIntegrityError(meta.version, [problem])

    # --- 4. fuse --------------------------------------------------------------------------
    def fuse(self, legs: Legs, candidates: Candidates) -> Ranking:
        mode = self.request.mode
        if mode == SearchMode.DENSE:
            ranked = [(chunk.chunk_id, score) for chunk, score in legs.dense]
        elif mode == SearchMode.BM25:
            ranked = list(legs.bm25_chunks)
        else:
            dense = [(chunk.chunk_id, score) for chunk, score in legs.dense]
            fused = self.fusion.fuse(
                dense, legs.bm25_chunks, legs.bm25_documents, candidates.document_of
            )
            if candidates.dates:
                fused = self.fusion.add_recency(
                    fused, candidates.document_of, candidates.dates, self.recency
                )
            ranked = _by_score(fused)
            self._record("fused", ranked)
        if candidates.dates and mode != SearchMode.HYBRID:
            # A single leg has raw scores; put it on the fusion's scale to add the recency leg.
            ranked = self._with_recency(ranked, candidates)
            self._record("fused", ranked)
        return [(cid, score) for cid, score in ranked if cid in candidates.chunks]

    def _with_recency(self, ranked: Ranking, candidates: Candidates) -> Ranking:
        single = self.fusion.single(ranked)
        return _by_score(
            self.fusion.add_recency(single, candidates.document_of, candidates.dates, self.recency)
        )

    def _record(self, key: str, ranked: Ranking) -> None:
        for cid, score in ranked:
            self.breakdown[cid][key] = score

    # --- 5. rerank ------------------------------------------------------------------------
    def rerank(self, ranked: Ranking, candidates: Candidates) -> Ranking:
        if self.reranker is None or not ranked:
            return ranked
        with self._timed("rerank"):
            head = ranked[: self.rerank_candidates]
            texts = [candidates.chunks[cid].text for cid, _ in head]
            scores = self._cross_encoder_scores(self.reranker, texts)
            if scores is None:
                return ranked
            rescored = sorted(
                zip([cid for cid, _ in head], scores, strict=True), key=lambda p: -p[1]
            )
            self._record("rerank", rescored)
            if candidates.dates:
                # The cross-encoder orders by relevance alone; add the recency leg to its order
                # too, or reranking would undo what the request asked for.
                rescored = self._with_recency(rescored, candidates)
            self.reranked = True
            return rescored + _below(ranked[len(head) :], rescored[-1][1])

    def _cross_encoder_scores(self, reranker: Reranker, texts: list[str]) -> list[float] | None:
        """One finite score per text, or None (the note says why) when the reranker cannot give
        them. Reranking is a quality step over rankings the legs already produced under the
        scope: its failure leaves the fused order, never a 503, nor an order of NaN comparisons.
        Its runtimes (torch, ONNX Runtime, OpenVINO) raise their own types, hence the breadth."""
        try:
            reranker.warm_up()
        except ModelError as exc:
            # Only a failed load stops the service trying it: an inference error (OpenVINO
            # raises ModelError for those too) may pass with the next request.
            self.reranker_unloadable = exc
            self._rerank_failed("the reranker could not be loaded", reranker, exc)
            return None
        try:
            scores = [float(value) for value in reranker.score(self.request.query, texts)]
        except Exception as exc:
            self._rerank_failed("the reranker failed", reranker, exc)
            return None
        if len(scores) != len(texts) or not all(math.isfinite(value) for value in scores):
            problem = ValueError(f"{len(scores)} scores for {len(texts)} passages, not all finite")
            self._rerank_failed("the reranker failed", reranker, problem)
            return None
        return scores

    def _rerank_failed(self, what: str, reranker: Reranker, exc: Exception) -> None:
        self.rerank_note = f"{what}; results are not reranked"
        fields = {"index": self.opened.meta.index, "reranker": reranker.name}
        error = f"{type(exc).__name__}: {exc}"[:300]
        log_event(logger, logging.ERROR, "rerank.failed", **fields, error=error)

    # --- 6. top k, access enforced on the way out -----------------------------------------
    def top_k(self, ranked: Ranking, candidates: Candidates) -> list[ScoredChunk]:
        return [
            ScoredChunk(
                chunk=candidates.chunks[cid],
                score=score,
                scores=ScoreBreakdown.model_validate(self.breakdown.get(cid, {})),
            )
            for cid, score in ranked[: self.request.k]
        ]

    def enforce_access(self, results: list[ScoredChunk]) -> list[ScoredChunk]:
        return enforce(self.scope, results)

    # --- 7. result ------------------------------------------------------------------------
    def result(self, results: list[ScoredChunk]) -> SearchResult:
        self.timings["total"] = _ms(self._started)
        return self._response(results, self._document_terms(results))

    def _document_terms(self, results: list[ScoredChunk]) -> dict[str, frozenset[str]]:
        """Asked for by the agent: which of its key terms each result document holds (read
        under the same scope; only documents already in the visible results)."""
        text = self.request.document_terms_of
        if not text or not results:
            return {}
        with self._timed("document_terms"):
            return self.opened.lexical.document_terms(
                text, self.scope, {r.chunk.doc_id for r in results}
            )

    def _response(
        self,
        results: list[ScoredChunk],
        document_terms: dict[str, frozenset[str]] | None = None,
    ) -> SearchResult:
        return SearchResult(
            results=tuple(results),
            mode=self.request.mode,
            reranked=self.reranked,
            rerank_note=self.rerank_note,
            index_version=self.opened.version,
            timings_ms=self.timings,
            document_terms=document_terms or {},
        )


def _below(tail: Ranking, floor: float) -> Ranking:
    """``tail`` (fused order) shifted, where needed, to score below ``floor``, the reranked
    head's last score, keeping its order and spacing: ``score`` falls with rank across the
    whole result, so a client may cut or merge by it. The breakdown keeps the fused score."""
    if not tail or tail[0][1] < floor:
        return tail
    shift = tail[0][1] - floor + _TAIL_GAP
    return [(cid, score - shift) for cid, score in tail]


def _document_dates(chunks: Iterable[Chunk]) -> dict[str, datetime]:
    """Each candidate document's stated date (naive dates read as UTC, as filters read them)."""
    dates: dict[str, datetime] = {}
    for chunk in chunks:
        value = chunk.document_date
        if value is not None:
            dates[chunk.doc_id] = value if value.tzinfo else value.replace(tzinfo=UTC)
    return dates


def _by_score(scores: dict[str, float] | Ranking) -> Ranking:
    pairs = scores.items() if isinstance(scores, dict) else scores
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)
