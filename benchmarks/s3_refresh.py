"""No-change refresh of an S3 prefix: objects/s when the listing says nothing changed.

    .venv/bin/python -m benchmarks.s3_refresh [--objects 10000] [--data-dir DIR]

Starts a moto S3 server on loopback in its own process (what the tests use, without sharing
this process's GIL), uploads ``--objects`` tiny plain-text objects and a labels file, ingests
them once (timed, with a hashing embedder: the model is not what is measured; plain text parses
without unstructured), then refreshes with nothing changed and reports objects/s. The no-change
refresh must download no document, compute no embedding and publish no version (exit status 1
otherwise): everything it costs is the paginated listing, the labels file, and the manifest
comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import numpy as np
from botocore.config import Config

from citewell.core.logging import configure_logging
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from citewell.ingestion.sources import S3Location, S3Source
from tests.s3_server import running_s3_server

DIM = 64
BUCKET = "citewell-bench"
LABELS = b"default: {classification: internal, groups: [everyone]}\n"
UPLOAD_THREADS = 16


class HashingEmbedder:
    """Deterministic bag-of-words vectors: cheap, so the refresh itself is what is measured."""

    cache_key = "bench-hashing-64"
    dimension = DIM
    computed = 0

    def warm_up(self) -> None:
        pass

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        for word in text.lower().split():
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
        norm = float(np.linalg.norm(v))
        return v / norm if norm else v

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.computed += len(texts)
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


def upload(client, count: int) -> None:
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="docs/citewell.labels.yaml", Body=LABELS)

    def put(i: int) -> None:
        body = f"Note {i}. Object number {i} of the benchmark, team {i % 17}.\n"
        client.put_object(Bucket=BUCKET, Key=f"docs/{i // 1000:02d}/note-{i:05d}.txt", Body=body)

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        list(pool.map(put, range(count)))


def peak_rss_mib() -> float:
    """Peak resident memory of this process (moto's server threads included)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_logging("WARNING", json_output=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="citewell-bench-s3-"))
    # The server in its own process: its request handling does not share our GIL.
    with running_s3_server(own_process=True) as server:
        for key, value in server.env().items():
            os.environ[key] = value
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            config=Config(max_pool_connections=UPLOAD_THREADS),
        )
        started = time.perf_counter()
        upload(client, args.objects)
        upload_s = time.perf_counter() - started
        settings = Settings(data_dir=data_dir, index="bench-s3")
        embedder = HashingEmbedder()
        ingestor = Ingestor(settings, embedder=embedder)

        def source() -> S3Source:
            return S3Source(
                S3Location(bucket=BUCKET, prefix="docs"),
                scheme=settings.scheme,
                max_file_bytes=settings.max_file_bytes,
                name="bench",
            )

        with source() as s3:
            first = ingestor.ingest_objects(s3)
        computed_before = embedder.computed
        with source() as s3:
            downloads: list[str] = []
            pages: list[str] = []
            s3._client.meta.events.register(
                "before-call.s3.GetObject",
                lambda params, **_: downloads.append(params["url_path"]),
            )
            s3._client.meta.events.register(
                "before-call.s3.ListObjectsV2",
                lambda params, **_: pages.append(params["url_path"]),
            )
            started = time.perf_counter()
            refresh = ingestor.ingest_objects(s3)
            refresh_s = time.perf_counter() - started
    documents = [d for d in downloads if not d.endswith(".yaml")]
    rows = [
        ("objects", f"{args.objects:,}"),
        (f"upload ({UPLOAD_THREADS} threads)", f"{upload_s:.1f} s"),
        ("first ingest", f"{first.seconds:.1f} s ({args.objects / first.seconds:,.0f} objects/s)"),
        ("no-change refresh", f"{refresh_s:.2f} s"),
        ("no-change objects/s", f"{args.objects / refresh_s:,.0f}"),
        ("listing pages", str(len(pages))),
        ("documents downloaded", str(len(documents))),
        ("embeddings computed", str(embedder.computed - computed_before)),
        ("unchanged", f"{len(refresh.unchanged):,}"),
        ("peak RSS (this process)", f"{peak_rss_mib():,.0f} MiB"),
        ("load average (1 min)", f"{os.getloadavg()[0]:.1f}"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    ok = (
        not documents
        and embedder.computed == computed_before
        and len(refresh.unchanged) == args.objects
        and refresh.index_version == first.index_version
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
