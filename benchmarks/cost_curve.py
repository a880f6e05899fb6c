"""The cost curve: build, open and search indexes of 10k, 100k and 1M chunks on one machine.

    .venv/bin/python -m benchmarks.cost_curve run [--sizes 10000 100000] [--queries 200]
        [--data-dir /tmp/citewell-cost] [--results FILE] [--sample 1000] [--skip-build]
    .venv/bin/python -m benchmarks.cost_curve table [--results FILE]
    .venv/bin/python -m benchmarks.cost_curve lexical --size 10000 [--factors 10 100]

``run`` does, per size, each phase in a fresh process (so RSS and open time are a new
process's): ``build`` writes the index through the real ``IndexWriter`` (qdrant-edge vectors
with HNSW built at commit, the BM25 index, the manifest) and publishes it; ``measure`` opens it
through ``retrieval.service.ServingIndex`` and times searches end to end, query embedding
included (the real default embedder, its query cache off, so every dense and hybrid search
embeds its query); ``refresh`` runs ``Ingestor.ingest_texts`` over the same documents, which
must change nothing. Each phase appends one JSON line to ``--results``; ``table`` prints them.

Synthetic corpus (deterministic per document, so every size shares its first documents):

* Vocabulary: word frequencies counted on the SciFact corpus (5,183 abstracts, ~1.0M words,
  ~37k types); a token is drawn from that unigram (Zipfian) distribution, or, with the
  probability of a SciFact token being a once-seen word, from a Zipf(1.1) tail of 5M synthetic
  rare words (so the vocabulary keeps growing with the corpus, as Heaps' law has real ones do).
* Lengths: documents of 1-12 chunks (geometric, mean ~4); a chunk holds about 160 words (the
  pipeline's 224-wordpiece chunks of English prose), the last chunk of a document 20-160.
* Labels: 4 levels (public 40 %, internal 30 %, confidential 20 %, restricted 10 %) x 8
  groups (one per document, shares 25/20/15/12/10/8/7.5/2.5 %). Principals: *broad*
  (confidential, groups g0-g5: ~81 % of chunks visible) and *restrictive* (public, g6: 3.0 %).
* Vectors: the first ``--sample`` chunks (default 1,000) are embedded by the real default
  embedder (openvino-int8 unless ``CITEWELL_EMBEDDING_BACKEND`` says otherwise); all others are
  random unit vectors. Queries are real SciFact query texts, embedded for real.

Latency is the wall time of ``ServingIndex.search`` (k=10, default fusion and candidate depth)
per mode, plus the BM25 leg alone as the service times it. "short" counts searches that came
back with fewer than k results (a restrictive scope at these sizes always has more than k
visible chunks, and every query shares terms with them).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED_DATA
from citewell.core.logging import configure_logging
from citewell.core.models import AccessLabel, Chunk, Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings

CORPUS = SHARED_DATA / "ir" / "scifact" / "corpus.jsonl.gz"
QUERIES = SHARED_DATA / "ir" / "scifact" / "queries.jsonl"
LEVELS = ("public", "internal", "confidential", "restricted")
LEVEL_SHARES = (0.4, 0.3, 0.2, 0.1)
GROUPS = tuple(f"g{i}" for i in range(8))
GROUP_SHARES = (0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.075, 0.025)
BROAD = Principal(name="broad", clearance="confidential", groups=frozenset(GROUPS[:6]))
RESTRICTIVE = Principal(name="restrictive", clearance="public", groups=frozenset({"g6"}))
SOURCE = "synthetic"
WORDS_PER_CHUNK = 160
TAIL_WORDS = 5_000_000
SEED = 21
WRITE_BATCH_CHUNKS = 5_000
DEFAULT_RESULTS = Path("benchmarks/results/cost_curve.jsonl")


def index_name(size: int) -> str:
    return f"cost-{size}"


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc."""
    fields: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def disk_mb(path: Path) -> float:
    """Space allocated on disk (as ``du``: qdrant-edge preallocates sparse files)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 1e6


# --- the synthetic corpus ------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]
    cumulative: np.ndarray  # cumulative probabilities over ``words``
    tail_share: float  # probability that a token comes from the synthetic tail
    array: np.ndarray  # ``words`` as an object array, for vectorised lookups


def fit_vocabulary() -> Vocabulary:
    counts: Counter[str] = Counter()
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            counts.update(re.findall(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+", record.get("text", "")))
    total = sum(counts.values())
    hapax = sum(1 for c in counts.values() if c == 1)
    ordered = counts.most_common()
    probs = np.array([c for _, c in ordered], dtype=np.float64) / total
    return Vocabulary(
        words=tuple(w for w, _ in ordered),
        cumulative=np.cumsum(probs),
        tail_share=hapax / total,
        array=np.array([w for w, _ in ordered], dtype=object),
    )


@dataclass(frozen=True)
class SyntheticDocument:
    doc_id: str
    title: str
    label: AccessLabel
    rank: int
    chunks: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(self.chunks)


def synthetic_document(vocab: Vocabulary, number: int) -> SyntheticDocument:
    rng = np.random.default_rng([SEED, number])
    n_chunks = min(12, int(rng.geometric(0.25)))
    lengths = [max(40, int(rng.normal(WORDS_PER_CHUNK, 15))) for _ in range(n_chunks - 1)]
    lengths.append(int(rng.integers(20, WORDS_PER_CHUNK + 1)))
    total = sum(lengths)
    picks = np.searchsorted(vocab.cumulative, rng.random(total) * vocab.cumulative[-1])
    tokens = vocab.array[np.minimum(picks, len(vocab.words) - 1)]
    tail = np.flatnonzero(rng.random(total) < vocab.tail_share)
    if tail.size:
        rare = rng.zipf(1.1, size=tail.size) % TAIL_WORDS
        tokens[tail] = [f"q{r:x}" for r in rare]
    chunks: list[str] = []
    offset = 0
    for length in lengths:
        chunks.append(" ".join(tokens[offset : offset + length].tolist()))
        offset += length
    rank = int(rng.choice(len(LEVELS), p=LEVEL_SHARES))
    group = GROUPS[int(rng.choice(len(GROUPS), p=GROUP_SHARES))]
    return SyntheticDocument(
        doc_id=f"doc-{number:07d}",
        title=f"Report {number} {vocab.words[number % 500]}",
        label=AccessLabel(classification=LEVELS[rank], groups=frozenset({group})),
        rank=rank,
        chunks=tuple(chunks),
    )


def documents_for(vocab: Vocabulary, size: int) -> Iterator[SyntheticDocument]:
    """Documents in order until they hold ``size`` chunks (the last one is cut to fit)."""
    written, number = 0, 0
    while written < size:
        doc = synthetic_document(vocab, number)
        if written + len(doc.chunks) > size:
            doc = SyntheticDocument(
                doc.doc_id, doc.title, doc.label, doc.rank, doc.chunks[: size - written]
            )
        written += len(doc.chunks)
        number += 1
        yield doc


def load_queries(n: int) -> list[str]:
    with QUERIES.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle][:n]


# --- phases --------------------------------------------------------------------------------


def settings_for(root: Path) -> Settings:
    return Settings(data_dir=root)


def build(root: Path, size: int, sample: int) -> dict[str, object]:
    from citewell.ingestion.pipeline import Ingestor, _label_fingerprint
    from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
    from citewell.retrieval.factory import build_model_embedder, embedding_model_id
    from citewell.retrieval.index import IndexLayout, IndexWriter
    from citewell.retrieval.manifest import DocumentEntry

    settings = settings_for(root)
    inner = build_model_embedder(settings)
    inner.warm_up()
    embedder = CachingEmbedder(inner, EmbeddingCache(settings.cache_dir / "embeddings.sqlite"))
    recipe = Ingestor(settings, embedder=embedder).chunk_recipe
    vocab = fit_vocabulary()
    rng = np.random.default_rng([SEED, size])
    now = datetime.now(UTC)
    started = time.perf_counter()
    embed_s = 0.0
    chunks_done = 0
    with IndexWriter(
        settings,
        index_name(size),
        embedding_model=embedding_model_id(settings),
        embedding_key=embedder.cache_key,
        dimension=embedder.dimension,
        fresh=True,
    ) as writer:
        batch: list[Chunk] = []
        texts: list[str] = []

        def flush() -> None:
            nonlocal embed_s, chunks_done
            if not batch:
                return
            vectors = rng.standard_normal((len(batch), embedder.dimension)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            real = max(0, min(len(batch), sample - chunks_done))
            if real:
                tick = time.perf_counter()
                vectors[:real] = embedder.embed_documents(texts[:real])
                embed_s += time.perf_counter() - tick
            writer.vectors.upsert(batch, vectors)
            writer.lexical.add(batch, texts)
            chunks_done += len(batch)
            batch.clear()
            texts.clear()

        for doc in documents_for(vocab, size):
            ids: list[str] = []
            offset = 0
            for index, text in enumerate(doc.chunks):
                chunk_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc.doc_id}:{index}"))
                ids.append(chunk_id)
                batch.append(
                    Chunk(
                        chunk_id=chunk_id,
                        doc_id=doc.doc_id,
                        chunk_index=index,
                        text=text,
                        title=doc.title,
                        context=doc.title,
                        source=SOURCE,
                        source_uri=f"{SOURCE}:{doc.doc_id}",
                        doc_type="txt",
                        char_start=offset,
                        char_end=offset + len(text),
                        classification=doc.label.classification,
                        classification_rank=doc.rank,
                        groups=tuple(sorted(doc.label.groups)),
                        modified_at=now,
                    )
                )
                texts.append(f"{doc.title}\n{text}")
                offset += len(text) + 2
            body = f"{doc.title}\n\n{doc.text}"
            writer.manifest.put(
                DocumentEntry(
                    doc_id=doc.doc_id,
                    source=SOURCE,
                    source_uri=f"{SOURCE}:{doc.doc_id}",
                    relative_path=doc.doc_id,
                    title=doc.title,
                    doc_type="txt",
                    # What Ingestor.ingest_texts computes for this document: a refresh with the
                    # same documents then finds every one unchanged.
                    content_hash=hashlib.sha256(body.encode("utf-8")).hexdigest(),
                    label_fingerprint=_label_fingerprint(doc.label),
                    classification=doc.label.classification,
                    classification_rank=doc.rank,
                    groups=tuple(sorted(doc.label.groups)),
                    labelled=True,
                    chunk_ids=tuple(ids),
                    modified_at=now,
                    refreshed_at=now,
                    chunk_recipe=recipe,
                )
            )
            if len(batch) >= WRITE_BATCH_CHUNKS:
                flush()
        flush()
        write_s = time.perf_counter() - started
        tick = time.perf_counter()
        version = writer.commit()
        commit_s = time.perf_counter() - tick
    layout = IndexLayout(settings, index_name(size))
    meta = layout.read_meta(version)
    return {
        "phase": "build",
        "chunks": meta.chunks,
        "documents": meta.documents,
        "backend": meta.embedding_backend,
        "real_vectors": min(sample, size),
        "seconds": round(time.perf_counter() - started, 1),
        "write_s": round(write_s, 1),
        "commit_s": round(commit_s, 1),
        "embed_s": round(embed_s, 1),
        "disk_mb": round(disk_mb(layout.version_dir(version)), 1),
        "peak_rss_mb": round(rss_mb()[1]),
    }


def measure(root: Path, size: int, n_queries: int) -> dict[str, object]:
    from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
    from citewell.retrieval.factory import build_model_embedder
    from citewell.retrieval.service import ServingIndex

    settings = settings_for(root)
    base_rss = rss_mb()[0]
    tick = time.perf_counter()
    inner = build_model_embedder(settings)
    # Every dense and hybrid search embeds its query: the query cache is off.
    embedder = CachingEmbedder(
        inner, EmbeddingCache(settings.cache_dir / "embeddings.sqlite"), query_cache_size=0
    )
    service = ServingIndex(settings, index_name(size), embedder=embedder)
    service.versions.load()  # also resolves the query embedder's backend (loads the model)
    open_s = time.perf_counter() - tick
    rss_loaded = rss_mb()[0]
    queries = load_queries(n_queries)
    result: dict[str, object] = {
        "phase": "measure",
        "chunks": service.status().chunks,
        "open_s": round(open_s, 2),
        "rss_before_mb": round(base_rss),
        "rss_loaded_mb": round(rss_loaded),
        "load_before": load_average(),
    }
    for principal in (BROAD, RESTRICTIVE):
        for mode in (SearchMode.BM25, SearchMode.DENSE, SearchMode.HYBRID):
            for query in queries[:3]:  # warm-up: scope statistics, first-call allocations
                service.search(principal, SearchRequest(query=query, mode=mode, k=10))
            totals: list[float] = []
            cpu: list[float] = []
            bm25_leg: list[float] = []
            short = unjustified = 0
            for query in queries:
                request = SearchRequest(query=query, mode=mode, k=10)
                tick, cpu_tick = time.perf_counter(), time.process_time()
                answer = service.search(principal, request)
                totals.append((time.perf_counter() - tick) * 1000)
                cpu.append((time.process_time() - cpu_tick) * 1000)
                if "bm25" in answer.timings_ms:
                    bm25_leg.append(answer.timings_ms["bm25"])
                if len(answer.results) < request.k:
                    short += 1
                    unjustified += visible_matches(service, principal, request) >= request.k
            key = f"{principal.name}/{mode.value}"
            result[key] = {
                "p50": round(float(np.percentile(totals, 50)), 1),
                "p95": round(float(np.percentile(totals, 95)), 1),
                "p99": round(float(np.percentile(totals, 99)), 1),
                "cpu_p50": round(float(np.percentile(cpu, 50)), 1),
                "cpu_p95": round(float(np.percentile(cpu, 95)), 1),
                "bm25_leg_p95": round(float(np.percentile(bm25_leg, 95)), 1) if bm25_leg else None,
                "short": short,
                "short_with_k_visible": unjustified,
                "queries": len(queries),
            }
            print(key, result[key], file=sys.stderr, flush=True)
    result["rss_after_mb"] = round(rss_mb()[0])
    result["peak_rss_mb"] = round(rss_mb()[1])
    result["load_after"] = load_average()
    service.close()
    return result


def visible_matches(service: Any, principal: Principal, request: SearchRequest) -> int:
    """How many chunks the principal may see that the request's mode could return: every
    visible chunk for dense and hybrid, every visible chunk sharing a term with the query for
    BM25 (counted by the BM25 index without a limit)."""
    from citewell.retrieval.access import scope_for

    scope = scope_for(principal, service.settings.scheme, service.settings.default_groups)
    with service.versions.lease() as opened:
        lexical = opened.lexical
        if request.mode == SearchMode.BM25:
            return len(lexical.search(request.query, scope, request.filters, 10**9))
        classes = lexical._visible_classes(scope)
        return int(sum(lexical._class_docs[c] for c in classes))


def refresh(root: Path, size: int) -> dict[str, object]:
    from citewell.ingestion.pipeline import Ingestor, TextDocument
    from citewell.retrieval.factory import build_embedder
    from citewell.retrieval.index import IndexLayout

    settings = settings_for(root)
    vocab = fit_vocabulary()
    now = datetime.now(UTC)
    docs = [
        TextDocument(doc_id=d.doc_id, title=d.title, text=d.text, label=d.label, modified_at=now)
        for d in documents_for(vocab, size)
    ]
    layout = IndexLayout(settings, index_name(size))
    before = layout.current_version()
    ingestor = Ingestor(settings, embedder=build_embedder(settings))
    ingestor.embedder.warm_up()  # the model load is not the refresh's cost
    report = ingestor.ingest_texts(docs, index=index_name(size), source_name=SOURCE)
    return {
        "phase": "refresh",
        "chunks": size,
        "seconds": report.seconds,
        "unchanged": len(report.unchanged),
        "changed": len(report.added) + len(report.updated) + len(report.deleted),
        "embeddings_computed": report.embeddings_computed,
        "version_kept": layout.current_version() == before,
        "peak_rss_mb": round(rss_mb()[1]),
        "load": load_average(),
    }


def lexical(
    root: Path, size: int, factors: Sequence[int], n_queries: int
) -> list[dict[str, object]]:
    """The lexical leg alone at ``size`` x each factor: the built index's BM25 postings
    replicated under new chunk and document ids (same per-chunk terms, N scaled; the vocabulary
    does not grow), then CPU per query of the chunk and the document legs."""
    from citewell.core.models import SearchFilters
    from citewell.retrieval.access import scope_for
    from citewell.retrieval.index import IndexLayout
    from citewell.retrieval.lexical.bm25 import BM25Index
    from citewell.retrieval.lexical.tokenize import Tokenizer

    settings = settings_for(root)
    layout = IndexLayout(settings, index_name(size))
    saved = layout.version_dir(layout.current_version() or "") / "bm25"
    base = BM25Index.load(saved, tokenizer=Tokenizer(stem=True))
    slots = len(base)
    queries = load_queries(n_queries)
    rows: list[dict[str, object]] = []
    for factor in factors:
        before = rss_mb()[0]
        index = BM25Index.load(saved, tokenizer=Tokenizer(stem=True))
        for copy in range(1, factor):
            for slot in range(slots):
                index._append_slot(
                    chunk_id=f"{base._chunk_ids[slot]}-{copy}",
                    doc_id=f"{base._doc_ids[slot]}-{copy}",
                    source_code=base._source_codes[slot],
                    doc_type_code=base._doc_type_codes[slot],
                    modified=base._modified[slot],
                    class_id=base._class_of[slot],
                    terms=base._terms[slot],
                    counts=base._counts[slot],
                )
        index._invalidate()
        index._compile()
        row: dict[str, object] = {
            "phase": "lexical",
            "chunks": len(index),
            "rss_mb": round(rss_mb()[0] - before),
        }
        for principal in (BROAD, RESTRICTIVE):
            scope = scope_for(principal, settings.scheme, settings.default_groups)
            for leg, search in (("chunk", index.search), ("document", index.document_search)):
                search(queries[0], scope, SearchFilters(), 50)
                times = []
                for query in queries:
                    tick = time.process_time()
                    search(query, scope, SearchFilters(), 50)
                    times.append((time.process_time() - tick) * 1000)
                row[f"{principal.name}/{leg}"] = {
                    "p50": round(float(np.percentile(times, 50)), 1),
                    "p95": round(float(np.percentile(times, 95)), 1),
                }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del index
    return rows


# --- driver ---------------------------------------------------------------------------------


def run_phase(argv: Sequence[str], results: Path) -> None:
    """One phase in a fresh process; its JSON line is appended to ``results``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cost_curve", *argv],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {' '.join(argv)} failed with exit status {done.returncode}")
    line = done.stdout.strip().splitlines()[-1]
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    print(line, flush=True)


def print_table(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    latest: dict[tuple[str, int], dict[str, object]] = {}
    for row in rows:
        latest[(str(row["phase"]), int(row["chunks"]))] = row
    sizes = sorted({size for _, size in latest})
    print(
        "| chunks | build s | disk MB | build peak RSS MB | open s | RSS after load MB "
        "| no-change refresh s | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        b = latest.get(("build", size), {})
        m = latest.get(("measure", size), {})
        r = latest.get(("refresh", size), {})
        print(
            f"| {size:,} | {b.get('seconds', '—')} | {b.get('disk_mb', '—')} "
            f"| {b.get('peak_rss_mb', '—')} | {m.get('open_s', '—')} "
            f"| {m.get('rss_loaded_mb', '—')} | {r.get('seconds', '—')} "
            f"| {m.get('load_before', '—')} to {m.get('load_after', '—')} |"
        )
    print()
    print(
        "| chunks | principal | mode | wall p50 / p95 / p99 ms | process CPU p50 / p95 ms "
        "| BM25 leg p95 ms | short of k (with k visible) |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        measured = latest.get(("measure", size))
        if measured is None:
            continue
        m = measured
        for principal in ("broad", "restrictive"):
            for mode in ("bm25", "dense", "hybrid"):
                cell = m.get(f"{principal}/{mode}")
                if not isinstance(cell, dict):
                    continue
                leg = cell["bm25_leg_p95"] if cell["bm25_leg_p95"] is not None else "—"
                print(
                    f"| {size:,} | {principal} | {mode} | {cell['p50']} / {cell['p95']} / "
                    f"{cell['p99']} | {cell.get('cpu_p50', '—')} / {cell.get('cpu_p95', '—')} "
                    f"| {leg} | {cell['short']} ({cell.get('short_with_k_visible', '—')}) "
                    f"of {cell['queries']} |"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", choices=["run", "table", "build", "measure", "refresh", "lexical"]
    )
    parser.add_argument("--factors", type=int, nargs="+", default=[10, 100], help="lexical")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--size", type=int, default=10_000, help="one phase's size")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sample", type=int, default=1_000, help="chunks with real vectors")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/citewell-cost"))
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--skip-build", action="store_true", help="reuse built indexes")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("WARNING")
    if args.command == "table":
        print_table(args.results)
        return 0
    if args.command == "run":
        common = ["--data-dir", str(args.data_dir)]
        for size in args.sizes:
            if not args.skip_build:
                run_phase(
                    ["build", "--size", str(size), "--sample", str(args.sample), *common],
                    args.results,
                )
            run_phase(
                ["measure", "--size", str(size), "--queries", str(args.queries), *common],
                args.results,
            )
            run_phase(["refresh", "--size", str(size), *common], args.results)
        print()
        print_table(args.results)
        return 0
    if args.command == "lexical":
        for row in lexical(args.data_dir, args.size, args.factors, args.queries):
            print(json.dumps(row), flush=True)
        return 0
    if args.command == "build":
        row = build(args.data_dir, args.size, args.sample)
    elif args.command == "measure":
        row = measure(args.data_dir, args.size, args.queries)
    else:
        row = refresh(args.data_dir, args.size)
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
