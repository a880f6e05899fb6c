"""The search service: hybrid retrieval over the published index version, with access enforced
inside every leg and checked again on the way out.

``ServingIndex`` puts three parts together: the served version (``retrieval.serving_version``:
leases, reload, verification, readiness), the models (``retrieval.factory``: the query embedder
and the reranker chosen for the index at each version switch) and the search steps
(``retrieval.hybrid.HybridSearch``), which ``search`` calls in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from datetime import datetime
from typing import TypedDict, Unpack

from citewell.core.errors import CitewellError, StoreUnavailableError
from citewell.core.models import Frozen, Principal, SearchRequest, SearchResult
from citewell.core.settings import Settings
from citewell.retrieval.access import scope_for
from citewell.retrieval.embedding_cache import caller_partition
from citewell.retrieval.factory import RerankerChoice, build_embedder, choose_index_reranker
from citewell.retrieval.fusion import FusionChoice, FusionInForce
from citewell.retrieval.hybrid import HybridSearch
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.protocols import Embedder, Reranker
from citewell.retrieval.serving_version import ServedVersions


class IndexStatus(Frozen):
    index: str
    version: str | None
    documents: int
    chunks: int
    reranker: str | None
    reranker_note: str | None
    loaded_at: datetime | None


class GivenParts(TypedDict, total=False):
    """Parts a caller (evaluation, tests, benchmarks) gives instead of the configured ones: a
    given reranker is used as is, without the factory's choice or its gate."""

    embedder: Embedder | None
    reranker: Reranker | None
    fusion: FusionChoice | None


class ServingIndex:
    """Implements ``SearchService`` over one named index."""

    versions: ServedVersions  # the version served: leases, reload, verification, readiness

    def __init__(
        self, settings: Settings, index: str | None = None, **given: Unpack[GivenParts]
    ) -> None:
        self.settings = settings
        self.layout = IndexLayout(settings, index)
        self._given_embedder = given.get("embedder")
        self._given_reranker = given.get("reranker")
        self._reranker_choice = RerankerChoice(self._given_reranker, "")
        self._fusion = FusionInForce(settings, self.layout.root, given.get("fusion"))
        self.versions = ServedVersions(
            settings, self.layout, embedder=lambda: self.embedder, on_switch=self._choose_reranker
        )

    # --- models ---------------------------------------------------------------------------
    @functools.cached_property
    def embedder(self) -> Embedder:
        """The query embedder: the one given, else the configured one, built on first use."""
        given = self._given_embedder
        return given if given is not None else build_embedder(self.settings)

    @property
    def reranker(self) -> Reranker | None:
        """The reranker searches use now (None: results say why in ``rerank_note``)."""
        return self._reranker_choice.reranker

    def _choose_reranker(self) -> None:
        # At every version switch: a refresh may have published a newly trained model or gate
        # (and a reranker that could not be loaded is tried again).
        if self._given_reranker is None:
            previous = self._reranker_choice
            self._reranker_choice = choose_index_reranker(self.settings, self.layout, previous)
        else:
            self._reranker_choice = RerankerChoice(self._given_reranker, "")

    def _drop_unloadable_reranker(self, choice: RerankerChoice, note: str) -> None:
        """Searches go unreranked, saying so, until the next version switch chooses again:
        each would otherwise try (and fail) to load the model, seconds every time."""
        if self._reranker_choice is choice:
            self._reranker_choice = dataclasses.replace(choice, reranker=None, note=note)

    def fusion(self) -> FusionChoice:
        """The fusion in force (``retrieval.fusion.FusionInForce``)."""
        return self._fusion.current()

    # --- lifecycle ------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Open the published version and load the query embedder and reranker now."""
        if self.versions.served is None:
            self.versions.load()
        self.embedder.warm_up()
        if self.reranker is not None:
            self.reranker.warm_up()

    def ready(self) -> bool:
        """Whether a search would succeed now (``ServedVersions.readiness``)."""
        return self.versions.readiness().ready

    def close(self) -> None:
        self.versions.close()

    def status(self) -> IndexStatus:
        lease = self.versions.served
        if lease is None:
            return IndexStatus(
                index=self.layout.name,
                version=None,
                documents=0,
                chunks=0,
                reranker=None,
                reranker_note=self.versions.last_error,
                loaded_at=None,
            )
        meta = lease.opened.meta
        return IndexStatus(
            index=self.layout.name,
            version=meta.version,
            documents=meta.documents,
            chunks=meta.chunks,
            reranker=self.reranker.name if self.reranker else None,
            reranker_note=self._reranker_choice.note or None,
            loaded_at=lease.loaded_at,
        )

    # --- search ---------------------------------------------------------------------------
    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        scope = scope_for(principal, self.settings.scheme, self.settings.default_groups)
        with (
            self.versions.lease() as opened,
            self._failure_is_unavailable(),
            caller_partition(principal),  # the query cache is never shared between callers
        ):
            choice = self._reranker_choice
            steps = HybridSearch(
                opened,
                scope,
                request,
                self.settings,
                reranker=(choice.reranker, choice.note),
                fusion=self.fusion(),
            )
            if scope.matches_nothing:
                return steps.nothing_visible()
            legs = steps.search_legs(steps.embed_query(self.embedder))
            candidates = steps.hydrate(legs)
            ranked = steps.fuse(legs, candidates)
            ranked = steps.rerank(ranked, candidates)
            if steps.reranker_unloadable is not None:
                self._drop_unloadable_reranker(choice, steps.rerank_note or "")
            return steps.result(steps.enforce_access(steps.top_k(ranked, candidates)))

    @contextlib.contextmanager
    def _failure_is_unavailable(self) -> Iterator[None]:
        """An engine failure must surface as unavailable, never as partial results."""
        try:
            yield
        except CitewellError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(f"search failed on index {self.layout.name!r}") from exc


def open_search_service(settings: Settings, index: str | None = None) -> ServingIndex:
    """A search service over the published version of ``index`` (loaded on first use)."""
    return ServingIndex(settings, index)
