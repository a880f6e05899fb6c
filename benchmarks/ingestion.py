"""Ingestion throughput against the raw embedder, and the cost of a no-change refresh.

    .venv/bin/python -m benchmarks.ingestion [--docs N] [--data-dir DIR] [--no-bracket]

On the SciFact corpus (default: all 5,183 documents; ``--docs N`` takes the first N):

* raw embedder: chunks/s of ``embed_documents`` (no cache) on exactly the chunk texts the
  pipeline embeds, in one call. Measured before and after the pipeline run (``--no-bracket``:
  before only) because the machine's load drifts; the table shows both and uses their mean.
* pipeline: chunks/s of ``Ingestor.ingest_texts`` into a fresh data dir with an empty embedding
  cache (everything included: staging, chunking, embedding, both indexes, manifest, publish).
* refresh: the same documents again; must compute zero embeddings.

The embedder the pipeline uses records every text it is asked to embed, and the benchmark fails
if that is not exactly the set the raw measurement used.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from citewell.core.errors import CitewellError
from citewell.core.logging import configure_logging
from citewell.core.models import AccessLabel
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument, _text_document
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
from citewell.retrieval.factory import build_model_embedder, model_threads
from citewell.retrieval.protocols import Embedder, Matrix, Vector

CORPUS = Path("/work/shared/data/ir/scifact/corpus.jsonl.gz")
INDEX = "bench-ingest"
SOURCE = "scifact"
LABEL = AccessLabel(classification="internal", groups=frozenset({"everyone"}))


class RecordingEmbedder:
    """Delegates to ``inner`` and remembers every document text it embedded."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def cache_key(self) -> str:
        return self.inner.cache_key

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def warm_up(self) -> None:
        self.inner.warm_up()

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        self.texts.extend(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> Vector:
        return self.inner.embed_query(text)


def load_documents(limit: int | None) -> list[TextDocument]:
    docs: list[TextDocument] = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            docs.append(
                TextDocument(
                    doc_id=str(record["_id"]),
                    title=record.get("title", ""),
                    text=record.get("text", ""),
                    label=LABEL,
                )
            )
            if limit is not None and len(docs) == limit:
                break
    return docs


def pipeline_chunk_texts(docs: Sequence[TextDocument], ingestor: Ingestor) -> list[str]:
    """The texts ``Ingestor.ingest_texts`` embeds for these documents (same body, same chunker
    and token counter); the run checks this against what the pipeline really embedded."""
    texts: list[str] = []
    for doc in docs:
        body = f"{doc.title}\n\n{doc.text}" if doc.title.strip() else doc.text
        parsed = _text_document(doc.title or doc.doc_id, body, doc.title)
        # The texts ingestion will embed (headers and sequence cap included), so the raw rate
        # and the pipeline rate measure the same work.
        texts.extend(d.embedding_text for d in ingestor.chunk(parsed))
    return texts


def raw_rate(embedder: Embedder, texts: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    embedder.embed_documents(texts)
    seconds = time.perf_counter() - started
    return seconds, len(texts) / seconds


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None, help="first N documents (default all)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--no-bracket", action="store_true", help="raw embedder before only")
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    configure_logging("WARNING")

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="citewell-bench-ingest-"))
    shutil.rmtree(root, ignore_errors=True)  # a fresh data dir: empty index, empty cache
    settings = Settings(data_dir=root)
    inner = build_model_embedder(settings)
    inner.warm_up()
    inner.embed_documents(["warm-up sentence"] * 8)  # first-call allocations off the clock

    recorder = RecordingEmbedder(inner)
    cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    ingestor = Ingestor(settings, embedder=CachingEmbedder(recorder, cache))
    docs = load_documents(args.docs)
    texts = pipeline_chunk_texts(docs, ingestor)
    print(f"load before: {load_average()}")
    print(f"{len(docs)} documents, {len(texts)} chunks; model threads {model_threads(settings)}")

    raw_before_s, raw_before = raw_rate(inner, texts)

    first = ingestor.ingest_texts(docs, index=INDEX, source_name=SOURCE, fresh=True)
    if sorted(set(recorder.texts)) != sorted(set(texts)):
        raise CitewellError("the pipeline embedded other texts than the raw measurement used")
    pipeline_rate = first.chunks_written / first.seconds

    raw_after_s, raw_after = (0.0, 0.0) if args.no_bracket else raw_rate(inner, texts)
    raw = raw_before if args.no_bracket else (raw_before + raw_after) / 2

    recorder.texts.clear()
    refresh = ingestor.ingest_texts(docs, index=INDEX, source_name=SOURCE)
    cache.close()

    print(f"load after: {load_average()}")
    print()
    print("| measure | chunks | seconds | chunks/s |")
    print("|---|---|---|---|")
    print(f"| raw embedder (before) | {len(texts)} | {raw_before_s:.1f} | {raw_before:.1f} |")
    if not args.no_bracket:
        print(f"| raw embedder (after) | {len(texts)} | {raw_after_s:.1f} | {raw_after:.1f} |")
    print(
        f"| pipeline, first ingest | {first.chunks_written} | {first.seconds:.1f} "
        f"| {pipeline_rate:.1f} |"
    )
    print()
    print(f"ratio pipeline / raw: {pipeline_rate / raw:.2f} (goal >= 0.80)")
    print(
        f"first ingest: {first.embeddings_computed} embeddings computed, "
        f"{len(first.added)} documents added"
    )
    print(
        f"no-change refresh: {refresh.seconds:.2f} s, {refresh.embeddings_computed} embeddings "
        f"computed (goal 0), {len(recorder.texts)} texts reached the model, "
        f"{len(refresh.unchanged)} unchanged, {refresh.chunks_written} chunks written"
    )
    if args.data_dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if refresh.embeddings_computed == 0 and not recorder.texts else 1


if __name__ == "__main__":
    raise SystemExit(main())
