"""Incremental refresh from a real S3 API server on loopback (moto server mode): the tricky sample
documents and a labelled tree, searched as several principals, then changed, deleted, relabelled
and tampered with; listing and download failures; the empty-listing guard."""

from __future__ import annotations

import uuid

import pytest

from citewell.core.errors import EmptySourceError, SourceUnavailableError
from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.ingestion.pipeline import Ingestor, document_id
from citewell.ingestion.sources import S3Location, S3Source
from citewell.retrieval.index import IndexLayout, open_version
from citewell.retrieval.service import ServingIndex
from tests.ingestion.mip_files import (
    CONFIDENTIAL,
    POLICY_YAML,
    UNMAPPED,
    add_label_parts,
    msip_properties,
    remove_label_parts,
    write_docx,
)

pytestmark = pytest.mark.slow

SAMPLES = [
    "fake-memo.pdf",
    "docx-tables.docx",
    "family-day.eml",
    "password.pdf",  # encrypted: reported, skipped
    "empty.txt",  # nothing to index: reported
]
TREE = {
    "hr/leave.md": "# Parental leave\n\nParents receive sixteen weeks of paid quokka leave.\n",
    "eng/runbook.md": "# Runbook\n\nRestart the capybara service with the blue button.\n",
    "public/press.md": "# Press\n\nThe company opened an office with an ocelot mascot.\n",
}
LABELS = (
    "default: {classification: internal, groups: [everyone]}\n"
    "rules:\n"
    '  - {match: "hr/**", classification: confidential, groups: [hr]}\n'
    '  - {match: "eng/**", groups: [engineering]}\n' + POLICY_YAML
)
EVERYONE = Principal(name="eve", clearance="internal", groups=frozenset())
HR = Principal(name="hana", clearance="confidential", groups=frozenset({"hr"}))
ENG = Principal(name="eng", clearance="internal", groups=frozenset({"engineering"}))
FINANCE = Principal(name="fin", clearance="confidential", groups=frozenset({"finance"}))
AUDITOR = Principal(
    name="aud", clearance="restricted", groups=frozenset({"hr", "engineering", "finance", "legal"})
)
QUERY = "quokka capybara ocelot zebra memo family"


@pytest.fixture
def bucket(small_bucket, s3_env, shared_data):
    client = s3_env.client()
    for sample in SAMPLES:
        body = (shared_data / "sample_docs" / sample).read_bytes()
        client.put_object(Bucket=small_bucket, Key=f"kb/samples/{sample}", Body=body)
    return small_bucket


@pytest.fixture
def small_bucket(s3_env, tmp_path):
    name = f"kb-{uuid.uuid4().hex[:10]}"
    client = s3_env.client()
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="kb/citewell.labels.yaml", Body=LABELS.encode())
    for key, text in TREE.items():
        client.put_object(Bucket=name, Key=f"kb/{key}", Body=text.encode())
    budget = write_docx(tmp_path / "budget.docx", "Budget. The zebra budget grows by four percent.")
    add_label_parts(budget, custom=msip_properties(CONFIDENTIAL))
    client.put_object(Bucket=name, Key="kb/finance/budget.docx", Body=budget.read_bytes())
    secret = write_docx(tmp_path / "secret.docx", "Secret. The zebra merger is unannounced.")
    add_label_parts(secret, custom=msip_properties(UNMAPPED))
    client.put_object(Bucket=name, Key="kb/finance/secret.docx", Body=secret.read_bytes())
    return name


class Counting:
    """Counts GetObject requests the source's client sends (botocore event hooks)."""

    def __init__(self, s3: S3Source) -> None:
        self.keys: list[str] = []
        s3._client.meta.events.register("before-call.s3.GetObject", self._count)

    def _count(self, params, **kwargs) -> None:
        self.keys.append("kb/" + params["url_path"].split("/kb/", 1)[-1])

    def documents(self) -> list[str]:
        return [k for k in self.keys if not k.endswith(".yaml")]


def open_source(bucket: str, **kwargs) -> S3Source:
    from citewell.core.models import ClassificationScheme

    return S3Source(
        S3Location(bucket=bucket, prefix="kb"),
        scheme=ClassificationScheme(),
        max_file_bytes=10 * 1024 * 1024,
        name="kb",
        default_groups=frozenset({"everyone"}),
        max_attempts=2,
        timeout_s=5,
        **kwargs,
    )


def visible(settings, embedder, principal) -> set[str]:
    service = ServingIndex(settings, embedder=embedder)
    try:
        request = SearchRequest(query=QUERY, k=50, mode=SearchMode.DENSE)
        return {
            r.chunk.source_uri.split("/kb/", 1)[-1]
            for r in service.search(principal, request).results
        }
    finally:
        service.close()


def manifest(settings) -> dict:
    opened = open_version(settings)
    try:
        return {d.relative_path: d for d in opened.manifest.iter_documents()}
    finally:
        opened.close()


def test_s3_refresh_end_to_end(bucket, s3_env, make_settings, embedder, tmp_path):
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    with open_source(bucket) as s3:
        report = ingestor.ingest_objects(s3)
    failed = {f.source_uri.rsplit("/", 1)[-1] for f in report.failed}
    assert failed == {"password.pdf", "empty.txt"}, report.failed
    refused = {f.source_uri.rsplit("/", 1)[-1] for f in report.label_refusals}
    assert refused == {"secret.docx"}
    # The report names each document by its path under the prefix too (the CLI matches by it).
    assert [f.relative_path for f in report.label_refusals] == ["finance/secret.docx"]
    assert {f.relative_path for f in report.failed} == {"samples/password.pdf", "samples/empty.txt"}
    docs = manifest(settings)
    assert docs["hr/leave.md"].source_uri == f"s3://{bucket}/kb/hr/leave.md"
    # Identity: a pure function of the object's URI, the same on every machine.
    assert docs["hr/leave.md"].doc_id == document_id(f"s3://{bucket}/kb/hr/leave.md")
    assert (docs["finance/budget.docx"].classification, docs["finance/budget.docx"].groups) == (
        "confidential",
        ("finance",),
    )

    everyone = {
        "public/press.md",
        "samples/fake-memo.pdf",
        "samples/docx-tables.docx",
        "samples/family-day.eml",
    }
    assert visible(settings, embedder, EVERYONE) == everyone
    assert visible(settings, embedder, HR) == everyone | {"hr/leave.md"}
    assert visible(settings, embedder, ENG) == everyone | {"eng/runbook.md"}
    assert visible(settings, embedder, FINANCE) == everyone | {"finance/budget.docx"}
    assert "finance/secret.docx" not in visible(settings, embedder, AUDITOR)

    # No change: nothing downloaded (only the labels files are read, and the objects that failed
    # are tried again), parsed or embedded.
    version = IndexLayout(settings, None).current_version()
    with open_source(bucket) as s3:
        counter = Counting(s3)
        report = ingestor.ingest_objects(s3)
    assert sorted(counter.documents()) == ["kb/samples/empty.txt", "kb/samples/password.pdf"]
    assert report.embeddings_computed == 0 and report.chunks_written == 0
    assert not (report.added or report.updated or report.deleted or report.relabeled)
    assert IndexLayout(settings, None).current_version() == version

    # Change one object, delete one, relabel one by a sidecar, strip the Purview label from one.
    client = s3_env.client()
    client.put_object(
        Bucket=bucket,
        Key="kb/eng/runbook.md",
        Body=b"# Runbook\n\nRestart the capybara service with the red lever.\n",
    )
    client.delete_object(Bucket=bucket, Key="kb/public/press.md")
    client.put_object(
        Bucket=bucket,
        Key="kb/samples/fake-memo.pdf.labels.yaml",
        Body=b"classification: confidential\ngroups: [hr]\n",
    )
    budget = tmp_path / "budget2.docx"
    budget.write_bytes(
        client.get_object(Bucket=bucket, Key="kb/finance/budget.docx")["Body"].read()
    )
    remove_label_parts(budget)
    client.put_object(Bucket=bucket, Key="kb/finance/budget.docx", Body=budget.read_bytes())
    with open_source(bucket) as s3:
        counter = Counting(s3)
        report = ingestor.ingest_objects(s3)
    assert sorted(counter.documents()) == [
        "kb/eng/runbook.md",
        "kb/finance/budget.docx",
        "kb/samples/empty.txt",
        "kb/samples/password.pdf",
    ]
    assert set(report.updated) == {"eng/runbook.md", "finance/budget.docx"}
    assert report.deleted == ("public/press.md",)
    assert report.relabeled == ("samples/fake-memo.pdf",)
    docs = manifest(settings)
    assert docs["finance/budget.docx"].classification == "confidential"  # label removed: retained
    assert "samples/fake-memo.pdf" not in visible(settings, embedder, EVERYONE)
    assert "samples/fake-memo.pdf" in visible(settings, embedder, HR)
    assert "public/press.md" not in visible(settings, embedder, AUDITOR)
    assert "finance/budget.docx" not in visible(settings, embedder, EVERYONE)


def test_failures_never_withdraw(small_bucket, s3_env, make_settings, embedder):
    bucket = small_bucket
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    with open_source(bucket) as s3:
        ingestor.ingest_objects(s3)
    layout = IndexLayout(settings, None)
    version = layout.current_version()
    before = manifest(settings)

    # A download failing for one changed object (changed again after the listing) fails that
    # document only; its indexed version stays.
    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="kb/hr/leave.md", Body=b"# Leave\n\nsecond text")
    with open_source(bucket) as s3:
        listed = s3.discover

        def discover_then_change():
            found = listed()
            client.put_object(Bucket=bucket, Key="kb/hr/leave.md", Body=b"# Leave\n\nthird text")
            return found

        s3.discover = discover_then_change
        report = ingestor.ingest_objects(s3)
    reasons = {f.source_uri.rsplit("/kb/", 1)[-1]: f.reason for f in report.failed}
    assert "hr/leave.md" in reasons, report
    assert (
        "download failed" in reasons["hr/leave.md"]
        and "PreconditionFailed" in reasons["hr/leave.md"]
    )
    docs = manifest(settings)
    assert docs["hr/leave.md"].content_hash == before["hr/leave.md"].content_hash
    assert set(docs) == set(before)

    # A failed listing aborts before anything is written.
    version = layout.current_version()
    missing = S3Source(
        S3Location(bucket=f"{bucket}-gone", prefix="kb"),
        scheme=settings.scheme,
        max_file_bytes=settings.max_file_bytes,
        name="kb",
        max_attempts=1,
    )
    with missing, pytest.raises(SourceUnavailableError):
        ingestor.ingest_objects(missing)
    assert layout.current_version() == version

    # An empty listing of a source that had documents is refused unless allowed.
    for key in [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]:
        if not key.endswith("citewell.labels.yaml"):
            client.delete_object(Bucket=bucket, Key=key)
    with open_source(bucket) as s3, pytest.raises(EmptySourceError):
        ingestor.ingest_objects(s3)
    assert layout.current_version() == version
    assert set(manifest(settings)) == set(docs)
    with open_source(bucket) as s3:
        report = ingestor.ingest_objects(s3, allow_empty=True)
    assert set(report.deleted) == set(docs)
    assert manifest(settings) == {}
