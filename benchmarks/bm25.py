"""BM25Index benchmark: SciFact test nDCG@10 (BM25 alone) and query latency with access masks.

    .venv/bin/python -m benchmarks.bm25 [--sizes 10000 100000] [--queries 300] [--skip-latency]

Latency corpora are synthetic chunks of ~10 sentences sampled from SciFact abstracts, labelled
with random access classes; queries are SciFact test claims. The broad scope sees every chunk,
the restrictive one a few percent.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA
from citewell.core.models import Chunk, SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.lexical import BM25Index, Tokenizer
from tests.chunks import make_test_chunk

SCIFACT = SHARED_DATA / "ir" / "scifact"
LEVELS = 4
GROUPS = ("everyone", "engineering", "hr", "sales", "legal", "finance", "research", "ops")


def load_scifact(root: Path = SCIFACT) -> tuple[list[dict[str, str]], dict[str, str], dict]:
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        corpus = [json.loads(line) for line in fh]
    queries = {}
    for line in (root / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        queries[row["_id"]] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc, score = line.split("\t")
        qrels.setdefault(qid, {})[doc] = int(score)
    return corpus, queries, qrels


def _ndcg_fallback(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    dcg = sum(qrels.get(d, 0) / math.log2(r + 1) for r, d in enumerate(ranked[:k], 1))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 1) for r, g in enumerate(ideal, 1))
    return dcg / idcg if idcg else 0.0


def ndcg_function() -> Callable[[Sequence[str], Mapping[str, int], int], float]:
    try:
        from citewell.evaluation.metrics import ndcg_at_k
    except ImportError:  # evaluation.metrics is written by another part of the project
        return _ndcg_fallback
    return lambda ranked, qrels, k: ndcg_at_k(ranked, qrels, k, gain="linear")


def make_chunk(
    chunk_id: str, text: str, title: str = "", rank: int = 0, groups: tuple[str, ...] = ()
) -> Chunk:
    return make_test_chunk(
        chunk_id, text, title=title, source="bench", rank=rank, groups=groups or ("everyone",)
    )


PUBLIC = AccessScope(principal="bench", max_rank=LEVELS - 1, groups=frozenset(GROUPS))


def scifact_ndcg(tokenizer: Tokenizer, k1: float = 0.9, b: float = 0.4) -> float:
    corpus, queries, qrels = load_scifact()
    index = BM25Index(k1=k1, b=b, tokenizer=tokenizer)
    chunks = [make_chunk(d["_id"], d["text"], d["title"]) for d in corpus]
    index.add(chunks, texts=[f"{c.title} {c.text}" for c in chunks])
    ndcg = ndcg_function()
    values = []
    for qid, judged in qrels.items():
        hits = index.search(queries[qid], PUBLIC, SearchFilters(), 10)
        values.append(ndcg([c for c, _ in hits], judged, 10))
    return float(np.mean(values))


def synthetic_chunks(n: int, seed: int = 0) -> list[Chunk]:
    corpus, _, _ = load_scifact()
    sentences = [
        s for d in corpus for s in re.split(r"(?<=[.!?])\s+", d["text"]) if len(s.split()) > 3
    ]
    rng = random.Random(seed)
    chunks = []
    for i in range(n):
        text = " ".join(rng.choices(sentences, k=rng.randint(6, 10)))
        # Most chunks are open to everyone; the rest to one or two departments.
        if rng.random() < 0.6:
            groups: tuple[str, ...] = ("everyone",)
        else:
            groups = tuple(rng.sample(GROUPS[1:], k=rng.randint(1, 2)))
        chunks.append(make_chunk(f"c{i}", text, rank=rng.randrange(LEVELS), groups=groups))
    return chunks


def latency(size: int, queries: list[str]) -> dict[str, float]:
    chunks = synthetic_chunks(size)
    index = BM25Index()
    started = time.perf_counter()
    index.add(chunks)
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    index.search("warm up", PUBLIC, SearchFilters(), 10)  # compiles postings
    compile_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        index.save(Path(tmp) / "bm25")
        save_s = time.perf_counter() - started
        started = time.perf_counter()
        BM25Index.load(Path(tmp) / "bm25")
        load_s = time.perf_counter() - started
    restrictive = AccessScope(principal="r", max_rank=0, groups=frozenset({"hr"}))
    row: dict[str, float] = {
        "size": size,
        "add_s": add_s,
        "compile_s": compile_s,
        "save_s": save_s,
        "load_s": load_s,
    }
    for name, scope in (("broad", PUBLIC), ("restrictive", restrictive)):
        index.search(queries[0], scope, SearchFilters(), 50)  # computes the scope's statistics
        times = []
        for query in queries:
            t0 = time.perf_counter()
            index.search(query, scope, SearchFilters(), 50)
            times.append((time.perf_counter() - t0) * 1000)
        row[f"{name}_p50"] = float(np.percentile(times, 50))
        row[f"{name}_p95"] = float(np.percentile(times, 95))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()

    if not args.skip_quality:
        print("SciFact test nDCG@10, BM25 alone (k1=0.9, b=0.4, title + text)")
        print("| tokenizer | nDCG@10 |\n|---|---|")
        for tokenizer in (Tokenizer(stem=False), Tokenizer(stem=True)):
            print(f"| {tokenizer.name} | {scifact_ndcg(tokenizer):.4f} |", flush=True)

    if not args.skip_latency:
        _, queries, qrels = load_scifact()
        texts = [queries[q] for q in qrels][: args.queries]
        print("\nQuery latency, top-50 with access mask (ms), synthetic SciFact-sentence chunks")
        print("| chunks | add s | compile s | save s | load s | broad p50 | broad p95 |", end="")
        print(" restr. p50 | restr. p95 |\n" + "|---" * 9 + "|")
        for size in args.sizes:
            r = latency(size, texts)
            print(
                f"| {size:,} | {r['add_s']:.1f} | {r['compile_s']:.2f} | {r['save_s']:.2f} | "
                f"{r['load_s']:.2f} | {r['broad_p50']:.2f} | "
                f"{r['broad_p95']:.2f} | {r['restrictive_p50']:.2f} | {r['restrictive_p95']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
