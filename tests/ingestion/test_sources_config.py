from __future__ import annotations

from pathlib import Path

import pytest

from citewell.core.errors import ConfigurationError
from citewell.ingestion.sources_config import load_sources


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_paths_resolve_against_the_config_folder_and_defaults_apply(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    _write(tmp_path / "docs" / "citewell.labels.yaml", "default: {classification: public}\n")
    file = _write(
        tmp_path / "sources.yaml",
        "sources:\n"
        "  - name: handbook\n    path: docs\n    index: hb\n"
        "    labels: docs/citewell.labels.yaml\n"
        "    evaluation: {golden: g.jsonl, floors: {hit_rate: 0.8}}\n"
        "  - {name: wiki, path: /srv/wiki, index: wiki, schedule: '*/15 * * * *'}\n",
    )
    config = load_sources(file)
    handbook = config.get("handbook")
    assert handbook.path == (tmp_path / "docs").resolve()
    assert handbook.schedule == "@daily" and handbook.batch_size == 50
    assert handbook.connector == "local"
    assert handbook.evaluation is not None
    assert handbook.evaluation.golden == (tmp_path / "g.jsonl").resolve()
    assert handbook.smoke_golden == handbook.evaluation.golden
    assert config.get("wiki").schedule == "*/15 * * * *"
    assert config.get("wiki").labels_file == Path("/srv/wiki/citewell.labels.yaml")
    with pytest.raises(ConfigurationError, match="no source named"):
        config.get("nope")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sources: [\n", "invalid YAML"),
        ("- a\n- b\n", "'sources' list"),
        ("sources:\n  - {name: a, path: x, index: i, schedule: '@sometimes'}\n", "preset"),
        ("sources:\n  - {name: a, path: x, index: i, schedule: 'every day'}\n", "cron"),
        ("sources:\n  - {name: 'bad name', path: x, index: i}\n", "sources.0.name"),
        ("sources:\n  - {name: a, path: x}\n", "sources.0.index"),
        ("sources:\n  - {name: a, path: x, index: i, connector: ftp}\n", "connector"),
        ("sources:\n  - {name: a, path: x, index: i, colour: red}\n", "colour"),
        (
            "sources:\n  - {name: a, path: x, index: i,"
            " evaluation: {golden: g, floors: {ndcg: 0.5}}}\n",
            "unknown metric",
        ),
        (
            "sources:\n  - {name: a, path: x, index: i}\n  - {name: a, path: y, index: j}\n",
            "duplicate source name",
        ),
        ("sources:\n  - {name: a, path: x, index: i, labels: elsewhere.yaml}\n", "labels must"),
        ("sources:\n  - {name: a, path: x, index: i, labels: x/citewell.labels.yaml}\n", "exist"),
        # Duplicate keys are errors, never "the last one wins".
        ("sources:\n  - {name: a, path: x, index: i, index: j}\n", r"yaml:2: duplicate key"),
        ("sources: []\nsources:\n  - {name: a, path: x, index: i}\n", r"yaml:2: duplicate"),
        ("sources:\n  - {name: a, path: x, index: i, batch_size: [5]}\n", r"yaml:2: .*batch"),
        # An empty path (a template's unset variable) was the process's working directory: the
        # DAG worker ingested whatever folder it ran in.
        ("sources:\n  - {name: a, path: '', index: i}\n", r"yaml:2: sources\.0\.path: .*empty"),
        ("sources:\n  - {name: a, path: '  ', index: i}\n", r"yaml:2: sources\.0\.path: .*empty"),
        (
            "sources:\n  - {name: a, path: x, index: i, evaluation: {golden: ''}}\n",
            r"yaml:2: sources\.0\.evaluation\.golden: .*empty",
        ),
        (
            "sources:\n  - {name: a, path: x, index: i, rebuild: {golden: ''}}\n",
            r"yaml:2: sources\.0\.rebuild\.golden: .*empty",
        ),
        (
            "sources:\n  - {name: a, path: x, index: i, labels: ''}\n",
            r"yaml:2: sources\.0\.labels: .*empty",
        ),
    ],
)
def test_bad_configs_raise_configuration_error_naming_the_file(
    tmp_path: Path, body: str, message: str
) -> None:
    file = _write(tmp_path / "sources.yaml", body)
    with pytest.raises(ConfigurationError, match=message) as info:
        load_sources(file)
    assert str(file) in str(info.value)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_sources(tmp_path / "absent.yaml")
    assert load_sources(_write(tmp_path / "empty.yaml", "")).sources == ()


def test_s3_sources(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "sources.yaml",
        "sources:\n"
        "  - name: contracts\n    type: s3\n    bucket: legal-docs\n    prefix: contracts/\n"
        "    index: legal\n    aws_conn_id: citewell_s3\n    object_labels: [tags]\n"
        "    endpoint_url: http://127.0.0.1:9000\n"
        "  - {name: raw, connector: s3, bucket: raw, index: raw, allow_empty: true}\n",
    )
    config = load_sources(file)
    contracts = config.get("contracts")
    assert contracts.connector == "s3" and contracts.path is None
    assert contracts.uri == "s3://legal-docs/contracts/"
    assert contracts.object_labels == ("tags",) and not contracts.allow_empty
    assert config.get("raw").uri == "s3://raw/" and config.get("raw").allow_empty


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: a, type: s3, index: a}", "needs 'bucket'"),
        ("{name: a, type: s3, bucket: docs, index: a, path: docs}", "'path' and 'labels'"),
        ("{name: a, index: a}", "needs 'path'"),
        ("{name: a, path: docs, index: a, bucket: docs}", "are for s3 sources"),
        ("{name: a, type: s3, bucket: docs, index: a, object_labels: [acl]}", "object_labels"),
        ("{name: a, type: s3, bucket: docs, index: a, aws_secret_access_key: x}", "unknown key"),
        ("{name: a, type: gcs, bucket: docs, index: a}", "'local' or 's3'"),
    ],
)
def test_bad_s3_sources_are_refused(tmp_path: Path, entry: str, message: str) -> None:
    file = _write(tmp_path / "sources.yaml", f"sources:\n  - {entry}\n")
    with pytest.raises(ConfigurationError, match=message):
        load_sources(file)
