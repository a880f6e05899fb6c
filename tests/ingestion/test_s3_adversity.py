"""What bad luck and adversaries do to an S3 refresh, against a real S3 API server on loopback
(moto server mode; a fault-injecting proxy in front of it where the store itself must fail):
a listing that fails halfway through its pages, objects replaced with the same size, sidecars
that cannot be read or are misspelt, a nested labels file, and credentials kept out of logs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from citewell.core.errors import LabelError, SourceUnavailableError
from citewell.ingestion.models import SourceItem
from citewell.ingestion.pipeline import Ingestor, object_content_hash
from citewell.ingestion.sources import S3Source
from citewell.retrieval.index import IndexLayout, open_version
from tests.ingestion.mip_files import (
    CONFIDENTIAL,
    POLICY_YAML,
    PUBLIC,
    add_label_parts,
    forbid_label_reads_here,
    msip_properties,
    write_docx,
    write_pdf,
)
from tests.s3_server import ACCESS_KEY, SECRET_KEY, bucket_with, running_fault_proxy, s3_source

LABELS = b"default: {classification: internal, groups: [everyone]}\n"
NOTES = {
    f"notes/n{i}.md": f"# Note {i}\n\nThe heron count on day {i} was {i * 3}.\n" for i in range(5)
}


@pytest.fixture
def bucket(s3_env: Any) -> str:
    notes = {f"kb/{key}": text for key, text in NOTES.items()}
    return bucket_with(s3_env, {"kb/citewell.labels.yaml": LABELS, **notes}, "adv")


def _s3(bucket: str, **kwargs: Any) -> S3Source:
    kb = {"max_file_bytes": 100_000, "name": "kb", "default_groups": frozenset({"everyone"})}
    return s3_source(bucket, "kb", **{**kb, **kwargs})


def _indexed(settings: Any) -> dict[str, Any]:
    opened = open_version(settings)
    try:
        return {d.relative_path: d for d in opened.manifest.iter_documents()}
    finally:
        opened.close()


def test_object_content_hash_without_an_etag_follows_the_modification_time() -> None:
    """A store that lists no ETag: size alone would call a same-size rewrite unchanged."""
    item = SourceItem(
        source="kb",
        source_uri="s3://b/kb/a.md",
        relative_path="a.md",
        path=Path("a.md"),
        size=10,
        modified_at=datetime(2025, 1, 1, tzinfo=UTC),
        doc_type="md",
        etag=None,
    )
    later = item.model_copy(update={"modified_at": datetime(2025, 1, 2, tzinfo=UTC)})
    assert object_content_hash(item) != object_content_hash(later)
    tagged = item.model_copy(update={"etag": "abc"})
    # With an ETag, the listing's ETag and size decide (a copy with a new date is unchanged).
    assert object_content_hash(tagged) == object_content_hash(
        tagged.model_copy(update={"modified_at": datetime(2025, 1, 2, tzinfo=UTC)})
    )


@pytest.mark.slow
def test_a_listing_failing_halfway_through_its_pages_withdraws_nothing(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    with _s3(bucket) as s3:
        ingestor.ingest_objects(s3)
    layout = IndexLayout(settings, None)
    version = layout.current_version()
    before = _indexed(settings)
    assert set(before) == set(NOTES)

    # The first page answers; every request for a later page fails (retried, then given up).
    def second_page(method: str, path: str) -> bool:
        return method == "GET" and "list-type=2" in path and "continuation-token" in path

    with (
        running_fault_proxy(s3_env.endpoint_url, second_page) as proxy,
        _s3(bucket, endpoint_url=proxy.endpoint_url, page_size=2) as s3,
        pytest.raises(SourceUnavailableError, match="InternalError"),
    ):
        ingestor.ingest_objects(s3)
    assert proxy.failed, "the fault was never injected"
    assert layout.current_version() == version
    assert set(_indexed(settings)) == set(before)


@pytest.mark.slow
def test_same_size_rewrite_is_a_change(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    with _s3(bucket) as s3:
        ingestor.ingest_objects(s3)
    old = NOTES["notes/n1.md"]
    new = old.replace("heron", "egret")
    assert len(new) == len(old)
    s3_env.client().put_object(Bucket=bucket, Key="kb/notes/n1.md", Body=new.encode())
    with _s3(bucket) as s3:
        report = ingestor.ingest_objects(s3)
    assert report.updated == ("notes/n1.md",) and len(report.unchanged) == 4


@pytest.mark.slow
def test_an_unreadable_sidecar_withdraws_only_its_document(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    """A sidecar too large to be a sidecar, and one deleted between the listing and its read:
    each document's labels cannot be determined (withdrawn until fixed, as in folders); every
    other document refreshes."""
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    with _s3(bucket) as s3:
        ingestor.ingest_objects(s3)
    client = s3_env.client()
    client.put_object(
        Bucket=bucket,
        Key="kb/notes/n0.md.labels.yaml",
        Body=b"classification: confidential\n" + b"#" * (1024 * 1024 + 10),
    )
    client.put_object(
        Bucket=bucket, Key="kb/notes/n1.md.labels.yaml", Body=b"classification: confidential\n"
    )
    client.put_object(Bucket=bucket, Key="kb/notes/n2.md", Body=b"# Note 2\n\nchanged text")
    with _s3(bucket) as s3:
        listed = s3._list

        def list_then_delete() -> Any:
            found = listed()
            client.delete_object(Bucket=bucket, Key="kb/notes/n1.md.labels.yaml")
            return found

        s3._list = list_then_delete
        report = ingestor.ingest_objects(s3)
    assert set(report.withdrawn) == {"notes/n0.md", "notes/n1.md"}, report
    reasons = {f.source_uri.rsplit("/kb/", 1)[-1]: f.reason for f in report.failed}
    assert "too large" in reasons["notes/n0.md"]
    assert (
        "NoSuchKey" in reasons["notes/n1.md"] and "cannot be determined" in reasons["notes/n1.md"]
    )
    assert report.updated == ("notes/n2.md",)
    assert set(_indexed(settings)) == {"notes/n2.md", "notes/n3.md", "notes/n4.md"}

    # Fixed (a readable sidecar; the deleted one stays deleted): back, at the sidecar's level.
    client.put_object(
        Bucket=bucket, Key="kb/notes/n0.md.labels.yaml", Body=b"classification: confidential\n"
    )
    with _s3(bucket) as s3:
        report = ingestor.ingest_objects(s3)
    assert set(report.added) == {"notes/n0.md", "notes/n1.md"} and not report.failed
    docs = _indexed(settings)
    assert docs["notes/n0.md"].classification == "confidential"
    assert docs["notes/n1.md"].classification == "internal"


@pytest.mark.slow
def test_a_misspelt_sidecar_never_lowers_and_is_not_a_document(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    client = s3_env.client()
    client.put_object(
        Bucket=bucket, Key="kb/notes/n3.md.labels.yml", Body=b"classification: restricted\n"
    )
    client.put_object(
        Bucket=bucket, Key="kb/notes/n4.md.LABELS.YAML", Body=b"classification: restricted\n"
    )
    with _s3(bucket) as s3:
        report = ingestor.ingest_objects(s3)
    reasons = {f.source_uri.rsplit("/kb/", 1)[-1]: f.reason for f in report.failed}
    assert "must be named n3.md.labels.yaml" in reasons["notes/n3.md"]
    assert "must be named n4.md.labels.yaml" in reasons["notes/n4.md"]
    assert set(_indexed(settings)) == {"notes/n0.md", "notes/n1.md", "notes/n2.md"}


@pytest.mark.slow
def test_a_nested_labels_file_stops_the_run(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any
) -> None:
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    with _s3(bucket) as s3:
        ingestor.ingest_objects(s3)
    version = IndexLayout(settings, None).current_version()
    s3_env.client().put_object(
        Bucket=bucket,
        Key="kb/notes/citewell.labels.yaml",
        Body=b"default: {classification: public, groups: [everyone]}\n",
    )
    with _s3(bucket) as s3, pytest.raises(LabelError, match="notes/\\*\\*"):
        ingestor.ingest_objects(s3)
    assert IndexLayout(settings, None).current_version() == version


@pytest.mark.slow
def test_an_object_tag_that_refuses_is_not_relaxed_by_a_purview_label(
    s3_env: Any, make_settings: Any, embedder: Any, tmp_path: Path
) -> None:
    """A trusted tag naming an unknown level makes its object visible to nobody; the mapped
    (public) Purview label the file also carries must not replace that refusal."""
    doc = add_label_parts(
        write_docx(tmp_path / "plan.docx", "Quokka plan. The quokka budget doubles."),
        custom=msip_properties(PUBLIC),
    )
    labels = LABELS + POLICY_YAML.encode()
    objects = {"kb/citewell.labels.yaml": labels, "kb/plan.docx": doc.read_bytes()}
    bucket = bucket_with(s3_env, objects, "adv")
    s3_env.client().put_object_tagging(
        Bucket=bucket,
        Key="kb/plan.docx",
        Tagging={"TagSet": [{"Key": "classification", "Value": "ultra"}]},
    )
    settings = make_settings()
    with _s3(bucket, object_labels=frozenset({"tags"})) as s3:
        report = Ingestor(settings, embedder=embedder).ingest_objects(s3)
    entry = _indexed(settings)["plan.docx"]
    assert (entry.classification, entry.groups, entry.labelled) == ("restricted", (), False)
    assert report.unlabelled == ("plan.docx",)


@pytest.mark.slow
def test_credentials_never_reach_logs_or_reports(
    bucket: str,
    s3_env: Any,
    make_settings: Any,
    embedder: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every log record at DEBUG, botocore's own included, through a run with a failing
    listing, a failing download and a refused object: never the secret key; the access key id
    (which botocore's DEBUG request dumps name in signatures) never in Citewell's records."""
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder)
    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="kb/big.md", Body=b"x" * 2000)
    caplog.set_level(logging.DEBUG)
    with _s3(bucket, max_file_bytes=1000) as s3:
        listed = s3.discover

        def discover_then_change() -> Any:
            found = listed()
            client.put_object(Bucket=bucket, Key="kb/notes/n0.md", Body=b"# changed after")
            return found

        s3.discover = discover_then_change
        report = ingestor.ingest_objects(s3)
    with _s3(f"{bucket}-missing", max_attempts=1) as s3, pytest.raises(SourceUnavailableError):
        ingestor.ingest_objects(s3)
    assert report.failed
    texts = [record.getMessage() for record in caplog.records]
    texts += [str(record.__dict__) for record in caplog.records]
    texts += [f.reason for f in report.failed]
    assert caplog.records and not any(SECRET_KEY in text for text in texts)
    ours = [r for r in caplog.records if r.name.startswith("citewell")]
    assert ours and not any(ACCESS_KEY in str(r.__dict__) for r in ours)


@pytest.mark.slow
def test_an_objects_labels_are_read_by_the_parse_workers_under_their_limits(
    s3_env: Any, make_settings: Any, embedder: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """An object's Purview labels are read where it is parsed, under the time limit, not in the
    run's own process: a catalog array of 1.9M numbers keeps pypdf busy for seconds."""
    budget = add_label_parts(
        write_docx(tmp_path / "budget.docx", "Budget. The zebra budget grows by four percent."),
        custom=msip_properties(CONFIDENTIAL),
    )
    hostile = write_pdf(tmp_path / "hostile.pdf", "Quay cranes.", catalog_array=1_900_000)
    objects: dict[str, str | bytes] = {
        "kb/citewell.labels.yaml": LABELS + POLICY_YAML.encode(),
        "kb/budget.docx": budget.read_bytes(),
        "kb/hostile.pdf": hostile.read_bytes(),
        "kb/notes/n0.md": NOTES["notes/n0.md"],
    }
    bucket = bucket_with(s3_env, objects, "adv")
    settings = make_settings(parse_time_limit_s=2)
    forbid_label_reads_here(monkeypatch)
    with _s3(bucket, max_file_bytes=64 * 2**20) as s3:
        report = Ingestor(settings, embedder=embedder).ingest_objects(s3)
    reasons = {f.relative_path: f.reason for f in report.failed}
    assert reasons == {"hostile.pdf": "time limit exceeded (2 s)"}, reasons
    indexed = _indexed(settings)
    assert (indexed["budget.docx"].classification, indexed["budget.docx"].groups) == (
        "confidential",
        ("finance",),
    )
    assert set(indexed) == {"budget.docx", "notes/n0.md"}


@pytest.mark.slow
def test_an_object_that_cannot_carry_labels_is_never_downloaded_for_them(
    bucket: str, s3_env: Any, make_settings: Any, embedder: Any, tmp_path: Path
) -> None:
    """Parsed from the cache with no label reading cached (Airflow's publish on another
    machine): Markdown carries no label metadata, so a failing download must not refuse it."""
    settings = make_settings()
    ingestor = Ingestor(settings, embedder=embedder, parse_cache_dir=tmp_path / "parsed")
    with _s3(bucket) as s3:
        ingestor.ingest_objects(s3)
    for reading in (tmp_path / "parsed").glob("*.mip*.json"):
        reading.unlink()

    def object_body(method: str, path: str) -> bool:
        return method == "GET" and path.split("?")[0].endswith(".md")

    with (
        running_fault_proxy(s3_env.endpoint_url, object_body) as proxy,
        _s3(bucket, endpoint_url=proxy.endpoint_url) as s3,
    ):
        report = ingestor.ingest_objects(s3, fresh=True)
    assert not report.label_refusals and not report.failed, report
    assert proxy.failed == [], "an object was downloaded to read labels it cannot carry"
    assert len(report.added) == len(NOTES) and not report.unlabelled


@pytest.mark.slow
def test_a_banner_only_the_source_shows_raises_an_object_as_it_raises_a_file(
    s3_env: Any, make_settings: Any, embedder: Any, tmp_path: Path
) -> None:
    """Parsers drop an HTML page's <footer> and join a Markdown paragraph's lines, so banners
    there are read from the source as written. Objects were marked from the parsed text alone:
    a page the folder labels confidential was public from S3, for a fresh parse and for a parse
    taken from the cache (Airflow's publish), where no copy of the object is at hand."""
    prose = "The heron count rose again this week along the northern shore of the lake."
    page = f"<html><body><main><p>{prose}</p></main><footer><p>Confidential</p></footer></body>"
    note = f"# Heron notes\n\n{prose}\nStrictly Confidential\n{prose}\n"
    objects: dict[str, str | bytes] = {
        "kb/citewell.labels.yaml": b"default: {classification: public, groups: [everyone]}\n",
        "kb/page.html": page,
        "kb/note.md": note,
    }
    bucket = bucket_with(s3_env, objects, "adv")
    expected = {"page.html": "confidential", "note.md": "restricted"}
    folder = tmp_path / "kb"
    folder.mkdir()
    for key, body in objects.items():
        (tmp_path / key).write_bytes(body.encode() if isinstance(body, str) else body)
    local = make_settings(data_dir=tmp_path / "local")
    Ingestor(local, embedder=embedder).ingest_folder(folder, source_name="kb")
    assert {p: d.classification for p, d in _indexed(local).items()} == expected
    settings = make_settings()
    cache = tmp_path / "parsed"
    with _s3(bucket) as s3:
        for fresh in (False, True):  # parsed in the workers, then taken from the cache
            report = Ingestor(settings, embedder=embedder, parse_cache_dir=cache).ingest_objects(
                s3, fresh=fresh
            )
            assert not report.failed, report.failed
            assert {p: d.classification for p, d in _indexed(settings).items()} == expected
