"""CPU inference benchmark: embedding throughput, query latency and rerank latency per backend.

    .venv/bin/python -m benchmarks.inference [--docs 500 | --all] [--threads N] [--layers 6 2]
        [--rerank-lengths 256 128] [--backends ...] [--ndcg [--data-dir .citewell-bench]]

Rerank timings use a cross-encoder built from the bundled MiniLM with a fresh head (timing
only; no pretrained cross-encoder ships offline). ``--layers`` adds truncated students.
``--ndcg`` adds SciFact test nDCG@10 per mode per backend through the real evaluation
(``evaluation.retrieval_eval``); its indexes are built once per backend under ``--data-dir``
and reused (a new backend embeds the 5,183 documents once).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA, cpu_line
from citewell.core.logging import configure_logging
from citewell.core.settings import Settings
from citewell.evaluation.beir import load_beir
from citewell.evaluation.retrieval_eval import (
    default_index_name,
    evaluate_retrieval,
    index_fingerprint,
)
from citewell.retrieval.embedding import (
    BACKENDS,
    SentenceTransformerEmbedder,
    backend_tag,
    bundled_model_path,
)
from citewell.retrieval.rerank import CrossEncoderReranker

CORPUS = SHARED_DATA / "ir" / "scifact" / "corpus.jsonl.gz"
QUERIES = SHARED_DATA / "ir" / "scifact" / "queries.jsonl"
SCIFACT = SHARED_DATA / "ir" / "scifact"
NDCG_MODES = ("bm25", "dense", "hybrid")


def load_corpus(limit: int | None) -> list[str]:
    docs: list[str] = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            docs.append(f"{record['title']}\n{record['text']}")
            if limit is not None and len(docs) == limit:
                break
    return docs


def load_queries(n: int) -> list[str]:
    with QUERIES.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle][:n]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def build_cross_encoder(path: Path, layers: int) -> Path:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(bundled_model_path()), num_labels=1, device="cpu")
    model.model.bert.encoder.layer = model.model.bert.encoder.layer[:layers]
    model.model.config.num_hidden_layers = layers
    model.save(str(path))
    return path


def bench_embedder(
    embedder: SentenceTransformerEmbedder, docs: list[str], queries: list[str]
) -> dict[str, float]:
    embedder.warm_up()
    embedder.embed_documents(docs[:32])  # first-batch allocations out of the timing
    started = time.perf_counter()
    embedder.embed_documents(docs)
    docs_per_s = len(docs) / (time.perf_counter() - started)
    samples = []
    for query in queries:
        t = time.perf_counter()
        embedder.embed_query(query)
        samples.append(time.perf_counter() - t)
    p50, p95 = percentiles(samples)
    return {"docs_per_s": docs_per_s, "query_p50": p50, "query_p95": p95}


def bench_reranker(
    reranker: CrossEncoderReranker, docs: list[str], queries: list[str], sizes: tuple[int, ...]
) -> dict[str, float]:
    reranker.warm_up()
    rng = random.Random(7)
    out: dict[str, float] = {}
    for size in sizes:
        reranker.score(queries[0], docs[:size])
        samples = []
        for query in queries:
            candidates = rng.sample(docs, size)
            t = time.perf_counter()
            reranker.score(query, candidates)
            samples.append(time.perf_counter() - t)
        out[f"rerank{size}_p50"], out[f"rerank{size}_p95"] = percentiles(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=500, help="SciFact documents to embed")
    parser.add_argument("--all", action="store_true", help="embed the whole SciFact corpus")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--queries", type=int, default=30, help="timed queries / rerank calls")
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 2], help="reranker depths")
    parser.add_argument("--max-length", type=int, default=256, help="embedding tokens")
    parser.add_argument(
        "--rerank-lengths", type=int, nargs="+", default=[256], help="reranker pair tokens"
    )
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--ndcg", action="store_true", help="SciFact test nDCG@10 per backend")
    parser.add_argument("--data-dir", type=Path, default=Path(".citewell-bench"))
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    configure_logging("WARNING")
    print(cpu_line())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    docs = load_corpus(None if args.all else args.docs)
    queries = load_queries(args.queries)
    threads = args.threads or os.cpu_count() or 1
    print(
        f"{len(docs)} SciFact docs, {len(queries)} queries, {threads} threads, "
        f"max length {args.max_length}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / "models"
        rows: dict[str, dict[str, float]] = {}
        for backend in args.backends:
            embedder = SentenceTransformerEmbedder(
                backend=backend,
                threads=threads,
                export_dir=export_dir,
                max_seq_length=args.max_length,
            )
            rows[backend] = bench_embedder(embedder, docs, queries)
        print("\nEmbedding (all-MiniLM-L6-v2)")
        print(f"{'backend':<14} {'docs/s':>8} {'speed-up':>9} {'query p50':>10} {'query p95':>10}")
        base = rows.get("torch", next(iter(rows.values())))["docs_per_s"]
        for backend, row in rows.items():
            print(
                f"{backend:<14} {row['docs_per_s']:>8.1f} {row['docs_per_s'] / base:>8.2f}x "
                f"{row['query_p50']:>8.1f}ms {row['query_p95']:>8.1f}ms"
            )

        for layers in args.layers:
            ce_dir = build_cross_encoder(Path(tmp) / f"minilm-ce-l{layers}", layers)
            for length in args.rerank_lengths:
                rerank_rows = {
                    backend: bench_reranker(
                        CrossEncoderReranker(
                            str(ce_dir),
                            backend=backend,
                            threads=threads,
                            export_dir=export_dir,
                            max_length=length,
                        ),
                        docs,
                        queries,
                        (20, 50),
                    )
                    for backend in args.backends
                }
                print(f"\nRerank (MiniLM cross-encoder, {layers} layers, {length} tokens; ms)")
                print(
                    f"{'backend':<14} {'20 p50':>8} {'20 p95':>8} {'50 p50':>8} {'50 p95':>8} "
                    f"{'speed-up@50':>12}"
                )
                base50 = rerank_rows.get("torch", next(iter(rerank_rows.values())))["rerank50_p50"]
                for backend, row in rerank_rows.items():
                    print(
                        f"{backend:<14} {row['rerank20_p50']:>8.0f} {row['rerank20_p95']:>8.0f} "
                        f"{row['rerank50_p50']:>8.0f} {row['rerank50_p95']:>8.0f} "
                        f"{base50 / row['rerank50_p50']:>11.2f}x"
                    )

    if args.ndcg:
        print_ndcg(args.backends, args.data_dir)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def print_ndcg(backends: list[str], data_dir: Path) -> None:
    """SciFact test nDCG@10 per mode per backend; one evaluation index per backend."""
    scores: dict[str, dict[str, float]] = {}
    for backend in backends:
        settings = Settings(data_dir=data_dir, embedding_backend=backend)
        # The evaluation fingerprint names the backend, not its numeric recipe; a backend
        # whose recipe changed gets its own index so it never scores an earlier recipe's.
        index_name = None
        if backend_tag(backend) != backend:
            fingerprint = index_fingerprint(settings, load_beir(SCIFACT, "test"))
            tagged = hashlib.sha256(f"{fingerprint}|{backend_tag(backend)}".encode()).hexdigest()
            index_name = default_index_name(load_beir(SCIFACT, "test"), tagged)
        report = evaluate_retrieval(settings, SCIFACT, "test", NDCG_MODES, index_name=index_name)
        scores[backend] = {mode: m.ndcg_at_10 for mode, m in report.modes.items()}
    print("\nSciFact test nDCG@10 (delta to torch)")
    print(f"{'backend':<14} " + " ".join(f"{mode:>16}" for mode in NDCG_MODES))
    base = scores.get("torch")
    for backend, row in scores.items():
        cells = []
        for mode in NDCG_MODES:
            delta = f"({row[mode] - base[mode]:+.4f})" if base else ""
            cells.append(f"{row[mode]:>7.4f} {delta:>8}")
        print(f"{backend:<14} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
