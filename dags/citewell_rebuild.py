"""citewell_rebuild_<source>: manual full rebuild of a source's index into a new version.

discover → plan (everything is new) → process (mapped batches) → rebuild (build from scratch,
validate counts against the plan and a golden-set smoke test, then switch CURRENT atomically)
→ publish the index Asset. A failed validation publishes nothing: the serving version stays,
and the previous version is always kept for ``citewell index rollback``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from dags._common import (
    START_DATE,
    configured_sources,
    default_args,
    guarded,
    index_asset,
    load_settings,
    load_source,
)
from dags._tasks import discover, plan, process, publish
from ingestion.sources_config import SourceConfig


@task
def rebuild(source_name: str, snapshot_path: str) -> str | None:
    from pathlib import Path

    from ingestion.refresh import plan_file
    from ingestion.refresh import rebuild as rebuild_source

    plan_path = plan_file(Path(snapshot_path))
    report = guarded(lambda: rebuild_source(load_settings(), load_source(source_name), plan_path))
    return report.version


def build_rebuild_dag(source: SourceConfig) -> Any:
    @dag(
        dag_id=f"citewell_rebuild_{source.name}",
        description=f"Rebuild index {source.index} from source {source.name} and validate it",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["citewell", f"index:{source.index}"],
    )
    def rebuild_dag() -> None:
        # TaskFlow calls return XComArgs, resolved at run time; typed Any for mypy.
        snapshot: Any = discover(source.name)
        planned: Any = plan(source.name, snapshot, fresh=True)
        processed = process.partial(source_name=source.name).expand(batch_path=planned)
        version: Any = rebuild.override(trigger_rule="none_failed")(source.name, snapshot)
        processed >> version  # after every batch (and so after the plan)
        publish.override(outlets=[index_asset(source.index)])(source.index, version)

    return rebuild_dag()


for _source in configured_sources():
    globals()[f"citewell_rebuild_{_source.name}"] = build_rebuild_dag(_source)
