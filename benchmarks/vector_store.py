"""Filtered top-50 search latency of the vector stores on synthetic 384-d points.

    .venv/bin/python -m benchmarks.vector_store [--sizes 10000 100000] [--queries 200]

Each point gets a random rank (0-3) and one of 25 groups. The broad filter (rank <= 3, any of
20 groups) passes ~80% of points; the restrictive one (rank <= 1, one group) ~2%. For the edge
store, "store" is EdgeVectorStore.search (HNSW, plus the count-and-exact fallback on short
answers); "acorn" and "exact" are the engine's alternatives with the same filter and payload.
qdrant-client local mode is brute-force Python, so it runs only at the smallest size.
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

from core.models import Chunk, SearchFilters
from retrieval.access import AccessScope
from retrieval.stores.edge import VECTOR_NAME, EdgeVectorStore
from retrieval.stores.filters import edge_filter
from retrieval.stores.qdrant import QdrantVectorStore

DIM = 384
LIMIT = 50
GROUPS = tuple(f"g{i}" for i in range(25))
BROAD = AccessScope(principal="bench", max_rank=3, groups=frozenset(GROUPS[:20]))
RESTRICTIVE = AccessScope(principal="bench", max_rank=1, groups=frozenset(GROUPS[:1]))


def make_data(n: int, seed: int = 0) -> tuple[list[Chunk], np.ndarray]:
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, 4, n)
    groups = rng.integers(0, len(GROUPS), n)
    chunks = [
        Chunk(
            chunk_id=str(uuid.UUID(int=i + 1)),
            doc_id=f"doc-{i // 4}",
            chunk_index=i % 4,
            text=f"synthetic chunk {i}",
            title=f"doc {i // 4}",
            source="bench",
            source_uri=f"file:///bench/{i // 4}.md",
            doc_type="md",
            char_start=0,
            char_end=10,
            classification="public",
            classification_rank=int(ranks[i]),
            groups=(GROUPS[int(groups[i])],),
        )
        for i in range(n)
    ]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return chunks, vectors


def timed(fn: Callable[[np.ndarray], int], queries: np.ndarray) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, mean results) after two warm-up calls."""
    for q in queries[:2]:
        fn(q)
    times, counts = [], []
    for q in queries:
        start = time.perf_counter()
        counts.append(fn(q))
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95)), float(np.mean(counts))


def _store_search(
    store: EdgeVectorStore | QdrantVectorStore, access: AccessScope
) -> Callable[[np.ndarray], int]:
    return lambda q: len(store.search(q, access, SearchFilters(), LIMIT))


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
    rows: list[tuple[str, ...]] = []
    for name, access in (("broad", BROAD), ("restrictive", RESTRICTIVE)):
        matching = sum(access.allows_chunk(c) for c in chunks)
        flt = edge_filter(access, SearchFilters())

        def raw(params: qe.SearchParams | None, flt: qe.Filter = flt) -> Callable[..., int]:
            def run(q: np.ndarray) -> int:
                request = qe.QueryRequest(
                    limit=LIMIT,
                    query=qe.Query.Nearest(q.tolist(), using=VECTOR_NAME),
                    filter=flt,
                    with_payload=True,
                    params=params,
                )
                return len(shard.query(request))

            return run

        strategies: dict[str, Callable[[np.ndarray], int]] = {
            "store": _store_search(store, access),
            "hnsw only": raw(None),
            "acorn": raw(qe.SearchParams(acorn=qe.AcornSearchParams(enable=True))),
            "exact": raw(qe.SearchParams(exact=True)),
        }
        for strategy, fn in strategies.items():
            p50, p95, mean = timed(fn, queries)
            rows.append(
                ("edge", str(n), name, f"{matching / n:.1%}", strategy, f"{p50:.2f}", f"{p95:.2f}",
                 f"{mean:.1f}")
            )  # fmt: skip
    store.close()
    return rows


def client_rows(n: int, queries: np.ndarray) -> list[tuple[str, ...]]:
    chunks, vectors = make_data(n)
    store = QdrantVectorStore.local(":memory:", "bench", DIM)
    store.upsert(chunks, vectors)
    rows: list[tuple[str, ...]] = []
    for name, access in (("broad", BROAD), ("restrictive", RESTRICTIVE)):
        matching = sum(access.allows_chunk(c) for c in chunks)
        p50, p95, mean = timed(_store_search(store, access), queries)
        rows.append(
            ("qdrant-local", str(n), name, f"{matching / n:.1%}", "store", f"{p50:.2f}",
             f"{p95:.2f}", f"{mean:.1f}")
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
    header = ("store", "points", "filter", "passes", "strategy", "p50 ms", "p95 ms", "results")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
