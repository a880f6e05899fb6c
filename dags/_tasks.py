"""TaskFlow tasks shared by the refresh and rebuild DAGs (not a DAG file: see .airflowignore).

Each task re-reads its source from the sources config and builds Settings in the worker, and
passes only run-file paths on through XCom.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from citewell.dags._common import guarded, index_asset, load_settings, load_source, s3_access


@task
def check_inputs(source_name: str, fresh: bool = False) -> None:
    """First task: the folder, labels file, golden sets and source name, checked before any
    work, so a bad input fails the run at once (and is not retried)."""
    from citewell.evaluation.smoke_test import check_golden_sets
    from citewell.ingestion.sources_config import check_source_inputs

    def check() -> None:
        source = load_source(source_name)
        check_golden_sets(source)
        check_source_inputs(load_settings(), source, fresh=fresh)

    guarded(check)


@task
def discover(source_name: str) -> str:
    from citewell.ingestion.refresh import discover as discover_source

    run_id = str(get_current_context()["run_id"])

    def run() -> str:
        source = load_source(source_name)
        return discover_source(load_settings(), source, run_id, access=s3_access(source)).path

    return guarded(run)


@task
def plan(source_name: str, snapshot_path: str, fresh: bool = False) -> list[str]:
    """Returns the batch files to map over; the plan itself sits next to the snapshot."""
    from pathlib import Path

    from citewell.ingestion.refresh import plan as plan_source

    summary = guarded(
        lambda: plan_source(
            load_settings(), load_source(source_name), Path(snapshot_path), fresh=fresh
        )
    )
    return list(summary.batch_paths)


@task(max_active_tis_per_dagrun=4)
def process(source_name: str, batch_path: str) -> int:
    from pathlib import Path

    from citewell.ingestion.refresh import process_batch

    def run() -> int:
        source = load_source(source_name)
        return process_batch(load_settings(), source, Path(batch_path), access=s3_access(source))

    return guarded(run)


@task
def publish(index: str, version: str | None) -> str:
    """Emit the index Asset (the outlet is set per DAG) with the published version; skipped,
    so no Asset event, when the run published none (a skipped task emits no outlet event)."""
    from airflow.sdk.exceptions import AirflowSkipException

    if version is None:
        raise AirflowSkipException(f"no new version of index {index} was published")
    context = get_current_context()
    context["outlet_events"][index_asset(index)].extra = {"version": version}
    return version
