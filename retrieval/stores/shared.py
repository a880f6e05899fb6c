"""Engine-neutral steps that both vector stores take the same way: query vector checks, the choice
between exact and HNSW search for a filter (:class:`FilteredSearchPlanner`), id-ordered lookups and
grouping chunk ids by document.

Each store keeps only the calls into its own engine; see ``retrieval/stores/edge.py`` for why
filtered search needs a plan at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from citewell.core.errors import InputRejectedError
from citewell.core.logging import log_event
from citewell.core.models import Chunk
from citewell.core.settings import EXACT_SEARCH_MAX_POINTS
from citewell.retrieval.protocols import Vector
from citewell.retrieval.stores.filters import DOC_ID_FIELD, chunk_from_payload, point_id

Point = TypeVar("Point")


class _Scored(Protocol):
    @property
    def id(self) -> object: ...
    @property
    def score(self) -> float: ...


ScoredPoint = TypeVar("ScoredPoint", bound=_Scored)

# The payload fields :func:`group_chunk_ids` reads; ask the engine for these only.
CHUNK_ID_FIELDS: list[str] = [DOC_ID_FIELD, "chunk_id", "chunk_index"]

# A cardinality estimate assumes independent conditions (a rank range AND'ed with groups), so it
# can be too high for anti-correlated ones. Estimates up to this factor above the threshold are
# checked with an exact count (~0.3 us per matching point, once per plan); beyond it HNSW plus
# the short-answer fallback stays the only guard.
_CHECK_ESTIMATE_FACTOR = 2
# Plans are remembered per (scope, filters) so a recurring scope pays no count per query. This
# store's writes clear them; the age limit covers writers elsewhere (remote Qdrant, alias moves).
_PLAN_TTL_S = 60.0
_PLAN_MEMO_SIZE = 1024


def checked_query(vector: Vector, dimension: int) -> npt.NDArray[np.float32]:
    """``vector`` as a flat float32 array, after checking its length against the store's."""
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != dimension:
        raise InputRejectedError(
            f"query vector has dimension {query.shape[0]}, store expects {dimension}"
        )
    return query


def best_with_ties(
    nearest: Callable[[int], list[Point]],
    limit: int,
    score: Callable[[Point], float],
    point_key: Callable[[Point], str],
) -> list[Point]:
    """The ``limit`` best of ``nearest(n)`` (an engine's n best, best first), ties cut by
    ``point_key``. An engine breaks ties by its internal order, which every point in the store
    moves, those the caller cannot see too: which of several chunks with the same vector (the
    same boilerplate in many documents) made the limit depended on invisible documents. So the
    engine is asked for one more than the limit, and for more while the last one it returns
    still ties with the cut: then every tie at the cut is in hand and the key decides."""
    asked = limit + 1
    while True:
        points = nearest(asked)
        if len(points) < asked or score(points[-1]) != score(points[limit - 1]):
            break
        asked *= 2
    return sorted(points, key=lambda p: (-score(p), point_key(p)))[:limit]


def search_with_exact_fallback(
    query: Callable[[bool], list[Point]],
    count_matching: Callable[[], int],
    limit: int,
    logger: logging.Logger,
) -> list[Point]:
    """``query(exact=False)``; if that answers short and an exact count finds more matching
    points than were returned, ``query(exact=True)`` instead."""
    points = query(False)
    if len(points) < limit:
        matching = count_matching()
        if matching > len(points):
            log_event(
                logger,
                logging.INFO,
                "vector_store.exact_fallback",
                returned=len(points),
                matching=matching,
                limit=limit,
            )
            points = query(True)
    return points


class FilteredSearchPlanner:
    """Chooses exact or HNSW search for a filter by how many points it matches, the way Qdrant's
    own planner uses ``full_scan_threshold``, but ahead of the engine and for every segment.

    HNSW on a filter can return a full but approximate list (a graph without links among the
    filter's points: recall 0.6-0.8 in ``tests/retrieval/stores/test_edge.py``), which
    :func:`search_with_exact_fallback` cannot notice because the answer is not short. Filters
    matching at most ``exact_search_max_points`` points are therefore searched exactly straight
    away; broader ones use HNSW with the short-answer fallback. ``exact_search_max_points=0``
    turns planning off (HNSW and the fallback only, no counts).
    """

    def __init__(self, exact_search_max_points: int = EXACT_SEARCH_MAX_POINTS) -> None:
        if exact_search_max_points < 0:
            raise ValueError("exact_search_max_points must not be negative")
        self._max_points = exact_search_max_points
        self._plans: dict[Hashable, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    @property
    def exact_search_max_points(self) -> int:
        return self._max_points

    def invalidate(self) -> None:
        """Forget every plan (call after a write: counts may have changed)."""
        with self._lock:
            self._plans.clear()

    def search(
        self,
        key: Hashable,
        query: Callable[[bool], list[Point]],
        estimate_matching: Callable[[], int],
        count_matching: Callable[[], int],
        limit: int,
        logger: logging.Logger,
    ) -> list[Point]:
        """``query(exact=True)`` when the filter identified by ``key`` matches few points, else
        :func:`search_with_exact_fallback`. ``estimate_matching`` is the engine's cheap
        cardinality estimate, ``count_matching`` its exact count."""
        if self._exact(key, estimate_matching, count_matching, logger):
            return query(True)
        return search_with_exact_fallback(query, count_matching, limit, logger)

    def search_best(
        self,
        key: Hashable,
        query: Callable[[int, bool], list[ScoredPoint]],
        estimate_matching: Callable[[], int],
        count_matching: Callable[[], int],
        limit: int,
        logger: logging.Logger,
    ) -> list[ScoredPoint]:
        """The ``limit`` best points by :meth:`search`, ``query(n, exact)`` asked for ``n``; ties
        at the cut are broken by point id (:func:`best_with_ties`)."""

        def nearest(n: int) -> list[ScoredPoint]:
            return self.search(
                key,
                lambda exact: query(n, exact),
                estimate_matching,
                count_matching,
                n,
                logger,
            )

        return best_with_ties(nearest, limit, lambda p: float(p.score), lambda p: str(p.id))

    def _exact(
        self,
        key: Hashable,
        estimate_matching: Callable[[], int],
        count_matching: Callable[[], int],
        logger: logging.Logger,
    ) -> bool:
        if self._max_points == 0:
            return False
        now = time.monotonic()
        with self._lock:
            plan = self._plans.get(key)
        if plan is not None and now - plan[0] < _PLAN_TTL_S:
            return plan[1]
        estimate = estimate_matching()
        matching: int | None = None
        if estimate <= self._max_points:
            exact = True
        elif estimate <= _CHECK_ESTIMATE_FACTOR * self._max_points:
            matching = count_matching()
            exact = matching <= self._max_points
        else:
            exact = False
        with self._lock:
            self._plans.pop(key, None)
            self._plans[key] = (now, exact)
            while len(self._plans) > _PLAN_MEMO_SIZE:
                del self._plans[next(iter(self._plans))]  # oldest first (insertion order)
        log_event(
            logger,
            logging.DEBUG,
            "vector_store.search_plan",
            estimate=estimate,
            matching=matching,
            exact=exact,
            max_points=self._max_points,
        )
        return exact


def wanted_point_ids(chunk_ids: Sequence[str]) -> tuple[list[str | None], list[str]]:
    """(point id per chunk id, None where it is not a UUID; the distinct valid ids to fetch)."""
    wanted = [point_id(cid) for cid in chunk_ids]
    unique = list(dict.fromkeys(pid for pid in wanted if pid is not None))
    return wanted, unique


def chunks_in_order(
    wanted: Sequence[str | None], records: Iterable[tuple[object, Mapping[str, object] | None]]
) -> list[Chunk]:
    """Chunks of the fetched ``(point id, payload)`` records, in ``wanted`` order; ids that were
    not found are skipped."""
    found = {str(pid): chunk_from_payload(payload) for pid, payload in records}
    return [found[pid] for pid in wanted if pid is not None and pid in found]


def group_chunk_ids(payloads: Iterable[Mapping[str, Any] | None]) -> dict[str, list[str]]:
    """Chunk ids by document, each document's in chunk order, from payloads holding
    :data:`CHUNK_ID_FIELDS`."""
    pairs: list[tuple[str, int, str]] = []
    for payload in payloads:
        fields = payload or {}
        doc_id, index = str(fields[DOC_ID_FIELD]), int(fields["chunk_index"])
        pairs.append((doc_id, index, str(fields["chunk_id"])))
    result: dict[str, list[str]] = {}
    for doc_id, _, chunk_id in sorted(pairs):
        result.setdefault(doc_id, []).append(chunk_id)
    return result
