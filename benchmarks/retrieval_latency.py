"""Search latency through the real ``ServingIndex`` at 10k and 100k chunks.

    .venv/bin/python -m benchmarks.retrieval_latency [--sizes 10000 100000] [--queries 200]
        [--rerank-queries 40] [--data-dir DIR] [--optimize]

Indexes are written straight through ``IndexWriter`` (one per size, reused on later runs when
the published version holds that many chunks): random unit vectors as the dense side (allowed:
only the query path has to be real) and, as text, 3-8 sentences sampled from SciFact abstracts,
so BM25 sees a real vocabulary and real term statistics. Each chunk gets a classification
(public 40%, internal 30%, confidential 20%, restricted 10%) and one group: ``everyone`` (5%)
or one of 20 departments.

Queries are SciFact query texts. Query embedding is measured on its own first (the real MiniLM
embedder, one ``embed_query`` per query, no cache) and printed once; the searches then go through
the real ``ServingIndex`` with the production ``CachingEmbedder``, whose query cache those calls
warmed. On a loaded 2-core machine, embedding inside the timed loop measured CPU contention more
than the index, so embedding is reported beside the search numbers instead of inside them.

Two principals: *broad* (confidential, 15 departments: ~69% of chunks visible) and *restrictive*
(public, one department: ~4%). Per mode: p50/p95 of the whole ``search`` call (query vector from
the cache), of the same minus reranking ("store path": BM25, vector search, hydration, fusion)
and of the rerank step alone. Rerank uses a CrossEncoder built from the bundled MiniLM weights
(fresh head; timing only) over ``rerank_candidates`` = 20.

``--optimize`` builds HNSW (``EdgeVectorStore.optimize``) in each index before measuring and
reports its cost; without it the shard keeps the segments the writes produced.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA
from citewell.core.errors import CitewellError
from citewell.core.logging import configure_logging
from citewell.core.models import Chunk, Principal, SearchMode, SearchRequest, SearchResult
from citewell.core.settings import Settings
from citewell.retrieval.embedding import SentenceTransformerEmbedder, bundled_model_path
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache, caller_partition
from citewell.retrieval.factory import embedding_model_id, model_export_dir, model_threads
from citewell.retrieval.index import IndexLayout, IndexWriter
from citewell.retrieval.manifest import DocumentEntry
from citewell.retrieval.rerank import CrossEncoderReranker
from citewell.retrieval.service import ServingIndex
from citewell.retrieval.stores.edge import EdgeVectorStore

CORPUS = SHARED_DATA / "ir" / "scifact" / "corpus.jsonl.gz"
QUERIES = SHARED_DATA / "ir" / "scifact" / "queries.jsonl"
LEVELS = ("public", "internal", "confidential", "restricted")
LEVEL_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
DEPARTMENTS = tuple(f"dept-{i:02d}" for i in range(20))
EVERYONE_SHARE = 0.05
CHUNKS_PER_DOC = 4
WRITE_BATCH = 2000
SOURCE = "bench"

BROAD = Principal(name="broad", clearance="confidential", groups=frozenset(DEPARTMENTS[:15]))
RESTRICTIVE = Principal(name="restrictive", clearance="public", groups=frozenset(DEPARTMENTS[:1]))


def load_sentences() -> list[str]:
    sentences: list[str] = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line).get("text", "")
            sentences.extend(s for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20)
    return sentences


def load_queries(n: int) -> list[str]:
    with QUERIES.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle][:n]


def index_name(size: int) -> str:
    return f"scale-{size}"


def existing_chunks(settings: Settings, size: int) -> int:
    layout = IndexLayout(settings, index_name(size))
    version = layout.current_version()
    return layout.read_meta(version).chunks if version else 0


def build_index(
    settings: Settings, size: int, embedding_key: str, sentences: Sequence[str], seed: int = 0
) -> float:
    """Write ``size`` synthetic chunks through IndexWriter; returns seconds."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    dim = 384
    started = time.perf_counter()
    now = datetime.now(UTC)
    with IndexWriter(
        settings,
        index_name(size),
        embedding_model=embedding_model_id(settings),
        embedding_key=embedding_key,
        dimension=dim,
        fresh=True,
    ) as writer:
        for start in range(0, size, WRITE_BATCH):
            count = min(WRITE_BATCH, size - start)
            chunks: list[Chunk] = []
            texts: list[str] = []
            entries: list[DocumentEntry] = []
            for first in range(start, start + count, CHUNKS_PER_DOC):
                doc_id = f"doc-{first // CHUNKS_PER_DOC:06d}"
                rank = pick.choices(range(len(LEVELS)), LEVEL_WEIGHTS)[0]
                group = "everyone" if pick.random() < EVERYONE_SHARE else pick.choice(DEPARTMENTS)
                ids: list[str] = []
                for index in range(min(CHUNKS_PER_DOC, start + count - first)):
                    text = " ".join(pick.sample(sentences, pick.randint(3, 8)))
                    cid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc_id}:{index}"))
                    ids.append(cid)
                    texts.append(text)
                    chunks.append(
                        Chunk(
                            chunk_id=cid,
                            doc_id=doc_id,
                            chunk_index=index,
                            text=text,
                            title=doc_id,
                            source=SOURCE,
                            source_uri=f"bench:{doc_id}",
                            doc_type="txt",
                            char_start=0,
                            char_end=len(text),
                            classification=LEVELS[rank],
                            classification_rank=rank,
                            groups=(group,),
                            modified_at=now,
                        )
                    )
                entries.append(
                    DocumentEntry(
                        doc_id=doc_id,
                        source=SOURCE,
                        source_uri=f"bench:{doc_id}",
                        relative_path=doc_id,
                        title=doc_id,
                        doc_type="txt",
                        content_hash=doc_id,
                        label_fingerprint=f"{rank}:{group}",
                        classification=LEVELS[rank],
                        classification_rank=rank,
                        groups=(group,),
                        labelled=True,
                        banner_level=None,
                        chunk_ids=tuple(ids),
                        modified_at=now,
                        refreshed_at=now,
                    )
                )
            vectors = rng.standard_normal((len(chunks), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            writer.vectors.upsert(chunks, vectors)
            writer.lexical.add(chunks, texts)
            for entry in entries:
                writer.manifest.put(entry)
        writer.commit()
    return time.perf_counter() - started


def optimize_index(settings: Settings, size: int) -> float:
    layout = IndexLayout(settings, index_name(size))
    version = layout.current_version()
    if version is None:
        raise CitewellError(f"index {index_name(size)} has no version")
    store = EdgeVectorStore(layout.version_dir(version) / "vectors", 384)
    started = time.perf_counter()
    store.optimize()
    store.flush()
    store.close()
    return time.perf_counter() - started


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def measure(
    service: ServingIndex,
    principal: Principal,
    queries: Sequence[str],
    mode: SearchMode,
    rerank: bool,
) -> dict[str, tuple[float, float]]:
    totals: list[float] = []
    store: list[float] = []
    rerank_ms: list[float] = []
    hits: list[int] = []
    for query in queries[:2]:  # warm-up (scope statistics, first-call allocations)
        service.search(principal, SearchRequest(query=query, mode=mode, rerank=rerank))
    for query in queries:
        started = time.perf_counter()
        result: SearchResult = service.search(
            principal, SearchRequest(query=query, mode=mode, rerank=rerank, k=10)
        )
        total = (time.perf_counter() - started) * 1000
        if rerank and not result.reranked:
            raise CitewellError(f"rerank requested but not applied: {result.rerank_note}")
        r = result.timings_ms.get("rerank", 0.0)
        totals.append(total)
        store.append(total - r)
        if rerank:
            rerank_ms.append(r)
        hits.append(len(result.results))
    return {
        "total": percentiles(totals),
        "store": percentiles(store),
        "rerank": percentiles(rerank_ms),
        "hits": (float(np.mean(hits)), float(np.min(hits))),
    }


def build_reranker(root: Path, threads: int) -> CrossEncoderReranker:
    path = root / "minilm-cross-encoder"
    if not (path / "config.json").exists():
        from sentence_transformers import CrossEncoder

        CrossEncoder(str(bundled_model_path()), num_labels=1, device="cpu").save(str(path))
    reranker = CrossEncoderReranker(str(path), backend="torch", threads=threads)
    reranker.warm_up()
    return reranker


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rerank-queries", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="model threads")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("/tmp/citewell-bench-retrieval"), help="reused"
    )
    parser.add_argument("--optimize", action="store_true", help="build HNSW before measuring")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    configure_logging("WARNING")

    settings = Settings(data_dir=args.data_dir, model_threads=args.threads)
    threads = model_threads(settings)
    embedder = SentenceTransformerEmbedder(
        model=settings.embedding_model,
        backend=settings.embedding_backend,
        max_seq_length=settings.embedding_max_seq_length,
        batch_size=settings.embedding_batch_size,
        threads=threads,
        export_dir=model_export_dir(settings),
    )
    embedder.warm_up()
    reranker = build_reranker(args.data_dir, threads)
    queries = load_queries(args.queries)
    embed_ms: list[float] = []
    for query in queries:
        started = time.perf_counter()
        embedder.embed_query(query)
        embed_ms.append((time.perf_counter() - started) * 1000)
    cached = CachingEmbedder(embedder, EmbeddingCache(settings.cache_dir / "embeddings.sqlite"))
    for principal in (BROAD, RESTRICTIVE):
        # The query cache is per caller: fill each measured principal's partition.
        with caller_partition(principal):
            for query in queries:
                cached.embed_query(query)
    p50, p95 = percentiles(embed_ms)
    print(
        f"query embedding ({len(queries)} queries, {threads} threads): p50 {p50:.1f} ms, "
        f"p95 {p95:.1f} ms; load {load_average()}"
    )
    sentences: list[str] | None = None

    for size in args.sizes:
        if args.rebuild or existing_chunks(settings, size) != size:
            sentences = sentences or load_sentences()
            seconds = build_index(settings, size, embedder.cache_key, sentences)
            print(f"built {index_name(size)}: {size} chunks in {seconds:.1f} s")
        if args.optimize:
            print(f"optimize {index_name(size)}: {optimize_index(settings, size):.1f} s")
        service = ServingIndex(settings, index_name(size), embedder=cached, reranker=reranker)
        service.versions.load()
        print(f"\n## {size} chunks; load {load_average()}\n")
        print(
            "| principal | mode | total p50/p95 ms | store path p50/p95 ms "
            "| rerank p50/p95 ms | hits mean/min |"
        )
        print("|---|---|---|---|---|---|")
        for principal in (BROAD, RESTRICTIVE):
            runs = [
                ("bm25", SearchMode.BM25, False, queries),
                ("dense", SearchMode.DENSE, False, queries),
                ("hybrid", SearchMode.HYBRID, False, queries),
                ("hybrid+rerank", SearchMode.HYBRID, True, queries[: args.rerank_queries]),
            ]
            for label, mode, rerank, qs in runs:
                stats = measure(service, principal, qs, mode, rerank)
                cells = [
                    f"{stats[key][0]:.1f} / {stats[key][1]:.1f}"
                    for key in ("total", "store", "rerank")
                ]
                hits = f"{stats['hits'][0]:.1f} / {stats['hits'][1]:.0f}"
                print(f"| {principal.name} | {label} | {' | '.join(cells)} | {hits} |", flush=True)
        service.close()
    print(f"\nload after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
