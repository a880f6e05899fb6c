"""Latency cost of per-scope BM25 statistics (the statistics-leak defence) against global ones.

    .venv/bin/python -m benchmarks.statistics_leak [--sizes 10000 100000] [--queries 200]

Both variants apply the same access mask before top-k; they differ only in the N, document
frequencies and average length used for scoring. "global" is what a plain BM25 does (and what
leaks: a restricted document changes everyone's idf). Statistics are cached per visible-class
set, so the table shows the warm p50/p95 and, separately, the cold cost of the first query of a
scope (statistics computed) for each variant.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.bm25 import PUBLIC, load_scifact, synthetic_chunks
from citewell.core.models import SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.lexical import BM25Index
from citewell.retrieval.lexical.scoring import ScopeStats

RESTRICTIVE = AccessScope(principal="r", max_rank=0, groups=frozenset({"hr"}))


class GlobalStatsBM25(BM25Index):
    """The insecure baseline: statistics over every chunk, whatever the caller may see."""

    def _scope_stats(self, visible: tuple[int, ...]) -> ScopeStats:
        everything = tuple(i for i, n in enumerate(self._class_docs) if n > 0)
        return super()._scope_stats(everything)


def measure(index: BM25Index, scope: AccessScope, queries: list[str]) -> dict[str, float]:
    index._stats_cache.clear()
    t0 = time.perf_counter()
    index.search(queries[0], scope, SearchFilters(), 50)
    cold = (time.perf_counter() - t0) * 1000
    times = []
    for query in queries:
        t0 = time.perf_counter()
        index.search(query, scope, SearchFilters(), 50)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "cold": cold,
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    _, queries, qrels = load_scifact()
    texts = [queries[q] for q in qrels][: args.queries]
    print("BM25 leg, top-50 with access mask (ms); synthetic SciFact-sentence chunks")
    print("| chunks | scope | statistics | first query (cold) | p50 | p95 |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        chunks = synthetic_chunks(size)
        per_scope, global_ = BM25Index(), GlobalStatsBM25()
        per_scope.add(chunks)
        global_.add(chunks)
        for index in (per_scope, global_):
            index.search("warm up", PUBLIC, SearchFilters(), 10)  # compiles postings
        for scope_name, scope in (("broad", PUBLIC), ("restrictive", RESTRICTIVE)):
            for stats_name, index in (("per-scope", per_scope), ("global", global_)):
                r = measure(index, scope, texts)
                print(
                    f"| {size:,} | {scope_name} | {stats_name} | {r['cold']:.2f} | "
                    f"{r['p50']:.2f} | {r['p95']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
