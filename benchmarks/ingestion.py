"""Ingestion throughput against the raw embedder, and the cost of a no-change refresh.

    .venv/bin/python -m benchmarks.ingestion [--docs N] [--data-dir DIR] [--no-bracket]
    .venv/bin/python -m benchmarks.ingestion --folder DIR [--parse-workers N]
    .venv/bin/python -m benchmarks.ingestion --pdfs [DIR] [--old KEY=VALUE ...]

``--pdfs`` (default folder: the 20 SEC 10-Q filings in ../shared/data/qa/docugami_sec10q/docs)
runs the real ``Ingestor.ingest_folder`` twice in one process, each into a fresh data dir with
an empty embedding cache: *old defaults* (``--old``, default ``embedding_backend=torch``; the
parse workers cannot be turned off, ``parse_workers=1`` is the closest to the sequential run) and
*new defaults* (``Settings()`` as a new user gets them). Per run it prints the stage seconds
the run reports (parse is the parse workers' time, overlapped with the rest; chunk and write in
this process) and embed as timed around the embedder it was given, documents/s, chunks/s, the raw
embedder's chunks/s on exactly the chunk texts the run embedded (measured right after the run,
no cache) and their ratio. Model exports are made before the clock starts (a one-time cost).
Stages that run in other processes or overlap make the stage sum exceed the wall time.

On the SciFact corpus (default: all 5,183 documents; ``--docs N`` takes the first N):

* raw embedder: chunks/s of ``embed_documents`` (no cache) on exactly the chunk texts the
  pipeline embeds, in one call. Measured before and after the pipeline run (``--no-bracket``:
  before only) because the machine's load drifts; the table shows both and uses their mean.
* pipeline: chunks/s of ``Ingestor.ingest_texts`` into a fresh data dir with an empty embedding
  cache (everything included: staging, chunking, embedding, both indexes, manifest, publish).
* refresh: the same documents again; must compute zero embeddings.

The embedder the pipeline uses records every text it is asked to embed, and the benchmark fails
if that is not exactly the set the raw measurement used.

``--folder DIR`` ingests a folder of files instead (e.g. the 20 SEC 10-Q PDFs in
``../shared/data/qa/docugami_sec10q/docs``): parsing runs in worker processes overlapped with
embedding, and the per-stage table shows it. ``parse (workers)`` is worker time, ``parse
(waited)`` the part of it the run sat waiting for; the difference is parsing hidden behind
chunking, embedding and writing. ``--parse-workers N`` sets the pool size (default: cores - 1).
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

from benchmarks.common import SHARED_DATA, cpu_line
from citewell.core.errors import CitewellError
from citewell.core.logging import configure_logging
from citewell.core.models import AccessLabel, IngestReport
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument, _text_document
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
from citewell.retrieval.factory import build_model_embedder, model_threads
from citewell.retrieval.protocols import Embedder, Matrix, Vector

CORPUS = SHARED_DATA / "ir" / "scifact" / "corpus.jsonl.gz"
SEC_PDFS = SHARED_DATA / "qa" / "docugami_sec10q" / "docs"
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


def print_stages(report: IngestReport) -> None:
    """Per-stage seconds of one run, documents/s and chunks/s."""
    stages = report.stages
    documents = len(report.added) + len(report.updated)
    print("| stage | seconds |")
    print("|---|---|")
    print(f"| parse (workers, {stages.parse_workers} process(es)) | {stages.parse_s:.1f} |")
    print(f"| parse (waited) | {stages.parse_wait_s:.1f} |")
    print(f"| chunk | {stages.chunk_s:.1f} |")
    print(f"| embed | {stages.embed_s:.1f} |")
    print(f"| write | {stages.write_s:.1f} |")
    print(f"| wall | {report.seconds:.1f} |")
    print()
    seconds = max(report.seconds, 1e-9)
    print(
        f"{documents} documents ({documents / seconds:.2f}/s), {report.chunks_written} chunks "
        f"({report.chunks_written / seconds:.1f}/s), {len(report.failed)} failed; parse "
        f"overlap hid {max(stages.parse_s - stages.parse_wait_s, 0.0):.1f} s; peak parse "
        f"worker RSS {stages.parse_peak_rss_bytes / 2**20:.0f} MiB"
    )


def folder_main(folder: Path, root: Path, parse_workers: int | None) -> int:
    settings = Settings(data_dir=root, parse_workers=parse_workers)
    inner = build_model_embedder(settings)
    inner.warm_up()
    inner.embed_documents(["warm-up sentence"] * 8)
    cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    ingestor = Ingestor(settings, embedder=CachingEmbedder(inner, cache))
    print(f"{cpu_line()}; load before: {load_average()}")
    report = ingestor.ingest_folder(folder, index=INDEX, source_name="folder", fresh=True)
    cache.close()
    print(f"load after: {load_average()}")
    print()
    print_stages(report)
    return 0 if report.index_version is not None else 1


class TimedEmbedder(RecordingEmbedder):
    """Records texts and adds up the seconds spent embedding documents."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.seconds = 0.0

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        started = time.perf_counter()
        try:
            return super().embed_documents(texts)
        finally:
            self.seconds += time.perf_counter() - started


def pdf_run(
    label: str, folder: Path, root: Path, exports: Path, overrides: dict[str, str]
) -> dict[str, float | str]:
    """One ingest of ``folder`` into a fresh data dir under ``root`` with these settings."""
    data_dir = root / label.replace(" ", "-")
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = Settings(data_dir=data_dir, model_cache_dir=exports, **overrides)
    inner = build_model_embedder(settings)
    inner.warm_up()  # exports (once) and loads the model before the clock starts
    inner.embed_documents(["warm-up sentence"] * 8)
    timed = TimedEmbedder(inner)
    cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    ingestor = Ingestor(settings, embedder=CachingEmbedder(timed, cache))
    load_before = os.getloadavg()[0]
    report = ingestor.ingest_folder(folder, index="bench-pdfs", source_name="sec", fresh=True)
    wall = report.seconds
    _, raw = raw_rate(inner, timed.texts)
    cache.close()
    documents = len(report.added)
    stages = report.stages  # parse is worker time, overlapped with the rest
    return {
        "label": label,
        "backend": inner.backend,
        "parse": stages.parse_s,
        "chunk": stages.chunk_s,
        "embed": timed.seconds,
        "write": stages.write_s,
        "wall": wall,
        "documents": documents,
        "failed": len(report.failed),
        "chunks": report.chunks_written,
        "docs_s": documents / wall,
        "chunks_s": report.chunks_written / wall,
        "raw_s": raw,
        "ratio": (report.chunks_written / wall) / raw,
        "load": f"{load_before:.1f} to {os.getloadavg()[0]:.1f}",
    }


def pdfs_main(args: argparse.Namespace) -> int:
    folder: Path = args.pdfs
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="citewell-bench-pdfs-"))
    exports = root / "model-exports"  # shared by both runs, kept between runs
    old = dict(item.split("=", 1) for item in args.old)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    print(f"{len(files)} files in {folder}; {cpu_line()}; load before: {load_average()}")
    runs = [
        pdf_run("old defaults", folder, root, exports, old),
        pdf_run("new defaults", folder, root, exports, {}),
    ]
    print(f"load after: {load_average()}")
    print()
    print(
        "| run | backend | parse s | chunk s | embed s | write s | wall s | docs/s | chunks/s "
        "| raw embedder chunks/s | chunks/s ÷ raw | wall ÷ old | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = float(runs[0]["wall"])
    for run in runs:
        print(
            f"| {run['label']} ({', '.join(args.old) if run is runs[0] else 'Settings()'}) "
            f"| {run['backend']} | {run['parse']:.1f} | {run['chunk']:.1f} | {run['embed']:.1f} "
            f"| {run['write']:.1f} | {run['wall']:.1f} | {run['docs_s']:.3f} "
            f"| {run['chunks_s']:.2f} | {run['raw_s']:.2f} | {run['ratio']:.2f} "
            f"| {float(run['wall']) / base:.2f} | {run['load']} |"
        )
    print()
    print(
        f"documents {runs[1]['documents']} ({runs[1]['failed']} failed), chunks "
        f"{runs[0]['chunks']} / {runs[1]['chunks']}; goals: wall ÷ old <= 0.4, ratio >= 0.85"
    )
    if args.data_dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None, help="first N documents (default all)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--no-bracket", action="store_true", help="raw embedder before only")
    parser.add_argument("--folder", type=Path, default=None, help="ingest this folder's files")
    parser.add_argument("--parse-workers", type=int, default=None, help="default: cores - 1")
    parser.add_argument(
        "--pdfs", type=Path, nargs="?", const=SEC_PDFS, default=None, help="old vs new defaults"
    )
    parser.add_argument(
        "--old",
        nargs="*",
        default=["embedding_backend=torch"],
        help="settings of the old-defaults run (KEY=VALUE)",
    )
    args = parser.parse_args(argv)
    if args.parse_workers is not None and args.parse_workers < 1:
        parser.error("--parse-workers must be at least 1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    configure_logging("WARNING")
    if args.pdfs is not None:
        return pdfs_main(args)

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="citewell-bench-ingest-"))
    shutil.rmtree(root, ignore_errors=True)  # a fresh data dir: empty index, empty cache
    if args.folder is not None:
        try:
            return folder_main(args.folder, root, args.parse_workers)
        finally:
            if args.data_dir is None:
                shutil.rmtree(root, ignore_errors=True)
    settings = Settings(data_dir=root)
    inner = build_model_embedder(settings)
    inner.warm_up()
    inner.embed_documents(["warm-up sentence"] * 8)  # first-call allocations off the clock

    recorder = RecordingEmbedder(inner)
    cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    ingestor = Ingestor(settings, embedder=CachingEmbedder(recorder, cache))
    docs = load_documents(args.docs)
    texts = pipeline_chunk_texts(docs, ingestor)
    print(f"{cpu_line()}; load before: {load_average()}")
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
    print()
    print_stages(first)
    print()
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
