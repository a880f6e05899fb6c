"""The search service: hybrid retrieval over the published index version, with access enforced
inside every leg and checked again on the way out.

``ServingIndex`` follows the published version: ``maybe_reload()`` switches atomically to a newer
version; searches already running finish on the version they started with (reference counted).
A version that fails its integrity check is never switched to (the version being served keeps
serving); one whose files change while it is served stops serving (searches raise
``IndexIntegrityError``, 503) until a version that passes is published or rolled back to.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from citewell.core.errors import (
    CitewellError,
    IndexIntegrityError,
    IndexNotFoundError,
    ModelError,
    StoreUnavailableError,
)
from citewell.core.logging import log_event
from citewell.core.models import (
    Chunk,
    Frozen,
    Principal,
    ScoreBreakdown,
    ScoredChunk,
    SearchMode,
    SearchRequest,
    SearchResult,
)
from citewell.core.settings import Settings
from citewell.retrieval.access import AccessScope, enforce, scope_for
from citewell.retrieval.embedding import backend_of_key
from citewell.retrieval.factory import (
    GATED_OFF_PREFIX,
    build_embedder,
    embedding_model_id,
    gate_reranker,
    resolve_index_reranker,
)
from citewell.retrieval.fusion import FUSION_FILE, FusionChoice, load_tuned_fusion, settings_fusion
from citewell.retrieval.index import (
    IndexLayout,
    OpenedVersion,
    check_embedding_backend,
    open_version,
)
from citewell.retrieval.protocols import Embedder, Reranker
from citewell.retrieval.readiness import NotReadyReason, Readiness

logger = logging.getLogger(__name__)

# A refused version is checked again at most this often: readiness probes and the reload loop
# would otherwise re-read every file (and log the refusal) several times a minute.
REVERIFY_REFUSED_S = 60.0


class IndexStatus(Frozen):
    index: str
    version: str | None
    documents: int
    chunks: int
    reranker: str | None
    reranker_note: str | None
    loaded_at: datetime | None


class _Lease:
    """A published version plus the number of searches using it."""

    def __init__(self, opened: OpenedVersion) -> None:
        self.opened = opened
        self.users = 0
        self.retired = False
        self.loaded_at = datetime.now(UTC)
        self.damage: IndexIntegrityError | None = None  # files changed since it was verified


class ServingIndex:
    """Implements ``SearchService`` over one named index."""

    def __init__(
        self,
        settings: Settings,
        index: str | None = None,
        *,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
        fusion: FusionChoice | None = None,
    ) -> None:
        self.settings = settings
        self.layout = IndexLayout(settings, index)
        self._embedder = embedder
        self._reranker_override = reranker
        self._reranker: Reranker | None = None
        self._reranker_note: str | None = None
        # What the last resolution looked at, and what it chose (before the gate).
        self._reranker_source: tuple[str | None, tuple[int, int] | None] | None = None
        self._resolved: tuple[Reranker | None, str] = (None, "")
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._last_error: str | None = None
        self._refused: tuple[str | None, float, IndexIntegrityError] | None = None
        self._repeated_refusal = False  # the last open re-raised a recent refusal
        self._fusion_override = fusion
        self._fusion_choice = settings_fusion(settings)
        self._fusion_stamp: int | None = None

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder

    def warm_up(self) -> None:
        """Open the published version and load the query embedder and reranker now."""
        if self._lease is None:
            self.load()
        self.embedder.warm_up()
        if self._reranker is not None:
            self._reranker.warm_up()

    def load(self) -> None:
        """Open the published version now (raises StoreUnavailableError/IndexNotFoundError,
        IndexIntegrityError for a version that fails its check)."""
        self._swap(self._open_current())

    def _open_current(self) -> OpenedVersion:
        current = self.layout.current_version()
        refused = self._refused
        if (
            refused is not None
            and refused[0] == current
            and time.monotonic() - refused[1] < REVERIFY_REFUSED_S
        ):
            self._repeated_refusal = True
            raise refused[2]
        self._repeated_refusal = False
        try:
            return open_version(self.settings, self.layout.name)
        except IndexIntegrityError as exc:
            self._refused = (exc.version, time.monotonic(), exc)
            raise

    def ready(self) -> bool:
        return self.readiness().ready

    def readiness(self) -> Readiness:
        """Whether a search of this index would succeed now: the one readiness check, shared by
        ``/readyz`` and ``citewell index ready`` (see ``retrieval/readiness.py``)."""
        if self._lease is None:
            try:
                self.load()
            except CitewellError as exc:
                self._last_error = str(exc)
                return Readiness(ready=False, reason=_reason_for(exc), detail=str(exc))
        lease = self._lease
        if lease is None:
            return Readiness(ready=False, reason="not_loaded", detail=self._last_error)
        version = lease.opened.version
        try:
            self._check_lease(lease)
            lease.opened.vectors.count()  # the store answers (a remote server is reachable)
            self.embedder.warm_up()
        except CitewellError as exc:
            return Readiness(ready=False, reason=_reason_for(exc), detail=str(exc), version=version)
        return Readiness(ready=True, version=version)

    def _check_lease(self, lease: _Lease) -> None:
        """Raise if the served version's files changed since it was verified (stat only)."""
        if lease.damage is None:
            problems = lease.opened.damage()
            if problems:
                lease.damage = IndexIntegrityError(lease.opened.version, problems)
                log_event(
                    logger,
                    logging.ERROR,
                    "index.version_refused",
                    index=self.layout.name,
                    version=lease.opened.version,
                    problems=problems[:20],
                    while_serving=True,
                )
        if lease.damage is not None:
            raise lease.damage

    def maybe_reload(self) -> bool:
        """Switch to a newer published version if there is one, or re-open the served one if its
        files changed (it serves again only once it passes the full check). Never raises for a
        failed reload: the version being served keeps serving (unless it is itself damaged) and
        the failure is logged."""
        current = self.layout.current_version()
        lease = self._lease
        if lease is not None:
            with contextlib.suppress(IndexIntegrityError):  # marks the lease damaged
                self._check_lease(lease)
        damaged = lease is not None and lease.damage is not None
        if current is None or (
            lease is not None and lease.opened.version == current and not damaged
        ):
            return False
        try:
            self._swap(self._open_current())
        except CitewellError as exc:
            self._last_error = str(exc)
            if self._repeated_refusal:
                return False  # logged when it was refused
            log_event(
                logger,
                logging.ERROR,
                "index.reload_failed",
                index=self.layout.name,
                version=current,
                error=str(exc),
                still_serving=None if lease is None or damaged else lease.opened.version,
            )
            return False
        return True

    def _swap(self, opened: OpenedVersion) -> None:
        if opened.meta.embedding_model != embedding_model_id(self.settings):
            opened.close()
            raise StoreUnavailableError(
                f"index {self.layout.name!r} was built with a different embedding model "
                f"({opened.meta.embedding_model}); rebuild it or configure that model"
            )
        try:
            check_embedding_backend(
                self.layout.name,
                opened.meta.vectors_backend,
                backend_of_key(self.embedder.cache_key),
            )
        except CitewellError:
            opened.close()
            raise
        self._select_reranker()
        with self._lock:
            old, self._lease = self._lease, _Lease(opened)
            if old is not None:
                old.retired = True
                if old.users == 0:
                    old.opened.close()
        log_event(
            logger,
            logging.INFO,
            "index.loaded",
            index=self.layout.name,
            version=opened.version,
            chunks=opened.meta.chunks,
        )

    def _select_reranker(self) -> None:
        if self._reranker_override is not None:
            self._reranker, self._reranker_note = self._reranker_override, None
            return
        trained = self.layout.rerankers_dir / "current"
        # A version switch (every refresh) keeps the loaded model when the same one would be
        # chosen: reloading it would stall the first reranked search after each refresh.
        # Publishing a trained model renames a new folder into place, so its inode changes.
        source = (self.settings.reranker_model, _folder_identity(trained))
        if self._reranker_source == source:
            reranker, note = self._resolved
        else:
            reranker, note = resolve_index_reranker(self.settings, self.layout.rerankers_dir)
            self._reranker_source, self._resolved = source, (reranker, note)
        reranker, note = gate_reranker(reranker, note, self.layout.rerankers_dir)
        if reranker is None:
            # Every result says so (reranked: false and why); the log warns only when a
            # configured model could not be used, else it is the normal offline default.
            configured = self.settings.reranker_model is not None and not note.startswith(
                GATED_OFF_PREFIX
            )
            log_event(
                logger,
                logging.WARNING if configured else logging.INFO,
                "rerank.unavailable",
                index=self.layout.name,
                reason=note,
            )
        self._reranker, self._reranker_note = reranker, note

    def fusion(self) -> FusionChoice:
        """The fusion in force: an explicit override, else the index's tuned record (re-read
        when the file changes, so `citewell eval tune-fusion` applies without a restart), else
        the settings. A broken record is logged and ignored: fusion is a quality choice, and
        serving with the configured fusion beats failing every search."""
        if self._fusion_override is not None:
            return self._fusion_override
        if not self.settings.use_tuned_fusion:
            return self._fusion_choice
        try:
            stamp: int | None = (self.layout.root / FUSION_FILE).stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp != self._fusion_stamp:
            choice = settings_fusion(self.settings)
            try:
                tuned = load_tuned_fusion(self.layout.root)
            except CitewellError as exc:
                log_event(
                    logger,
                    logging.ERROR,
                    "fusion.record_invalid",
                    index=self.layout.name,
                    error=str(exc),
                )
            else:
                choice = tuned.choice if tuned is not None else choice
            self._fusion_choice, self._fusion_stamp = choice, stamp
        return self._fusion_choice

    def close(self) -> None:
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.opened.close()

    def status(self) -> IndexStatus:
        lease = self._lease
        if lease is None:
            return IndexStatus(
                index=self.layout.name,
                version=None,
                documents=0,
                chunks=0,
                reranker=None,
                reranker_note=self._last_error,
                loaded_at=None,
            )
        meta = lease.opened.meta
        return IndexStatus(
            index=self.layout.name,
            version=meta.version,
            documents=meta.documents,
            chunks=meta.chunks,
            reranker=self._reranker.name if self._reranker else None,
            reranker_note=self._reranker_note,
            loaded_at=lease.loaded_at,
        )

    def _acquire(self) -> _Lease:
        if self._lease is None:
            self.load()
        with self._lock:
            lease = self._lease
            if lease is None:
                raise StoreUnavailableError(f"index {self.layout.name!r} is not loaded")
            if lease.damage is not None:
                raise lease.damage
            lease.users += 1
            return lease

    def _release(self, lease: _Lease) -> None:
        with self._lock:
            lease.users -= 1
            close = lease.retired and lease.users == 0
        if close:
            lease.opened.close()

    # --- search ---------------------------------------------------------------------------
    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        scope = scope_for(principal, self.settings.scheme, self.settings.default_groups)
        lease = self._acquire()
        try:
            return self._search(lease.opened, scope, request)
        except CitewellError:
            raise
        except Exception as exc:
            # An engine failure must surface as unavailable, never as partial results.
            raise StoreUnavailableError(f"search failed on index {self.layout.name!r}") from exc
        finally:
            self._release(lease)

    def _search(
        self, opened: OpenedVersion, scope: AccessScope, request: SearchRequest
    ) -> SearchResult:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        mode = request.mode
        rerank_requested = request.rerank
        reranker = self._reranker if rerank_requested else None
        note = None
        if rerank_requested and reranker is None:
            note = self._reranker_note or "no reranker available"
        if scope.matches_nothing:
            return SearchResult(
                results=(),
                mode=mode,
                reranked=False,
                rerank_note=note,
                index_version=opened.version,
                timings_ms={"total": 0.0},
            )
        depth = max(request.k, self.settings.candidates_per_leg)
        if reranker is not None:
            depth = max(depth, self.settings.rerank_candidates)

        dense: list[tuple[Chunk, float]] = []
        lexical: list[tuple[str, float]] = []
        if mode in (SearchMode.DENSE, SearchMode.HYBRID):
            tick = time.perf_counter()
            vector = self.embedder.embed_query(request.query)
            timings["embed"] = _ms(tick)
            tick = time.perf_counter()
            dense = opened.vectors.search(vector, scope, request.filters, depth)
            timings["dense"] = _ms(tick)
        if mode in (SearchMode.BM25, SearchMode.HYBRID):
            tick = time.perf_counter()
            lexical = opened.lexical.search(request.query, scope, request.filters, depth)
            timings["bm25"] = _ms(tick)

        chunks: dict[str, Chunk] = {chunk.chunk_id: chunk for chunk, _ in dense}
        missing = [cid for cid, _ in lexical if cid not in chunks]
        if missing:
            tick = time.perf_counter()
            for chunk in opened.vectors.get_chunks(missing):
                chunks[chunk.chunk_id] = chunk
            timings["hydrate"] = _ms(tick)
            lost = [cid for cid in missing if cid not in chunks]
            if lost:
                # The BM25 index and the vector store disagree: dropping the hit would serve a
                # silently partial answer from a damaged version.
                log_event(
                    logger,
                    logging.ERROR,
                    "index.unhydratable_hits",
                    index=self.layout.name,
                    version=opened.version,
                    chunk_ids=lost[:20],
                )
                raise IndexIntegrityError(
                    opened.version,
                    [f"{len(lost)} BM25 hit(s) have no chunk in the vector store"],
                )

        breakdown: dict[str, dict[str, float | int]] = {}
        for rank, (chunk, score) in enumerate(dense, start=1):
            breakdown.setdefault(chunk.chunk_id, {}).update(dense_rank=rank, dense_score=score)
        for rank, (cid, score) in enumerate(lexical, start=1):
            breakdown.setdefault(cid, {}).update(bm25_rank=rank, bm25_score=score)

        fusion = self.fusion()
        document_of = {cid: chunk.doc_id for cid, chunk in chunks.items()}
        recency = self.settings.recency_weight if request.prefer_recent else 0.0
        dates = _document_dates(chunks.values()) if recency > 0 else {}
        if mode == SearchMode.DENSE:
            ranked = [(chunk.chunk_id, score) for chunk, score in dense]
        elif mode == SearchMode.BM25:
            ranked = list(lexical)
        else:
            documents: list[tuple[str, float]] = []
            if fusion.document_share > 0:
                # Document-level BM25 under the same scope and filters as the chunk legs.
                tick = time.perf_counter()
                documents = opened.lexical.document_search(
                    request.query, scope, request.filters, depth
                )
                timings["bm25_documents"] = _ms(tick)
            fused = fusion.fuse(
                [(c.chunk_id, s) for c, s in dense], lexical, documents, document_of
            )
            if dates:
                fused = fusion.add_recency(fused, document_of, dates, recency)
            ranked = sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))
            for cid, score in ranked:
                breakdown[cid]["fused"] = score
        if dates and mode != SearchMode.HYBRID:
            # A single leg has raw scores; put it on the fusion's scale to add the recency leg.
            ranked = _by_score(
                fusion.add_recency(fusion.single(ranked), document_of, dates, recency)
            )
            for cid, score in ranked:
                breakdown[cid]["fused"] = score
        ranked = [(cid, score) for cid, score in ranked if cid in chunks]

        reranked = False
        if reranker is not None and ranked:
            tick = time.perf_counter()
            head = ranked[: self.settings.rerank_candidates]
            scores = reranker.score(request.query, [chunks[cid].text for cid, _ in head])
            rescored = sorted(
                ((cid, float(s)) for (cid, _), s in zip(head, scores, strict=True)),
                key=lambda pair: -pair[1],
            )
            for cid, score in rescored:
                breakdown[cid]["rerank"] = score
            if dates:
                # The cross-encoder orders by relevance alone; add the recency leg to its order
                # too, or reranking would undo what the request asked for.
                rescored = _by_score(
                    fusion.add_recency(fusion.single(rescored), document_of, dates, recency)
                )
            ranked = rescored + ranked[len(head) :]
            reranked = True
            timings["rerank"] = _ms(tick)

        results = [
            ScoredChunk(
                chunk=chunks[cid],
                score=score,
                scores=ScoreBreakdown.model_validate(breakdown.get(cid, {})),
            )
            for cid, score in ranked[: request.k]
        ]
        results = enforce(scope, results)
        timings["total"] = _ms(started)
        return SearchResult(
            results=tuple(results),
            mode=mode,
            reranked=reranked,
            rerank_note=note,
            index_version=opened.version,
            timings_ms=timings,
        )


def open_search_service(settings: Settings, index: str | None = None) -> ServingIndex:
    """A search service over the published version of ``index`` (loaded on first use)."""
    return ServingIndex(settings, index)


def _reason_for(exc: CitewellError) -> NotReadyReason:
    if isinstance(exc, IndexIntegrityError):
        return "integrity_failed"
    if isinstance(exc, IndexNotFoundError):
        return "no_published_version"
    if isinstance(exc, ModelError):
        return "model_unavailable"
    return "store_unavailable"


def _folder_identity(folder: Path) -> tuple[int, int] | None:
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _document_dates(chunks: Iterable[Chunk]) -> dict[str, datetime]:
    """Each candidate document's stated date (naive dates read as UTC, as filters read them)."""
    dates: dict[str, datetime] = {}
    for chunk in chunks:
        value = chunk.document_date
        if value is not None:
            dates[chunk.doc_id] = value if value.tzinfo else value.replace(tzinfo=UTC)
    return dates


def _by_score(scores: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)
