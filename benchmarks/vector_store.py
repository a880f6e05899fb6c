"""Filtered top-50 search latency and recall of the vector stores on synthetic 384-d points.

    .venv/bin/python -m benchmarks.vector_store [--sizes 10000 100000] [--queries 200]

Each point gets a random rank (0-3) and one of 50 groups. The broad filter (any rank, 35 groups)
passes ~70% of points, the moderate one ~10% (any rank, five groups), the restrictive ones ~4%
(any rank, two groups) and ~0.5% (rank 0, one group). For the edge store, "before" is
EdgeVectorStore.search with planning off (``exact_search_max_points=0``: HNSW plus the
count-and-exact fallback on short answers), "after" the default plan (filters matching at most
``EXACT_SEARCH_MAX_POINTS`` points are searched exactly; the plan is remembered per scope, so a
repeated scope pays no count) and "after, cold" the same with the plan forgotten before every
query (one cardinality estimate per query). "hnsw only", "acorn" and "exact" are the engine's
own strategies with the same filter and payload. Recall is recall@50 against the true filtered
top 50. qdrant-client local mode is brute-force Python, so it runs only at the smallest size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from citewell.core.models import Chunk, SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.stores.edge import VECTOR_NAME, EdgeVectorStore
from citewell.retrieval.stores.filters import edge_filter
from citewell.retrieval.stores.qdrant import QdrantVectorStore
from citewell.retrieval.stores.shared import FilteredSearchPlanner
from tests.chunks import make_test_chunk

DIM = 384
LIMIT = 50
GROUPS = tuple(f"g{i}" for i in range(50))
FILTERS = {
    "broad": AccessScope(principal="bench", max_rank=3, groups=frozenset(GROUPS[:35])),
    "moderate": AccessScope(principal="bench", max_rank=3, groups=frozenset(GROUPS[:5])),
    "restrictive": AccessScope(principal="bench", max_rank=3, groups=frozenset(GROUPS[:2])),
    "very restrictive": AccessScope(principal="bench", max_rank=0, groups=frozenset(GROUPS[:1])),
}


def make_data(n: int, seed: int = 0) -> tuple[list[Chunk], np.ndarray]:
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, 4, n)
    groups = rng.integers(0, len(GROUPS), n)
    chunks = [
        make_test_chunk(
            str(uuid.UUID(int=i + 1)),
            f"synthetic chunk {i}",
            doc_id=f"doc-{i // 4}",
            index=i % 4,
            title=f"doc {i // 4}",
            source="bench",
            source_uri=f"file:///bench/{i // 4}.md",
            doc_type="md",
            rank=int(ranks[i]),
            groups=(GROUPS[int(groups[i])],),
        )
        for i in range(n)
    ]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return chunks, vectors


Search = Callable[[np.ndarray], list[int]]  # query -> point indexes, best first


def timed(fn: Search, queries: np.ndarray, truth: list[set[int]]) -> tuple[str, ...]:
    """(p50 ms, p95 ms, mean results, mean recall@LIMIT) after two warm-up calls."""
    for q in queries[:2]:
        fn(q)
    times, counts, recalls = [], [], []
    for q, best in zip(queries, truth, strict=True):
        start = time.perf_counter()
        got = fn(q)
        times.append((time.perf_counter() - start) * 1000)
        counts.append(len(got))
        recalls.append(len(best.intersection(got)) / max(1, len(best)))
    p50, p95 = np.percentile(times, 50), np.percentile(times, 95)
    return f"{p50:.2f}", f"{p95:.2f}", f"{np.mean(counts):.1f}", f"{np.mean(recalls):.3f}"


def _index(point_id: object) -> int:
    return uuid.UUID(str(point_id)).int - 1  # make_data's ids are UUID(int=i + 1)


def true_top(vectors: np.ndarray, visible: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    scores = np.where(visible[:, None], vectors @ queries.T, -np.inf)
    top = min(LIMIT, int(visible.sum()))
    return [set(np.argsort(-scores[:, j])[:top].tolist()) for j in range(len(queries))]


def _store_search(
    store: EdgeVectorStore | QdrantVectorStore, access: AccessScope, cold: bool = False
) -> Search:
    def run(q: np.ndarray) -> list[int]:
        if cold:
            store._planner.invalidate()
        return [_index(c.chunk_id) for c, _ in store.search(q, access, SearchFilters(), LIMIT)]

    return run


def edge_rows(n: int, queries: np.ndarray, workdir: Path) -> list[tuple[str, ...]]:
    chunks, vectors = make_data(n)
    store = EdgeVectorStore(workdir / f"edge-{n}", DIM)
    started = time.perf_counter()
    store.upsert(chunks, vectors)
    upsert_s = time.perf_counter() - started
    started = time.perf_counter()
    store.optimize()
    optimize_s = time.perf_counter() - started
    print(f"edge n={n}: upsert {upsert_s:.1f} s, optimize {optimize_s:.1f} s")
    shard = store._open()  # the raw engine, for the alternative strategies only
    planned = store._planner
    rows: list[tuple[str, ...]] = []
    for name, access in FILTERS.items():
        visible = np.array([access.allows_chunk(c) for c in chunks])
        truth = true_top(vectors, visible, queries)
        flt = edge_filter(access, SearchFilters())

        def raw(params: qe.SearchParams | None, flt: qe.Filter = flt) -> Search:
            def run(q: np.ndarray) -> list[int]:
                request = qe.QueryRequest(
                    limit=LIMIT,
                    query=qe.Query.Nearest(q.tolist(), using=VECTOR_NAME),
                    filter=flt,
                    with_payload=True,
                    params=params,
                )
                return [_index(p.id) for p in shard.query(request)]

            return run

        strategies: dict[str, tuple[FilteredSearchPlanner, Search]] = {
            "before": (FilteredSearchPlanner(0), _store_search(store, access)),
            "after": (planned, _store_search(store, access)),
            "after, cold": (planned, _store_search(store, access, cold=True)),
            "hnsw only": (planned, raw(None)),
            "acorn": (planned, raw(qe.SearchParams(acorn=qe.AcornSearchParams(enable=True)))),
            "exact": (planned, raw(qe.SearchParams(exact=True))),
        }
        for strategy, (planner, fn) in strategies.items():
            store._planner = planner
            planner.invalidate()
            rows.append(
                ("edge", str(n), name, f"{visible.mean():.1%}", strategy,
                 *timed(fn, queries, truth))
            )  # fmt: skip
        store._planner = planned
    store.close()
    return rows


def client_rows(n: int, queries: np.ndarray) -> list[tuple[str, ...]]:
    chunks, vectors = make_data(n)
    store = QdrantVectorStore.local(":memory:", "bench", DIM)
    store.upsert(chunks, vectors)
    rows: list[tuple[str, ...]] = []
    for name, access in FILTERS.items():
        visible = np.array([access.allows_chunk(c) for c in chunks])
        truth = true_top(vectors, visible, queries)
        rows.append(
            ("qdrant-local", str(n), name, f"{visible.mean():.1%}", "after",
             *timed(_store_search(store, access), queries, truth))
        )  # fmt: skip
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    queries = rng.standard_normal((args.queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="citewell-bench-") as tmp:
        for n in args.sizes:
            rows += edge_rows(n, queries, Path(tmp))
        rows += client_rows(min(args.sizes), queries[:20])
    header = ("store", "points", "filter", "passes", "strategy", "p50 ms", "p95 ms", "results",
              "recall@50")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
