"""citewell_refresh_<source>: one scheduled incremental refresh DAG per configured source.

discover → plan → process (one mapped task per batch of new/changed documents) → finalize
(deletes, relabels, BM25, publish) → publish the index Asset. XCom carries run-file paths only.
Each task is a few lines over ``ingestion.refresh``; heavy imports happen inside tasks.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, get_current_context, task

from dags._common import (
    START_DATE,
    configured_sources,
    default_args,
    guarded,
    index_asset,
    load_settings,
    load_source,
)
from ingestion.sources_config import SourceConfig


@task
def discover(source_name: str) -> str:
    from ingestion.refresh import discover as discover_source

    run_id = str(get_current_context()["run_id"])
    return guarded(lambda: discover_source(load_settings(), load_source(source_name), run_id).path)


@task(multiple_outputs=True)
def plan(source_name: str, snapshot_path: str, fresh: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from ingestion.refresh import plan as plan_source

    summary = guarded(
        lambda: plan_source(
            load_settings(), load_source(source_name), Path(snapshot_path), fresh=fresh
        )
    )
    return {"plan_path": summary.path, "batch_paths": list(summary.batch_paths)}


@task(max_active_tis_per_dagrun=4)
def process(source_name: str, batch_path: str) -> int:
    from pathlib import Path

    from ingestion.refresh import process_batch

    return guarded(
        lambda: process_batch(load_settings(), load_source(source_name), Path(batch_path))
    )


# Runs when there was nothing to process too (the mapped task is then skipped): deletes and
# relabels still have to be applied.
@task(trigger_rule="none_failed")
def finalize(source_name: str, plan_path: str) -> str | None:
    from pathlib import Path

    from ingestion.refresh import finalize as finalize_source

    report = guarded(
        lambda: finalize_source(load_settings(), load_source(source_name), Path(plan_path))
    )
    return report.index_version


@task
def publish(index: str, version: str | None) -> str | None:
    """Emit the index Asset (the outlet is set per DAG) with the published version."""
    context = get_current_context()
    context["outlet_events"][index_asset(index)].extra = {"version": version}
    return version


def build_refresh_dag(source: SourceConfig) -> Any:
    @dag(
        dag_id=f"citewell_refresh_{source.name}",
        description=f"Refresh index {source.index} from source {source.name}",
        schedule=source.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # one index writer at a time
        default_args=default_args(),
        tags=["citewell", f"index:{source.index}"],
    )
    def refresh() -> None:
        # TaskFlow calls return XComArgs, resolved at run time; typed Any for mypy.
        snapshot: Any = discover(source.name)
        planned: Any = plan(source.name, snapshot)
        processed = process.partial(source_name=source.name).expand(
            batch_path=planned["batch_paths"]
        )
        version: Any = finalize(source.name, planned["plan_path"])
        processed >> version
        publish.override(outlets=[index_asset(source.index)])(source.index, version)

    return refresh()


for _source in configured_sources():
    globals()[f"citewell_refresh_{_source.name}"] = build_refresh_dag(_source)
