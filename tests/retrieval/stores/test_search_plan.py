"""FilteredSearchPlanner on its own (scripted engine calls) and inside both stores (a spy on the
engine client records count and query calls)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from citewell.core.models import SearchFilters
from citewell.retrieval.stores import shared
from citewell.retrieval.stores.edge import EdgeVectorStore
from citewell.retrieval.stores.qdrant import QdrantVectorStore
from citewell.retrieval.stores.shared import FilteredSearchPlanner
from tests.retrieval.contracts.vector_store_contract import (
    DIM,
    NO_FILTERS,
    make_chunk,
    scope,
    unit_vectors,
)

# Local mode warns that search params have no effect; the spy only records the exact flag.
pytestmark = pytest.mark.filterwarnings("ignore:Local mode performs exact")

LOG = logging.getLogger(__name__)


class Engine:
    """Scripted engine: an estimate, an exact count and an HNSW answer of a given length."""

    def __init__(self, estimate: int, matching: int, hnsw_returns: int) -> None:
        self.estimate, self.matching, self.hnsw_returns = estimate, matching, hnsw_returns
        self.calls: list[str] = []

    def query(self, exact: bool) -> list[int]:
        self.calls.append("exact" if exact else "hnsw")
        return list(range(self.matching if exact else self.hnsw_returns))[:10]

    def estimate_matching(self) -> int:
        self.calls.append("estimate")
        return self.estimate

    def count_matching(self) -> int:
        self.calls.append("count")
        return self.matching

    def search(self, planner: FilteredSearchPlanner, key: object = "k") -> list[int]:
        return planner.search(key, self.query, self.estimate_matching, self.count_matching, 10, LOG)


@pytest.mark.parametrize(
    ("estimate", "matching", "hnsw_returns", "calls"),
    [
        (80, 80, 10, ["estimate", "exact"]),  # few points: exact at once, no exact count
        (100, 100, 10, ["estimate", "exact"]),  # at the threshold
        (200, 90, 10, ["estimate", "count", "exact"]),  # estimate too high: the count decides
        (200, 200, 10, ["estimate", "count", "hnsw"]),  # checked, really broad
        (201, 50, 10, ["estimate", "hnsw"]),  # beyond the checked band: HNSW, full answer
        (5000, 5000, 3, ["estimate", "hnsw", "count", "exact"]),  # short answer: fallback
    ],
)
def test_plan_follows_the_filter_cardinality(estimate, matching, hnsw_returns, calls):
    engine = Engine(estimate, matching, hnsw_returns)
    engine.search(FilteredSearchPlanner(100))
    assert engine.calls == calls


def test_plans_are_remembered_per_key_until_invalidated():
    planner = FilteredSearchPlanner(100)
    broad, narrow = Engine(5000, 5000, 10), Engine(20, 20, 10)
    broad.search(planner, "broad")
    narrow.search(planner, "narrow")
    broad.search(planner, "broad")
    narrow.search(planner, "narrow")
    assert broad.calls == ["estimate", "hnsw", "hnsw"]
    assert narrow.calls == ["estimate", "exact", "exact"]
    planner.invalidate()
    broad.search(planner, "broad")
    assert broad.calls[-2:] == ["estimate", "hnsw"]


def test_plans_expire(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(shared.time, "monotonic", lambda: clock[0])
    planner = FilteredSearchPlanner(100)
    engine = Engine(20, 20, 10)
    engine.search(planner)
    clock[0] += shared._PLAN_TTL_S - 1
    engine.search(planner)
    clock[0] += 2
    engine.search(planner)
    assert engine.calls == ["estimate", "exact", "exact", "estimate", "exact"]


def test_plan_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(shared, "_PLAN_MEMO_SIZE", 3)
    planner = FilteredSearchPlanner(100)
    engine = Engine(20, 20, 10)
    for key in range(5):
        engine.search(planner, key)
    assert len(planner._plans) == 3
    engine.calls.clear()
    engine.search(planner, 4)  # newest kept
    engine.search(planner, 0)  # oldest dropped
    assert engine.calls == ["exact", "estimate", "exact"]


def test_zero_turns_planning_off_and_negative_is_rejected():
    engine = Engine(20, 20, 10)
    engine.search(FilteredSearchPlanner(0))
    assert engine.calls == ["hnsw"]
    with pytest.raises(ValueError):
        FilteredSearchPlanner(-1)


# --- inside the stores -----------------------------------------------------------------------


class Spy:
    """Delegates to the real engine object and records (call, exact flag)."""

    def __init__(self, inner: Any, calls: list[tuple[str, bool]]) -> None:
        self._inner, self._calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class EdgeShardSpy(Spy):
    def count(self, request: Any) -> Any:
        if request.filter is not None:
            self._calls.append(("count", bool(request.exact)))
        return self._inner.count(request)

    def query(self, request: Any) -> Any:
        self._calls.append(("query", bool(request.params and request.params.exact)))
        return self._inner.query(request)


class ClientSpy(Spy):
    def count(self, collection: str, count_filter: Any = None, exact: bool = True) -> Any:
        if count_filter is not None:
            self._calls.append(("count", exact))
        return self._inner.count(collection, count_filter=count_filter, exact=exact)

    def query_points(self, *args: Any, **kwargs: Any) -> Any:
        params = kwargs.get("search_params")
        self._calls.append(("query", bool(params and params.exact)))
        return self._inner.query_points(*args, **kwargs)


N = 1000


@pytest.fixture(params=["edge", "qdrant-local"])
def spied(request, tmp_path):
    """A store of N chunks: 900 in group "everyone", 50 in "legal" and 50 in "hr"; filters
    matching at most 50 are searched exactly."""
    groups = [("everyone",)] * 900 + [("legal",)] * 50 + [("hr",)] * 50
    chunks = [make_chunk(f"doc-{i}", 0, groups=groups[i]) for i in range(N)]
    calls: list[tuple[str, bool]] = []
    store: EdgeVectorStore | QdrantVectorStore
    if request.param == "edge":
        store = EdgeVectorStore(tmp_path / "shard", DIM, exact_search_max_points=50)
        store.upsert(chunks, unit_vectors(N, seed=1))
        store._shard = EdgeShardSpy(store._open(), calls)
    else:
        store = QdrantVectorStore.local(":memory:", "spy", DIM, exact_search_max_points=50)
        store.upsert(chunks, unit_vectors(N, seed=1))
        store._client = ClientSpy(store._raw(), calls)
        store._brute_force = False  # send the exact flag as to a server, so the spy sees it
    yield store, chunks, calls
    store.close()


def test_broad_scope_goes_through_hnsw_and_counts_once(spied):
    store, _, calls = spied
    broad = scope(groups=("everyone", "legal"))
    for seed in range(3):
        assert len(store.search(unit_vectors(1, seed=seed)[0], broad, NO_FILTERS, 5)) == 5
    # One estimate (exact=False) for the scope, then HNSW only: no exact count, no exact scan.
    assert calls == [("count", False), ("query", False), ("query", False), ("query", False)]


def test_restrictive_scope_is_searched_exactly(spied):
    store, chunks, calls = spied
    legal = scope(groups=("legal",))
    query = unit_vectors(1, seed=5)[0]
    got = store.search(query, legal, NO_FILTERS, 5)
    assert calls == [("count", False), ("query", True)]
    assert {c.doc_id for c, _ in got} <= {c.doc_id for c in chunks[900:950]}


def test_narrowing_filter_is_planned_on_its_own(spied):
    store, chunks, calls = spied
    broad = scope(groups=("everyone", "legal", "hr"))
    query = unit_vectors(1, seed=6)[0]
    store.search(query, broad, NO_FILTERS, 5)
    few = SearchFilters(doc_ids=frozenset(c.doc_id for c in chunks[:20]))
    got = store.search(query, broad, few, 5)
    assert calls == [("count", False), ("query", False), ("count", False), ("query", True)]
    scores = unit_vectors(N, seed=1)[:20] @ query
    assert [c.doc_id for c, _ in got] == [chunks[i].doc_id for i in np.argsort(-scores)[:5]]


def test_writes_forget_plans(spied):
    store, _, calls = spied
    hr = scope(groups=("hr",))
    query = unit_vectors(1, seed=7)[0]
    store.search(query, hr, NO_FILTERS, 5)
    store.upsert(
        [make_chunk(f"new-{i}", 0, groups=("hr",)) for i in range(40)], unit_vectors(40, seed=9)
    )
    store.search(query, hr, NO_FILTERS, 5)
    # 50 then 90 "hr" chunks: exact before the write; after it the estimate is within the
    # checked band, so an exact count decides, and it is HNSW.
    assert calls == [("count", False), ("query", True), ("count", False), ("count", True),
                     ("query", False)]  # fmt: skip


def test_only_local_mode_drops_the_exact_flag():
    # Local mode is brute force anyway and warns on every request with search params.
    assert QdrantVectorStore.local(":memory:", "c", DIM)._brute_force
    assert not QdrantVectorStore.from_url("http://127.0.0.1:1", None, "c", DIM)._brute_force


def test_every_tie_at_the_cut_is_fetched_before_the_key_decides():
    # Scores best first, as an engine returns them; seven points tie at the cut of 3, in an
    # order the engine chose. More are asked for until the last one no longer ties.
    ranked = [("z", 0.9), *((name, 0.5) for name in "gfedcba"), ("y", 0.1)]
    asked: list[int] = []

    def nearest(n: int) -> list[tuple[str, float]]:
        asked.append(n)
        return ranked[:n]

    best = shared.best_with_ties(nearest, 3, lambda p: p[1], lambda p: p[0])
    assert best == [("z", 0.9), ("a", 0.5), ("b", 0.5)]
    assert asked == [4, 8, 16]
    # A clean cut costs one point more than the limit; fewer points than asked end it too.
    asked.clear()
    assert shared.best_with_ties(nearest, 1, lambda p: p[1], lambda p: p[0]) == [("z", 0.9)]
    assert asked == [2]
