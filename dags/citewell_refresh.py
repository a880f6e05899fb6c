"""citewell_refresh_<source>: one scheduled incremental refresh DAG per configured source.

discover → plan → process (one mapped task per batch of new/changed documents) → finalize
(deletes, relabels, BM25, publish) → publish the index Asset. XCom carries run-file paths only.
Each task is a few lines over ``ingestion.refresh``; heavy imports happen inside tasks.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from citewell.dags._common import citewell_dag, configured_sources, index_asset, run_on_plan
from citewell.dags._tasks import discover, plan, process, publish
from citewell.ingestion.sources_config import SourceConfig


# Runs when there was nothing to process too (the mapped task is then skipped): deletes and
# relabels still have to be applied.
@task(trigger_rule="none_failed")
def finalize(source_name: str, snapshot_path: str) -> str | None:
    from citewell.ingestion.refresh import finalize as finalize_source

    return run_on_plan(finalize_source, source_name, snapshot_path).index_version


def build_refresh_dag(source: SourceConfig) -> Any:
    @citewell_dag(
        "refresh",
        source,
        f"Refresh index {source.index} from source {source.name}",
        schedule=source.schedule,
    )
    def refresh() -> None:
        # TaskFlow calls return XComArgs, resolved at run time; typed Any for mypy.
        snapshot: Any = discover(source.name)
        planned: Any = plan(source.name, snapshot)
        processed = process.partial(source_name=source.name).expand(batch_path=planned)
        version: Any = finalize(source.name, snapshot)
        processed >> version  # after every batch (and so after the plan)
        publish.override(outlets=[index_asset(source.index)])(source.index, version)

    return refresh()


for _source in configured_sources():
    globals()[f"citewell_refresh_{_source.name}"] = build_refresh_dag(_source)
