"""DAG tests: DagBag import, and dag.test() runs of refresh, rebuild and evaluate against real
small folders in a temporary AIRFLOW_HOME (see conftest.py)."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from tests.dags.conftest import Sandbox

pytestmark = pytest.mark.slow

HEAVY = ("torch", "sentence_transformers", "qdrant_client", "qdrant_edge", "unstructured")


def _manifest(sandbox: Sandbox, index: str) -> dict[str, Any]:
    from citewell.retrieval.index import IndexLayout
    from citewell.retrieval.manifest import Manifest

    layout = IndexLayout(sandbox.settings(), index)
    version = layout.current_version()
    assert version is not None
    manifest = Manifest(layout.version_dir(version) / "manifest.sqlite", read_only=True)
    try:
        return {doc.relative_path: doc for doc in manifest.iter_documents()}
    finally:
        manifest.close()


def _index_state(sandbox: Sandbox, index: str) -> tuple[str, dict[str, Any], int, int]:
    """(version, manifest by path, vector count, BM25 count) of the published version."""
    from citewell.retrieval.index import open_version

    opened = open_version(sandbox.settings(), index)
    try:
        docs = {doc.relative_path: doc for doc in opened.manifest.iter_documents()}
        return opened.version, docs, opened.vectors.count(), len(opened.lexical)
    finally:
        opened.close()


def _states(run: Any) -> dict[str, str]:
    return {
        f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
        for ti in run.get_task_instances()
    }


def test_dagbag_imports_expected_dags_quickly_without_models(airflow_sandbox: Sandbox) -> None:
    before = set(sys.modules)
    started = time.perf_counter()
    bag = airflow_sandbox.dagbag()
    elapsed = time.perf_counter() - started
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "citewell_refresh_kb",
        "citewell_refresh_rb",
        "citewell_refresh_rb_bad",
        "citewell_refresh_ev",
        "citewell_refresh_bi",
        "citewell_rebuild_bi",
        "citewell_rebuild_kb",
        "citewell_rebuild_rb",
        "citewell_rebuild_rb_bad",
        "citewell_rebuild_ev",
        "citewell_evaluate_ev",  # only sources with an evaluation get one
        "citewell_refresh_s3kb",
        "citewell_rebuild_s3kb",
    }
    for dag_id in bag.dag_ids:
        dag = bag.get_dag(dag_id)
        dag.check_cycle()
        assert dag.catchup is False
        assert all(task.on_failure_callback for task in dag.tasks)
    assert elapsed < 5.0, f"DagBag fill took {elapsed:.2f}s"
    assert all(stat.duration.total_seconds() < 1.0 for stat in bag.dagbag_stats), [
        (s.file, s.duration) for s in bag.dagbag_stats
    ]
    loaded = {name.split(".")[0] for name in set(sys.modules) - before}
    assert not loaded.intersection(HEAVY), loaded.intersection(HEAVY)

    refresh = bag.get_dag("citewell_refresh_kb")
    assert [t.task_id for t in refresh.topological_sort()] == [
        "check_inputs",
        "discover",
        "plan",
        "process",
        "finalize",
        "publish",
    ]
    assert [o.uri for o in refresh.get_task("publish").outlets] == ["citewell://index/kb"]
    assert refresh.get_task("publish").retries == 0  # CITEWELL_AIRFLOW_RETRIES in the sandbox
    evaluate = bag.get_dag("citewell_evaluate_ev")
    assert [asset.uri for asset in evaluate.schedule] == ["citewell://index/ev"]


def test_refresh_add_change_delete_relabel(airflow_sandbox: Sandbox) -> None:
    bag = airflow_sandbox.dagbag()
    dag = bag.get_dag("citewell_refresh_kb")
    folder = airflow_sandbox.folders["kb"]

    first = dag.test()
    assert str(first.state) == "success", _states(first)
    assert _states(first)["process[1]"] == "success"  # 3 documents in batches of 2
    version1, docs, vectors, bm25 = _index_state(airflow_sandbox, "kb")
    assert set(docs) == {"travel.md", "hr/leave.md", "security.txt"}
    assert docs["hr/leave.md"].classification == "confidential"
    assert docs["hr/leave.md"].groups == ("hr",)
    chunks = sum(len(d.chunk_ids) for d in docs.values())
    assert vectors == bm25 == chunks > 0

    # add, change, delete and relabel in one go
    (folder / "onboarding.md").write_text(
        "# Onboarding\n\nNew starters receive a laptop and badge on day one.\n", encoding="utf-8"
    )
    (folder / "travel.md").write_text(
        "# Travel policy\n\nAll flights are booked in economy class, whatever the distance.\n",
        encoding="utf-8",
    )
    (folder / "security.txt").unlink()
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: internal, groups: [everyone]}\n"
        'rules:\n  - {match: "hr/**", classification: restricted, groups: [hr, legal]}\n',
        encoding="utf-8",
    )
    second = dag.test()
    assert str(second.state) == "success", _states(second)
    version2, docs2, vectors2, bm25_2 = _index_state(airflow_sandbox, "kb")
    assert version2 > version1
    assert set(docs2) == {"travel.md", "hr/leave.md", "onboarding.md"}
    assert docs2["travel.md"].content_hash != docs["travel.md"].content_hash
    assert docs2["hr/leave.md"].classification == "restricted"
    assert docs2["hr/leave.md"].groups == ("hr", "legal")
    assert docs2["hr/leave.md"].chunk_ids == docs["hr/leave.md"].chunk_ids  # relabel only
    chunks2 = sum(len(d.chunk_ids) for d in docs2.values())
    assert vectors2 == bm25_2 == chunks2

    from citewell.retrieval.index import IndexLayout

    run_dirs = sorted((airflow_sandbox.data_dir / "runs" / "kb" / "kb").iterdir())
    plan = (run_dirs[-1] / "plan.json").read_text(encoding="utf-8")
    for expected in ('"onboarding.md"', '"travel.md"', '"security.txt"', '"hr/leave.md"'):
        assert expected in plan
    assert "sixteen weeks" not in plan  # run files hold paths and hashes, never content

    # Re-running with nothing changed publishes the same contents.
    third = dag.test()
    assert str(third.state) == "success", _states(third)
    assert _states(third)["process"] == "skipped"  # no batch to map over
    _, docs3, vectors3, _ = _index_state(airflow_sandbox, "kb")
    assert {p: d.chunk_ids for p, d in docs3.items()} == {p: d.chunk_ids for p, d in docs2.items()}
    assert vectors3 == vectors2
    assert len(IndexLayout(airflow_sandbox.settings(), "kb").versions()) >= 2


def test_rebuild_publishes_only_a_validated_version(airflow_sandbox: Sandbox) -> None:
    from citewell.retrieval.index import IndexLayout

    bag = airflow_sandbox.dagbag()
    layout = IndexLayout(airflow_sandbox.settings(), "rb")

    good = bag.get_dag("citewell_rebuild_rb").test()
    assert str(good.state) == "success", _states(good)
    serving = layout.current_version()
    assert serving is not None
    version, docs, vectors, _ = _index_state(airflow_sandbox, "rb")
    assert version == serving
    assert set(docs) == {"travel.md", "hr/leave.md", "security.txt"}
    assert vectors == sum(len(d.chunk_ids) for d in docs.values())

    again = bag.get_dag("citewell_rebuild_rb").test()
    assert str(again.state) == "success", _states(again)
    previous, serving = serving, layout.current_version()
    assert serving is not None and serving > previous
    assert previous in layout.versions()  # kept for rollback

    versions_before = layout.versions()
    sent_before = len(airflow_sandbox.webhook.received)
    bad = bag.get_dag("citewell_rebuild_rb_bad").test()
    assert str(bad.state) == "failed"
    assert _states(bad)["rebuild"] == "failed"
    assert _states(bad)["publish"] == "upstream_failed"
    assert layout.current_version() == serving  # serving index untouched
    assert layout.versions() == versions_before
    assert not list(layout.staging_dir.iterdir())
    alerts = airflow_sandbox.webhook.received[sent_before:]
    assert [a["task_id"] for a in alerts] == ["rebuild"]
    assert "smoke test" in alerts[0]["error"]


def test_evaluate_fails_below_floor_and_alerts(airflow_sandbox: Sandbox) -> None:
    from citewell.ingestion.pipeline import Ingestor

    settings = airflow_sandbox.settings()
    Ingestor(settings).ingest_folder(airflow_sandbox.folders["ev"], index="ev", source_name="ev")
    sent_before = len(airflow_sandbox.webhook.received)

    run = airflow_sandbox.dagbag().get_dag("citewell_evaluate_ev").test()
    assert str(run.state) == "failed"
    assert _states(run)["evaluate"] == "failed"  # failed at once, not up for retry
    alerts = airflow_sandbox.webhook.received[sent_before:]
    assert len(alerts) == 1
    assert alerts[0]["dag_id"] == "citewell_evaluate_ev"
    assert alerts[0]["error_type"] == "AirflowFailException"
    assert "hit_rate=0.000 < 0.500" in alerts[0]["error"]
    assert "mrr=0.000 < 0.200" in alerts[0]["error"]


def test_s3_refresh_through_the_airflow_connection(airflow_sandbox: Sandbox) -> None:
    """The S3 refresh DAG against the moto server, with credentials and endpoint only from the
    Airflow connection (the Amazon provider's hook); add, change, delete, relabel, no change."""
    import os

    from tests.dags.conftest import S3_BUCKET

    assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_ENDPOINT_URL" not in os.environ
    dag = airflow_sandbox.dagbag().get_dag("citewell_refresh_s3kb")
    first = dag.test()
    assert str(first.state) == "success", _states(first)
    _, docs, vectors, bm25 = _index_state(airflow_sandbox, "s3kb")
    assert set(docs) == {"travel.md", "hr/leave.md", "security.txt"}
    assert docs["travel.md"].source_uri == f"s3://{S3_BUCKET}/kb/travel.md"
    assert (docs["hr/leave.md"].classification, docs["hr/leave.md"].groups) == (
        "confidential",
        ("hr",),
    )
    assert vectors == bm25 == sum(len(d.chunk_ids) for d in docs.values()) > 0

    client = airflow_sandbox.s3.client()
    client.put_object(
        Bucket=S3_BUCKET,
        Key="kb/travel.md",
        Body=b"# Travel policy\n\nAll flights are booked in economy class.\n",
    )
    client.delete_object(Bucket=S3_BUCKET, Key="kb/security.txt")
    client.put_object(
        Bucket=S3_BUCKET, Key="kb/hr/leave.md.labels.yaml", Body=b"classification: restricted\n"
    )
    second = dag.test()
    assert str(second.state) == "success", _states(second)
    _, docs2, _, _ = _index_state(airflow_sandbox, "s3kb")
    assert set(docs2) == {"travel.md", "hr/leave.md"}
    assert docs2["travel.md"].content_hash != docs["travel.md"].content_hash
    assert docs2["hr/leave.md"].classification == "restricted"
    assert docs2["hr/leave.md"].chunk_ids == docs["hr/leave.md"].chunk_ids  # relabel only

    third = dag.test()
    assert str(third.state) == "success", _states(third)
    assert _states(third)["process"] == "skipped"  # the listing says nothing changed


def test_airflow_dags_test_cli_runs_the_s3_refresh(airflow_sandbox: Sandbox) -> None:
    """`airflow dags test citewell_refresh_s3kb`, the command a data engineer runs, in a fresh
    process against the moto server."""
    import os
    import subprocess
    from pathlib import Path

    from tests.dags.conftest import S3_BUCKET

    airflow_sandbox.s3.client().put_object(
        Bucket=S3_BUCKET, Key="kb/onboarding.md", Body=b"# Onboarding\n\nLaptops on day one.\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "dags", "test", "citewell_refresh_s3kb"],
        env=env,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, docs, _, _ = _index_state(airflow_sandbox, "s3kb")
    assert "onboarding.md" in docs
    secret = airflow_sandbox.s3.env()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in done.stdout and secret not in done.stderr


def test_every_dag_documents_itself(airflow_sandbox: Sandbox) -> None:
    bag = airflow_sandbox.dagbag()
    for dag_id in bag.dag_ids:
        doc = bag.get_dag(dag_id).doc_md or ""
        assert "failure" in doc.lower(), dag_id
        # Folder sources name their folder, s3 sources their s3://bucket/prefix/.
        where = "s3://" if dag_id.endswith("_s3kb") else str(airflow_sandbox.root / "sources")
        assert "### Parameters" in doc and where in doc, dag_id
        assert bag.get_dag(dag_id).topological_sort()[0].task_id == "check_inputs", dag_id


def test_bad_golden_set_fails_the_first_task(airflow_sandbox: Sandbox) -> None:
    sent_before = len(airflow_sandbox.webhook.received)
    run = airflow_sandbox.dagbag().get_dag("citewell_rebuild_bi").test()
    assert str(run.state) == "failed"
    states = _states(run)
    assert states["check_inputs"] == "failed"
    assert states["discover"] == "upstream_failed"  # no work done before the input check
    alerts = airflow_sandbox.webhook.received[sent_before:]
    assert [a["task_id"] for a in alerts] == ["check_inputs"]
    assert "broken.jsonl" in alerts[0]["error"] and "question 2" in alerts[0]["error"]


def test_structured_event_fields_reach_the_task_log(airflow_sandbox: Sandbox) -> None:
    """Airflow's task logs are structlog; Citewell's events keep their fields there."""
    import structlog

    from citewell.dags._common import guarded
    from citewell.ingestion.pipeline import Ingestor

    settings = airflow_sandbox.settings()
    with structlog.testing.capture_logs() as logs:
        guarded(
            lambda: Ingestor(settings).ingest_folder(
                airflow_sandbox.folders["bi"], index="bi-log", source_name="bi"
            )
        )
    (completed,) = [entry for entry in logs if entry["event"] == "ingest.completed"]
    assert completed["added"] == 3 and completed["index"] == "bi-log"
    assert completed["log_level"] == "info"


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ('{"dat_dir": "/srv/citewell"}', "dat_dir"),  # a typo silently used ./.citewell
        ('{"_env_prefix": "OTHER_"}', "_env_prefix"),  # would ignore every CITEWELL_* variable
        ('{"_env_file": 5}', "_env_file"),  # escaped as a TypeError, retried
        ('{"__pydantic_self__": 1}', "__pydantic_self__"),
    ],
)
def test_settings_variable_with_unknown_keys_fails_as_configuration_error(
    airflow_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, variable: str, named: str
) -> None:
    from airflow.sdk import Variable

    from citewell.core.errors import ConfigurationError
    from citewell.dags._common import SETTINGS_VARIABLE, load_settings

    def get(key: str, default: Any = None) -> Any:
        return variable if key == SETTINGS_VARIABLE else default

    monkeypatch.setattr(Variable, "get", staticmethod(get))
    with pytest.raises(ConfigurationError, match=named):
        load_settings()


def test_settings_variable_keys_are_settings_fields_in_any_case(
    airflow_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import Variable

    from citewell.dags._common import SETTINGS_VARIABLE, load_settings

    variable = '{"DATA_DIR": "/srv/citewell", "keep_versions": 4}'

    def get(key: str, default: Any = None) -> Any:
        return variable if key == SETTINGS_VARIABLE else default

    monkeypatch.setattr(Variable, "get", staticmethod(get))
    settings = load_settings()
    assert str(settings.data_dir) == "/srv/citewell" and settings.keep_versions == 4


@pytest.mark.parametrize("value", ["", "two", "-1", "1.5"])
def test_a_bad_retries_variable_is_an_import_error_naming_it(
    airflow_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """CITEWELL_AIRFLOW_RETRIES='' failed every DAG file with "invalid literal for int() with
    base 10: ''", naming no variable, and '-1' was taken as -1 retries."""
    monkeypatch.setenv("CITEWELL_AIRFLOW_RETRIES", value)
    errors = airflow_sandbox.dagbag().import_errors
    assert len(errors) == 3, errors  # refresh, rebuild, evaluate: no DAG with a wrong setting
    for message in errors.values():
        assert f"CITEWELL_AIRFLOW_RETRIES must be a whole number of 0 or more, got {value!r}" in (
            message
        ), message


def _asset_events(uri: str) -> list[dict[str, Any]]:
    """The extras of the events recorded for the Asset ``uri``, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
        ).all()
        return [dict(row.extra or {}) for row in rows]


def test_the_index_asset_updates_only_when_a_version_is_published(
    airflow_sandbox: Sandbox,
) -> None:
    """A refresh that finds nothing changed publishes no version, so it must not tell the
    evaluate DAG (and every other consumer of the Asset) that the index was updated."""
    from citewell.retrieval.index import IndexLayout

    dag = airflow_sandbox.dagbag().get_dag("citewell_refresh_ev")
    uri = "citewell://index/ev"
    layout = IndexLayout(airflow_sandbox.settings(), "ev")
    # A new document, whatever ran on this folder before: the first run publishes.
    (airflow_sandbox.folders["ev"] / "asset-note.md").write_text(
        f"# Canteen\n\nThe canteen opens at {time.time_ns()}.\n", encoding="utf-8"
    )
    before = len(_asset_events(uri))

    first = dag.test()
    assert str(first.state) == "success", _states(first)
    published = layout.current_version()
    assert _asset_events(uri)[before:] == [{"version": published}]

    again = dag.test()
    assert str(again.state) == "success", _states(again)
    assert layout.current_version() == published  # nothing changed: no new version
    assert _states(again)["publish"] == "skipped"
    assert _asset_events(uri)[before + 1 :] == []


@pytest.mark.parametrize(
    "webhook",
    [
        None,  # alert by log only
        "http://127.0.0.1:1/alert",  # nothing listens
        "http://127.0.0.1:notaport/alert",  # httpx.InvalidURL, not an httpx.HTTPError
    ],
)
def test_the_failure_alert_reaches_the_task_log_with_its_fields(
    airflow_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, webhook: str | None
) -> None:
    """The task log is the alert of last resort (no webhook, or one that cannot be reached):
    it must name the DAG, task and error, and a bad webhook must not break the hook."""
    from types import SimpleNamespace

    import structlog
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowFailException

    from citewell.core.errors import ConfigurationError
    from citewell.dags._common import ALERT_WEBHOOK_ENV, on_failure

    monkeypatch.setattr(Variable, "get", staticmethod(lambda key, default=None: default))
    if webhook is None:
        monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    else:
        monkeypatch.setenv(ALERT_WEBHOOK_ENV, webhook)
    try:
        raise AirflowFailException("ConfigurationError: folder gone") from ConfigurationError(
            "source 'kb': folder /srv/kb does not exist"
        )
    except AirflowFailException as exc:
        failure = exc
    ti = SimpleNamespace(dag_id="citewell_refresh_kb", task_id="finalize", try_number=3)
    with structlog.testing.capture_logs() as logs:
        on_failure({"ti": ti, "exception": failure, "run_id": "manual__1"})
    (alert,) = [entry for entry in logs if entry["event"] == "dags.task_failed"]
    assert (alert["dag_id"], alert["task_id"], alert["run_id"]) == (
        "citewell_refresh_kb",
        "finalize",
        "manual__1",
    )
    assert alert["error"] == "source 'kb': folder /srv/kb does not exist"
    sent = [entry for entry in logs if entry["event"] == "dags.alert_failed"]
    assert len(sent) == (0 if webhook is None else 1)
