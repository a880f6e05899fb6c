"""An indexed object version kept after its replacement was refused (moto S3 on loopback): the
replacement's tags describe the replacement, never the indexed content."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from citewell.core.models import ClassificationScheme
from citewell.ingestion.pipeline import Ingestor
from citewell.ingestion.sources import S3Location, S3Source
from citewell.retrieval.index import open_version

pytestmark = pytest.mark.slow

LABELS = b"default: {classification: internal, groups: [everyone]}\n"


def _manifest(settings) -> dict:
    opened = open_version(settings)
    try:
        return {d.relative_path: d for d in opened.manifest.iter_documents()}
    finally:
        opened.close()


def _source(bucket: str, max_file_bytes: int) -> S3Source:
    return S3Source(
        S3Location(bucket=bucket, prefix="kb"),
        scheme=ClassificationScheme(),
        max_file_bytes=max_file_bytes,
        name="kb",
        object_labels=frozenset({"tags"}),
        default_groups=frozenset({"everyone"}),
        max_attempts=2,
        timeout_s=5,
    )


def _indexed_merger(s3_env: Any, make_settings: Any, embedder: Any) -> tuple[str, Any, Any, Any]:
    """A bucket whose board/merger.md is tagged restricted for board, indexed once."""
    bucket = f"kb-{uuid.uuid4().hex[:10]}"
    client = s3_env.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="kb/citewell.labels.yaml", Body=LABELS)
    client.put_object(
        Bucket=bucket,
        Key="kb/board/merger.md",
        Body=b"# Merger\n\nThe board approved the unannounced merger with the walrus company.\n",
        Tagging="classification=restricted&groups=board",
    )
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    with _source(bucket, 4096) as s3:
        ingestor.ingest_objects(s3)
    assert _manifest(settings)["board/merger.md"].classification == "restricted"
    return bucket, client, settings, ingestor


@pytest.mark.parametrize(
    "replacement",
    [
        # Over the size limit: refused at discovery, so the indexed (restricted) text stays;
        # the replacement's missing tag says nothing about that text.
        b"x" * 8192,
        # Nothing to parse: the replacement fails, the indexed (restricted) text stays, and the
        # failed replacement's missing tag must not lower it.
        b"",
    ],
    ids=["refused-too-large", "failed-empty"],
)
def test_a_kept_version_does_not_take_its_replacements_lower_tags(
    s3_env, make_settings, embedder, replacement
):
    bucket, client, settings, ingestor = _indexed_merger(s3_env, make_settings, embedder)
    client.put_object(Bucket=bucket, Key="kb/board/merger.md", Body=replacement)
    with _source(bucket, 4096) as s3:
        report = ingestor.ingest_objects(s3)
    assert any(f.source_uri.endswith("board/merger.md") for f in report.failed), report
    kept = _manifest(settings)["board/merger.md"]
    assert (kept.classification, kept.groups) == ("restricted", ("board",)), kept


def test_an_unchanged_entry_is_not_relabelled_by_a_replacement_made_after_the_listing(
    s3_env, make_settings, embedder
):
    bucket, client, settings, ingestor = _indexed_merger(s3_env, make_settings, embedder)
    key = "kb/board/merger.md"

    # Listed unchanged, then replaced (untagged) before its tags are read: the listing says the
    # indexed text is current, the tags read are the replacement's.
    with _source(bucket, 4096) as s3:
        listed = s3.discover

        def discover_then_replace():
            found = listed()
            client.put_object(Bucket=bucket, Key=key, Body=b"# Merger\n\nAnnounced.\n")
            return found

        s3.discover = discover_then_replace
        report = ingestor.ingest_objects(s3)
    assert any(f.source_uri.endswith("board/merger.md") for f in report.failed), report
    kept = _manifest(settings).get("board/merger.md")
    assert kept is None or (kept.classification, kept.groups) == ("restricted", ("board",)), kept

    with _source(bucket, 4096) as s3:
        report = ingestor.ingest_objects(s3)
    indexed = _manifest(settings)["board/merger.md"]
    assert (indexed.classification, indexed.groups) == ("internal", ("everyone",)), report
