"""The S3 source against a real S3 API server on loopback (moto server mode, tests/s3_server.py):
listing with pagination, refusals, labels from the bucket, object tags/metadata, downloads."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from citewell.core.errors import (
    ConfigurationError,
    InputRejectedError,
    LabelError,
    SourceUnavailableError,
)
from citewell.core.models import AccessLabel, ClassificationScheme
from citewell.ingestion.sources import S3Location, S3Source, Source
from tests.s3_server import s3_source

SCHEME = ClassificationScheme()
LABELS = b"""default: {classification: internal, groups: [everyone]}
rules:
  - {match: "finance/**", classification: confidential, groups: [finance]}
"""


def new_bucket(server) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name)
    return name


def put(server, bucket, key, body, **extra):
    server.client().put_object(Bucket=bucket, Key=key, Body=body, **extra)


def source(bucket: str, prefix: str = "", **kwargs: Any) -> S3Source:
    return s3_source(bucket, prefix, scheme=SCHEME, **kwargs)


def test_location_parsing():
    assert S3Location.parse("s3://docs/team/handbook") == S3Location(
        bucket="docs", prefix="team/handbook"
    )
    assert S3Location.parse("s3://docs/team/").key_prefix == "team/"
    assert S3Location.parse("s3://docs").key_prefix == ""
    for bad in ("docs/team", "s3:/docs", "s3://", "http://x/y"):
        with pytest.raises(ConfigurationError):
            S3Location.parse(bad)


def test_lists_every_page_and_applies_folder_rules(s3_env):
    bucket = new_bucket(s3_env)
    for i in range(7):
        put(s3_env, bucket, f"kb/doc{i}.md", f"# Doc {i}\n\ntext {i}".encode())
    put(s3_env, bucket, "kb/citewell.labels.yaml", LABELS)
    put(s3_env, bucket, "kb/finance/q3.md", b"# Q3\n\nnumbers")
    put(s3_env, bucket, "kb/finance/q3.md.labels.yaml", b"classification: restricted\n")
    put(s3_env, bucket, "kb/.hidden/secret.md", b"hidden")
    put(s3_env, bucket, "kb/sub/", b"")  # a folder placeholder
    put(s3_env, bucket, "kb/big.txt", b"x" * 20_000)
    put(s3_env, bucket, "kb/a//b.md", b"double slash")
    put(s3_env, bucket, "kb/x/./escape.md.labels.yaml", b"classification: public\n")
    put(s3_env, bucket, "kbx/other.md", b"not under the prefix kb/")
    with source(bucket, "kb", page_size=2, name="kb") as s3:
        assert isinstance(s3, Source)
        found = s3.discover()
        paths = [item.relative_path for item in found.items]
        assert paths == ["doc0.md", *[f"doc{i}.md" for i in range(1, 7)], "finance/q3.md"]
        assert all(
            item.etag and item.source_uri.startswith(f"s3://{bucket}/kb/") for item in found.items
        )
        reasons = {f.source_uri.rsplit("/kb/", 1)[-1]: f.reason for f in found.rejected}
        assert "too large" in reasons["big.txt"]
        assert reasons["a//b.md"] == "unsafe object key"
        assert reasons.get("x/./escape.md.labels.yaml", "unsafe object key") == "unsafe object key"
        assert set(reasons) <= {"big.txt", "a//b.md", "x/./escape.md.labels.yaml"}
        q3 = found.items[-1]
        label = s3.labels_for(q3, None)
        assert label.label == AccessLabel(
            classification="restricted", groups=frozenset({"finance"})
        )
        assert s3.labels_for(found.items[0], None).label.classification == "internal"
        assert s3.read_bytes(q3) == b"# Q3\n\nnumbers"


def test_endpoint_comes_from_aws_endpoint_url(s3_env, monkeypatch):
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "a.md", b"hello")
    with source(bucket) as s3:  # no endpoint_url argument: AWS_ENDPOINT_URL decides
        assert [i.relative_path for i in s3.discover().items] == ["a.md"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    with source(bucket, max_attempts=1, timeout_s=1) as s3, pytest.raises(SourceUnavailableError):
        s3.discover()


def _closed_port() -> int:
    from tests.s3_server import free_port

    return free_port()


def test_listing_failures_raise_and_name_no_secret(s3_env, monkeypatch):
    with source("no-such-bucket-citewell") as s3, pytest.raises(SourceUnavailableError) as info:
        s3.discover()
    assert "NoSuchBucket" in str(info.value)
    bucket = new_bucket(s3_env)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with source(bucket) as s3, pytest.raises(SourceUnavailableError) as info:
        s3.discover()
    assert "NoCredentialsError" in str(info.value)


def test_download_refuses_a_replaced_or_grown_object(s3_env, tmp_path):
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "a.md", b"first version")
    with source(bucket) as s3:
        item = s3.discover().items[0]
        put(s3_env, bucket, "a.md", b"second version, written after the listing")
        with pytest.raises(InputRejectedError, match="download failed"):
            s3.download(item, tmp_path / "a")
    with source(bucket, max_file_bytes=50) as s3:
        item = s3.discover().items[0]
        put(s3_env, bucket, "a.md", b"y" * 500)  # grew past the limit after listing
        grown = item.model_copy(update={"etag": None})
        with pytest.raises(InputRejectedError, match="too large"):
            s3.download(grown, tmp_path / "b")


def test_object_tags_and_metadata_only_when_trusted(s3_env):
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "citewell.labels.yaml", LABELS)
    put(
        s3_env,
        bucket,
        "plan.md",
        b"# Plan",
        Tagging="classification=restricted&groups=board legal",
        Metadata={"classification": "confidential", "groups": "board"},
    )
    put(s3_env, bucket, "lower.md", b"# Lower", Tagging="classification=public")
    put(s3_env, bucket, "bad.md", b"# Bad", Tagging="classification=ultra")
    with source(bucket) as s3:
        items = {i.relative_path: i for i in s3.discover().items}
        untrusted = s3.labels_for(items["plan.md"], None)
        assert untrusted.label == AccessLabel(
            classification="internal", groups=frozenset({"everyone"})
        )
    everyone = frozenset({"everyone"})
    with source(bucket, object_labels=frozenset({"tags"}), default_groups=everyone) as s3:
        items = {i.relative_path: i for i in s3.discover().items}
        tagged = s3.labels_for(items["plan.md"], None)
        assert tagged.label == AccessLabel(
            classification="restricted", groups=frozenset({"board", "legal"})
        )
        # A tag never lowers what the rules set.
        assert s3.labels_for(items["lower.md"], None).label.classification == "internal"
        refused = s3.labels_for(items["bad.md"], None)
        assert not refused.labelled and refused.label.groups == frozenset()
    with source(
        bucket, object_labels=frozenset({"tags", "metadata"}), default_groups=everyone
    ) as s3:
        items = {i.relative_path: i for i in s3.discover().items}
        both = s3.labels_for(items["plan.md"], None)
        assert both.label == AccessLabel(classification="restricted", groups=frozenset({"board"}))


def test_bad_labels_file_names_the_object(s3_env):
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "docs/citewell.labels.yaml", b"default: {classification: ultra}\n")
    put(s3_env, bucket, "docs/a.md", b"a")
    with source(bucket, "docs") as s3, pytest.raises(LabelError) as info:
        s3.discover()
    assert f"s3://{bucket}/docs/citewell.labels.yaml:1" in str(info.value)
    assert "citewell-s3-labels" not in str(info.value)


def test_mirror_folder_is_removed_on_close(s3_env):
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "a.md.labels.yaml", b"classification: public\n")
    s3 = source(bucket)
    s3.discover()
    mirror = Path(s3._mirror)
    assert (mirror / "a.md.labels.yaml").exists()
    s3.close()
    assert not mirror.exists()


def test_item_for_matches_the_listing(s3_env):
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "kb/team/a.md", b"# A\n\nalpha")
    put(s3_env, bucket, "kb/big.md", b"x" * 20_000)
    with source(bucket, "kb") as s3:
        listed = s3.discover().items[0]
        assert s3.item_for("team/a.md").model_dump(exclude={"modified_at"}) == listed.model_dump(
            exclude={"modified_at"}
        )
        for bad, reason in (
            ("big.md", "too large"),
            ("gone.md", "cannot read"),
            ("a//b", "unsafe"),
        ):
            with pytest.raises(InputRejectedError, match=reason):
                s3.item_for(bad)


def test_keys_no_local_file_can_stand_for_fail_only_their_own_labels(s3_env):
    """Keys may be longer than a file name (255 bytes) and a key may also be a "folder" of other
    keys: a sidecar the labels mirror cannot hold withdraws only its document (labels cannot be
    determined), a long-named document without one takes the rules, and the listing goes on."""
    bucket = new_bucket(s3_env)
    plain, labelled = "p" * 250 + ".md", "s" * 250 + ".md"
    put(s3_env, bucket, "citewell.labels.yaml", LABELS)
    put(s3_env, bucket, plain, b"# Plain")
    put(s3_env, bucket, labelled, b"# Labelled")
    put(s3_env, bucket, f"{labelled}.labels.yaml", b"classification: restricted\n")
    put(s3_env, bucket, "a.md", b"# A")
    put(s3_env, bucket, "a.md.labels.yaml", b"classification: restricted\n")
    put(s3_env, bucket, "a.md.labels.yaml/b.md", b"# B")
    put(s3_env, bucket, "a.md.labels.yaml/b.md.labels.yaml", b"classification: restricted\n")
    with source(bucket) as s3:
        items = {i.relative_path: i for i in s3.discover().items}
        assert set(items) == {plain, labelled, "a.md", "a.md.labels.yaml/b.md"}
        assert s3.labels_for(items[plain], None).label == AccessLabel(
            classification="internal", groups=frozenset({"everyone"})
        )
        assert s3.labels_for(items["a.md"], None).label.classification == "restricted"
        for unmirrored in (labelled, "a.md.labels.yaml/b.md"):
            with pytest.raises(LabelError, match=r"labels sidecar unreadable: cannot read"):
                s3.labels_for(items[unmirrored], None)


@pytest.mark.parametrize("key", ["kb/board/citewell.labels.yml", "kb/Citewell.Labels.yaml"])
def test_a_labels_file_spelt_another_way_stops_discovery(s3_env, key):
    """As in folders: another spelling of the labels file would be silently ignored and the
    documents it meant to label would take the root's (lower) rules."""
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "kb/citewell.labels.yaml", LABELS)
    put(s3_env, bucket, "kb/board/minutes.md", b"# Minutes")
    put(s3_env, bucket, key, b"default: {classification: restricted, groups: [board]}\n")
    with source(bucket, "kb") as s3, pytest.raises(LabelError, match=re.escape(key)):
        s3.discover()


def test_tags_that_differ_only_in_case_and_disagree_refuse_the_object(s3_env):
    """S3 tag keys are case-sensitive: ``classification=restricted`` and
    ``Classification=public`` are two tags. Whichever came last used to decide; a contradiction
    about who may read the object now makes it visible to nobody, reported."""
    bucket = new_bucket(s3_env)
    put(
        s3_env,
        bucket,
        "plan.md",
        b"# Plan",
        Tagging="classification=restricted&groups=board&Classification=public&Groups=everyone",
    )
    put(
        s3_env,
        bucket,
        "same.md",
        b"# Same",
        Tagging="classification=restricted&CLASSIFICATION=restricted&groups=board",
    )
    put(s3_env, bucket, "ok.md", b"# Ok", Tagging="Classification=confidential&GROUPS=board")
    with source(bucket, object_labels=frozenset({"tags"})) as s3:
        items = {i.relative_path: i for i in s3.discover().items}
        refused = s3.labels_for(items["plan.md"], None)
        assert (refused.labelled, refused.label.groups) == (False, frozenset()), refused
        assert refused.refused and "classification" in refused.origin
        assert s3.labels_for(items["ok.md"], None).label == AccessLabel(
            classification="confidential", groups=frozenset({"board"})
        )
        same = s3.labels_for(items["same.md"], None)
        assert same.labelled and same.label == AccessLabel(
            classification="restricted", groups=frozenset({"board"})
        )


def test_a_rule_labels_an_object_whose_key_is_in_the_other_unicode_form(s3_env):
    """Keys uploaded from macOS are often NFD; the labels file is typed NFC."""
    import unicodedata

    bucket = new_bucket(s3_env)
    put(
        s3_env,
        bucket,
        "citewell.labels.yaml",
        "default: {classification: internal, groups: [everyone]}\n"
        'rules:\n  - {match: "führung/**", classification: restricted, groups: [board]}\n'.encode(),
    )
    put(s3_env, bucket, unicodedata.normalize("NFD", "führung/plan.md"), b"# Plan")
    with source(bucket) as s3:
        (item,) = s3.discover().items
        assert s3.labels_for(item, None).label == AccessLabel(
            classification="restricted", groups=frozenset({"board"})
        )


@pytest.mark.parametrize("trusted", [{"tags"}, {"metadata"}, {"tags", "metadata"}])
def test_object_labels_of_a_replacement_never_label_the_listed_object(s3_env, trusted):
    """Replaced between the listing and the label read: the new object's tags or metadata say
    nothing about the listed content (which an unchanged index entry stands for)."""
    bucket = new_bucket(s3_env)
    labels = "classification=restricted&groups=board"
    put(
        s3_env,
        bucket,
        "plan.md",
        b"# Plan\n\nthe listed text",
        Tagging=labels,
        Metadata={"classification": "restricted", "groups": "board"},
    )
    with source(bucket, object_labels=frozenset(trusted)) as s3:
        (item,) = s3.discover().items
        put(
            s3_env,
            bucket,
            "plan.md",
            b"# Plan\n\nnew text",
            Tagging="classification=public&groups=everyone",
            Metadata={"classification": "public", "groups": "everyone"},
        )
        with pytest.raises(InputRejectedError, match="changed since"):
            s3.labels_for(item, None)


def test_an_unreadable_sidecar_named_in_another_unicode_form_refuses_its_document(s3_env):
    """A readable sidecar named in the other Unicode form refuses its document (labels.py); an
    unreadable one (too large) must not leave it to the labels file's default instead."""
    import unicodedata

    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "citewell.labels.yaml", LABELS)
    put(s3_env, bucket, unicodedata.normalize("NFD", "führung.md"), b"# Plan")
    sidecar = unicodedata.normalize("NFC", "führung.md") + ".labels.yaml"
    put(s3_env, bucket, sidecar, b"#" * (1024 * 1024 + 1))
    with source(bucket) as s3:
        (item,) = s3.discover().items
        with pytest.raises(LabelError, match="unreadable"):
            s3.labels_for(item, None)


def test_objects_whose_keys_differ_only_in_case_each_take_their_own_sidecar(s3_env):
    """As in folders: "report.md.labels.yaml" next to a listed "report.md" is that object's
    sidecar, not a misspelt one for "Report.md" (which was refused, visible to nobody)."""
    bucket = new_bucket(s3_env)
    put(s3_env, bucket, "citewell.labels.yaml", LABELS)
    put(s3_env, bucket, "Report.md", b"# Report")
    put(s3_env, bucket, "report.md", b"# report")
    put(s3_env, bucket, "report.md.labels.yaml", b"classification: restricted\ngroups: [board]\n")
    put(s3_env, bucket, "Lone.md", b"# Lone")
    put(s3_env, bucket, "lone.md.labels.yaml", b"classification: restricted\ngroups: [board]\n")
    with source(bucket) as s3:
        items = {i.relative_path: i for i in s3.discover().items}
        assert s3.labels_for(items["report.md"], None).label == AccessLabel(
            classification="restricted", groups=frozenset({"board"})
        )
        assert s3.labels_for(items["Report.md"], None).label == AccessLabel(
            classification="internal", groups=frozenset({"everyone"})
        )
        # No "lone.md" listed: its sidecar is a misspelt one of "Lone.md", named by its URI.
        with pytest.raises(LabelError) as refused:
            s3.labels_for(items["Lone.md"], None)
        assert f"s3://{bucket}/lone.md.labels.yaml" in str(refused.value)
        assert "citewell-s3-labels" not in str(refused.value)
