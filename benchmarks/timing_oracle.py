"""Timing side channel of the BM25 legs: does a query's time tell a caller that a term occurs in
documents they cannot see?

    .venv/bin/python -m benchmarks.timing_oracle [--visible 10000] [--invisible 20000 100000]

A public caller (clearance public, group everyone) queries, in random order per repeat, (a) a
term that occurs only in restricted chunks, (b) a term that occurs nowhere, (c) a common visible
term plus that secret term and (d) the common visible term alone, through the chunk leg
(``search``) and the document leg (``document_search``). The table shows the median and p95
microseconds per query and the differences a-b and c-d: what an attacker who can time queries
would measure. Run it on two checkouts (``PYTHONPATH=<tree> python -m benchmarks.timing_oracle``)
to compare before and after a change; it uses only the public index API.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from benchmarks.bm25 import make_chunk, synthetic_chunks
from citewell.core.models import SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.lexical import BM25Index

SECRET = "zylophant"
ABSENT = "xylophant"  # same length and suffix: the stemmer does the same work
COMMON = "cells"
CALLER = AccessScope(principal="guest", max_rank=0, groups=frozenset({"everyone"}))
NO_FILTERS = SearchFilters()


def build(visible: int, invisible: int) -> BM25Index:
    rng = random.Random(1)
    index = BM25Index()
    # Invisible to the caller: restricted chunks that all hold the secret term and the common
    # one. (Added first: before the fix of a class's term counts falling behind the vocabulary,
    # the other order crashed the old code this benchmark compares against.)
    index.add(
        [
            make_chunk(
                f"secret-{i}",
                f"{c.text} {SECRET} {COMMON} {SECRET}",
                rank=3,
                groups=(rng.choice(["security", "legal"]),),
            )
            for i, c in enumerate(synthetic_chunks(invisible, seed=3))
        ]
    )
    # Visible to it: public chunks open to everyone (synthetic SciFact sentences).
    index.add(
        [
            make_chunk(c.chunk_id, c.text, rank=0, groups=("everyone",))
            for c in synthetic_chunks(visible, seed=2)
        ]
    )
    return index


def measure(
    leg: Callable[[str], object], queries: dict[str, str], repeats: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in queries}
    for query in queries.values():  # warm: statistics and postings compiled
        leg(query)
    order = list(queries.items())
    shuffle = random.Random(7).shuffle
    for _ in range(repeats):
        shuffle(order)  # no query always follows the expensive one (cache effects)
        for name, query in order:
            started = time.perf_counter()
            leg(query)
            times[name].append((time.perf_counter() - started) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--visible", type=int, default=10_000)
    parser.add_argument("--invisible", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    queries = {
        "a: secret only": SECRET,
        "b: absent": ABSENT,
        "c: common + secret": f"{COMMON} {SECRET}",
        "d: common": COMMON,
    }
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"BM25 legs, public caller, {args.visible:,} visible chunks; microseconds per query "
        f"(load average {load})"
    )
    print("| invisible chunks | leg | a | b | a-b (median) | c | d | c-d (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for invisible in args.invisible:
        index = build(args.visible, invisible)
        legs: dict[str, Callable[[str], object]] = {
            "chunks": partial(index.search, scope=CALLER, filters=NO_FILTERS, limit=50),
            "documents": partial(index.document_search, scope=CALLER, filters=NO_FILTERS, limit=50),
        }
        for leg_name, leg in legs.items():
            times = measure(leg, queries, args.repeats)
            med = {k: float(np.median(v)) for k, v in times.items()}
            p95 = {k: float(np.percentile(v, 95)) for k, v in times.items()}
            cells = [f"{med[k]:.0f} (p95 {p95[k]:.0f})" for k in queries]
            print(
                f"| {invisible:,} | {leg_name} | {cells[0]} | {cells[1]} | "
                f"{med['a: secret only'] - med['b: absent']:+.0f} | {cells[2]} | {cells[3]} | "
                f"{med['c: common + secret'] - med['d: common']:+.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
