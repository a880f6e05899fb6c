"""Labels through scheduled refreshes, for folders and object stores alike (issue 19): a document
refused at discovery keeps its indexed version only under the label the source gives it now, and
the Airflow planner classifies documents carrying Purview labels exactly as the pipeline does.
Object stores run against a real S3 API server on loopback (moto server mode)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from citewell.ingestion.pipeline import Ingestor
from citewell.ingestion.refresh import discover, finalize, plan, process_batch
from citewell.ingestion.sources import S3Source
from citewell.ingestion.sources_config import SourceConfig
from citewell.retrieval.index import open_version
from tests.ingestion.mip_files import (
    CONFIDENTIAL,
    HIGHLY,
    POLICY_YAML,
    add_label_parts,
    forbid_label_reads_here,
    msip_properties,
    write_docx,
    write_pdf,
)
from tests.s3_server import bucket_with, s3_source

pytestmark = pytest.mark.slow

LABELS = "default: {classification: internal, groups: [everyone]}\n" + POLICY_YAML
PLAN = "# Harbour plan\n\nThe Gdansk harbour expansion adds four cranes in spring.\n"
MEMO = "# Canteen memo\n\nThe canteen serves soup on Fridays.\n"


def _indexed(settings: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """relative path -> (classification, groups) of the published version; stores agree."""
    opened = open_version(settings, "idx")
    try:
        docs = {d.relative_path: d for d in opened.manifest.iter_documents()}
        chunks = sum(len(d.chunk_ids) for d in docs.values())
        assert opened.vectors.count() == len(opened.lexical) == chunks
        return {p: (d.classification, d.groups) for p, d in docs.items()}
    finally:
        opened.close()


# --- object stores ------------------------------------------------------------------------
@pytest.fixture
def bucket(s3_env: Any) -> str:
    objects = {"kb/citewell.labels.yaml": LABELS, "kb/plan.md": PLAN, "kb/memo.md": MEMO}
    return bucket_with(s3_env, objects, "lbl")


def _s3(bucket: str, **kwargs: Any) -> S3Source:
    kb = {"max_file_bytes": 200, "name": "kb", "default_groups": frozenset({"everyone"})}
    return s3_source(bucket, "kb", **{**kb, **kwargs})


def test_an_object_refused_at_discovery_takes_the_current_label(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    """Grown over the size limit (refused by the listing) in the same change that raises its
    sidecar: the kept version is served at the new level in that refresh; when the sidecar
    breaks, it is withdrawn."""
    settings = make_settings(index="idx")
    ingestor = Ingestor(settings, embedder=embedder)
    with _s3(bucket) as s3:
        ingestor.ingest_objects(s3)
    assert _indexed(settings)["plan.md"] == ("internal", ("everyone",))

    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="kb/plan.md", Body=(PLAN + "x" * 300).encode())
    client.put_object(
        Bucket=bucket, Key="kb/plan.md.labels.yaml", Body=b"classification: restricted\n"
    )
    with _s3(bucket) as s3:
        report = ingestor.ingest_objects(s3)
    assert report.relabeled == ("plan.md",), report
    assert any("too large" in f.reason for f in report.failed)
    assert _indexed(settings)["plan.md"][0] == "restricted"

    client.put_object(Bucket=bucket, Key="kb/plan.md.labels.yaml", Body=b"classification: [\n")
    with _s3(bucket) as s3:
        report = ingestor.ingest_objects(s3)
    assert report.withdrawn == ("plan.md",), report
    assert set(_indexed(settings)) == {"memo.md"}


def test_an_object_refused_at_discovery_follows_object_tags(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    """Object tags are labels too when trusted: raising them applies to a kept version."""
    settings = make_settings(index="idx")
    ingestor = Ingestor(settings, embedder=embedder)
    with _s3(bucket, object_labels=frozenset({"tags"})) as s3:
        ingestor.ingest_objects(s3)
    client = s3_env.client()
    client.put_object(
        Bucket=bucket,
        Key="kb/plan.md",
        Body=(PLAN + "x" * 300).encode(),
        Tagging="classification=confidential&groups=board",
    )
    with _s3(bucket, object_labels=frozenset({"tags"})) as s3:
        report = ingestor.ingest_objects(s3)
    assert report.relabeled == ("plan.md",), report
    assert _indexed(settings)["plan.md"] == ("confidential", ("board",))


def test_a_failed_download_keeps_the_old_version_under_the_new_label(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    """Changed and relabelled, then replaced again between listing and download (the ETag no
    longer matches): the old text stays, at the new level; changed, relabelled and deleted
    after the listing: the same, and the next refresh deletes it."""
    settings = make_settings(index="idx")
    ingestor = Ingestor(settings, embedder=embedder)
    with _s3(bucket) as s3:
        ingestor.ingest_objects(s3)
    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="kb/plan.md", Body=b"# Plan\n\nsecond text")
    client.put_object(Bucket=bucket, Key="kb/memo.md", Body=b"# Memo\n\nsecond memo")
    client.put_object(
        Bucket=bucket, Key="kb/plan.md.labels.yaml", Body=b"classification: restricted\n"
    )
    client.put_object(
        Bucket=bucket, Key="kb/memo.md.labels.yaml", Body=b"classification: confidential\n"
    )
    with _s3(bucket) as s3:
        listed = s3.discover

        def discover_then_change() -> Any:
            found = listed()
            client.put_object(Bucket=bucket, Key="kb/plan.md", Body=b"# Plan\n\nthird text")
            client.delete_object(Bucket=bucket, Key="kb/memo.md")
            return found

        s3.discover = discover_then_change
        report = ingestor.ingest_objects(s3)
    assert set(report.relabeled) == {"plan.md", "memo.md"}, report
    reasons = {f.source_uri.rsplit("/", 1)[-1]: f.reason for f in report.failed}
    assert "download failed" in reasons["plan.md"] and "PreconditionFailed" in reasons["plan.md"]
    assert "download failed" in reasons["memo.md"] and "NoSuchKey" in reasons["memo.md"]
    assert _indexed(settings)["plan.md"][0] == "restricted"
    assert _indexed(settings)["memo.md"][0] == "confidential"

    with _s3(bucket) as s3:
        report = ingestor.ingest_objects(s3)
    assert report.deleted == ("memo.md",) and report.updated == ("plan.md",)


# --- the Airflow planner ------------------------------------------------------------------
def _labelled_files(folder: Path) -> dict[str, bytes]:
    """A Markdown note, a DOCX and a PDF carrying mapped Purview labels."""
    docx = write_docx(folder / "budget.docx", "Budget. The zebra budget grows by four percent.")
    add_label_parts(docx, custom=msip_properties(CONFIDENTIAL))
    pdf = write_pdf(
        folder / "merger.pdf",
        "The okapi merger closes in June.",
        info=msip_properties(HIGHLY),
    )
    return {
        "budget.docx": docx.read_bytes(),
        "merger.pdf": pdf.read_bytes(),
        "memo.md": MEMO.encode(),
    }


def _refresh(settings: Any, source: SourceConfig, run: str, embedder: Any) -> tuple[Any, Any]:
    snapshot = discover(settings, source, run)
    summary = plan(settings, source, Path(snapshot.path))
    for batch in summary.batch_paths:
        process_batch(settings, source, Path(batch), embedder)
    return summary, finalize(settings, source, Path(summary.path), embedder)


def _check_plan_agrees(settings: Any, source: SourceConfig, embedder: Any, relabel: Any) -> None:
    first, report = _refresh(settings, source, "r1", embedder)
    assert set(first.new) == {"budget.docx", "merger.pdf", "memo.md"}
    indexed = _indexed(settings)
    assert indexed["budget.docx"] == ("confidential", ("finance",))
    assert indexed["merger.pdf"] == ("restricted", ("legal",))

    second, report = _refresh(settings, source, "r2", embedder)
    assert (second.new, second.changed, second.relabeled, second.deleted) == ((), (), (), ())
    assert second.unchanged == 3 and not second.batch_paths
    assert set(report.unchanged) == {"budget.docx", "merger.pdf", "memo.md"}

    relabel()  # a sidecar raises the DOCX: plan and pipeline both call it a relabel
    third, report = _refresh(settings, source, "r3", embedder)
    assert third.relabeled == ("budget.docx",) and third.unchanged == 2
    assert report.relabeled == ("budget.docx",)
    assert _indexed(settings)["budget.docx"] == ("restricted", ("finance",))


def test_plan_sees_purview_labelled_files_unchanged_in_a_folder(
    tmp_path: Path, make_settings: Any, embedder: Any, monkeypatch: Any
) -> None:
    forbid_label_reads_here(monkeypatch)  # parse workers read them, in every task
    settings = make_settings()
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    _labelled_files(folder)
    (folder / "memo.md").write_text(MEMO, encoding="utf-8")
    source = SourceConfig(name="docs", path=folder, index="idx", batch_size=2)

    def relabel() -> None:
        sidecar = folder / "budget.docx.labels.yaml"
        sidecar.write_text("classification: restricted\n", encoding="utf-8")

    _check_plan_agrees(settings, source, embedder, relabel)


def test_plan_sees_purview_labelled_objects_unchanged(
    s3_env: Any, tmp_path: Path, make_settings: Any, embedder: Any, monkeypatch: Any
) -> None:
    forbid_label_reads_here(monkeypatch)  # parse workers read them, in every task
    name = f"pln-{uuid.uuid4().hex[:10]}"
    client = s3_env.client()
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="kb/citewell.labels.yaml", Body=LABELS.encode())
    for relative, body in _labelled_files(tmp_path).items():
        client.put_object(Bucket=name, Key=f"kb/{relative}", Body=body)
    source = SourceConfig(name="kb", type="s3", bucket=name, prefix="kb", index="idx", batch_size=2)

    def relabel() -> None:
        client.put_object(
            Bucket=name, Key="kb/budget.docx.labels.yaml", Body=b"classification: restricted\n"
        )

    _check_plan_agrees(make_settings(), source, embedder, relabel)
