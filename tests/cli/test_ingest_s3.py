"""``citewell ingest s3://bucket/prefix`` against a moto server: endpoint and credentials from the
standard AWS environment, the report, the empty-listing guard and its override."""

from __future__ import annotations

import json
import uuid

import pytest

from citewell.cli.main import main as cli_main
from tests.agent.fakes import HashingEmbedder


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.setattr("citewell.cli.common.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(
        "citewell.ingestion.pipeline.build_embedder", lambda settings: HashingEmbedder()
    )
    monkeypatch.setenv("CITEWELL_DATA_DIR", str(tmp_path / "data"))


def test_ingest_s3_prefix(cli, s3_env, capsys):
    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    client = s3_env.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(
        Bucket=bucket,
        Key="team/citewell.labels.yaml",
        Body=b"default: {classification: internal, groups: [everyone]}\n",
    )
    client.put_object(Bucket=bucket, Key="team/a.md", Body=b"# A\n\nAlpha text.\n")
    client.put_object(
        Bucket=bucket,
        Key="team/b.md",
        Body=b"# B\n\nBeta text.\n",
        Tagging="classification=restricted",
    )
    client.put_object(Bucket=bucket, Key="other/c.md", Body=b"# C\n\nNot under the prefix.\n")

    assert cli_main(["ingest", f"s3://{bucket}/team", "--index", "t", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["added"]) == ["a.md", "b.md"]

    assert (
        cli_main(
            ["ingest", f"s3://{bucket}/team", "--index", "t", "--object-labels", "tags", "--json"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["relabeled"] == ["b.md"]

    client.delete_object(Bucket=bucket, Key="team/a.md")
    client.delete_object(Bucket=bucket, Key="team/b.md")
    assert cli_main(["ingest", f"s3://{bucket}/team", "--index", "t"]) == 2
    assert "refusing to withdraw" in capsys.readouterr().err
    assert (
        cli_main(["ingest", f"s3://{bucket}/team", "--index", "t", "--allow-empty", "--json"]) == 0
    )
    assert sorted(json.loads(capsys.readouterr().out)["deleted"]) == ["a.md", "b.md"]


def test_ingest_s3_errors_are_reported(cli, s3_env, capsys):
    assert cli_main(["ingest", "s3://no-such-bucket-here/x", "--index", "t"]) == 2
    assert "NoSuchBucket" in capsys.readouterr().err
    for argv, message in [
        (["s3://docs-bucket/x", "--object-labels", "acl"], "invalid object label kinds"),
        (["s3://docs-bucket/x", "--object-labels", ""], "invalid object label kinds"),
        (["s3://", "--index", "t"], "not an s3://bucket/prefix URI"),
        (["s3://Bad_Bucket!/x", "--index", "t"], "not an s3://bucket/prefix URI"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["ingest", *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_object_labels_are_refused_for_a_folder(cli, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    assert cli_main(["ingest", str(tmp_path / "docs"), "--object-labels", "tags"]) == 2
    assert "--object-labels is for s3:// sources" in capsys.readouterr().err
